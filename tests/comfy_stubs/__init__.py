"""Light stand-ins for the parts of ComfyUI the nodes touch, so that CI (which has no ComfyUI) runs every node.

modules/ is put first on sys.path by the `comfy_host` fixture (tests/test_nodes.py): `comfy_api.latest` (io and
ui with the Schema / Input / Output / NodeOutput / ComfyNode / Custom / Hidden surface the nodes use),
`folder_paths`, `comfy.utils.ProgressBar`, `comfy.model_management`, `comfy.patcher_extension` (wrappers),
`comfy.sample` / `comfy.samplers` (KSampler's calls, run by sampling.py's driver)
and `server.PromptServer`; optional/ holds `aiohttp.web` for environments without aiohttp. Each keeps the
signatures of ComfyUI 0.3.64 for what the nodes call, so a misspelt option fails here as it would there.
sampling.py stands in for the model side: a ModelPatcher, a tiny MMDiT whose joint blocks honour
ComfyUI's double_block replace patches, and a sampler driver that calls the model as ComfyUI does.
Written for these tests; no ComfyUI code is copied.
"""
from pathlib import Path

MODULES = Path(__file__).parent / "modules"
OPTIONAL = Path(__file__).parent / "optional"
