"""What a ComfyUI host's log says went wrong at start-up, for the test hosts (tests/host, tests/browser) to report
before any test runs: a node module that failed to import makes later failures far from their cause (front end
1.27 builds the checkpoint, LoRA and VAE loaders of a loaded workflow as placeholders when a core node is missing)."""
from __future__ import annotations

import re

_FAILED = re.compile(r"IMPORT FAILED|Cannot import .* module for custom nodes")


def import_failures(log: str) -> list[str]:
    """The log's lines that name a node module that failed to import, and why, in order."""
    return [line.strip() for line in log.splitlines() if _FAILED.search(line)]


def import_failure_message(log: str, path: str) -> str | None:
    """An error message listing the import failures in the log at `path`, with the fix; None when there are none."""
    failures = import_failures(log)
    if not failures:
        return None
    return ("ComfyUI could not import some node modules (its log: " + path + "):\n  " + "\n  ".join(failures) +
            "\nInstall what they need in ComfyUI's environment, or give import-only stand-ins through COMFYUI_STUBS "
            "(shared/comfy-host/stubs has torchvision, torchaudio and spandrel).")
