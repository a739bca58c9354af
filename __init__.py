"""ComfyUI entry point of ComfyUI-SSAE (V3 nodes; the `ssae` library lives beside this file)."""
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:  # `ssae` imports absolutely, also when the pack is not pip-installed;
    sys.path.append(_here)  # appended, so that our `nodes` package never shadows ComfyUI's nodes.py

WEB_DIRECTORY = "./web"
__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]

from .nodes.extension import comfy_entrypoint  # noqa: E402
