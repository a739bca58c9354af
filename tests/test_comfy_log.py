"""The test hosts read node-import failures out of ComfyUI's start-up log (tests/comfy_log.py)."""
from comfy_log import import_failure_message, import_failures

LOG = """Total VRAM 23000 MB
Cannot import /c/comfy_extras/nodes_upscale_model.py module for custom nodes: No module named 'spandrel'
Import times for custom nodes:
   0.0 seconds: /c/custom_nodes/websocket_image_save.py
   0.4 seconds (IMPORT FAILED): /tmp/base/custom_nodes/ComfyUI-SSAE
WARNING: some comfy_extras/ nodes did not import correctly. This may be because they are missing some dependencies.
IMPORT FAILED: nodes_upscale_model.py
Starting server
"""


def test_import_failures_name_the_module_and_the_reason():
    assert import_failures(LOG) == [
        "Cannot import /c/comfy_extras/nodes_upscale_model.py module for custom nodes: No module named 'spandrel'",
        "0.4 seconds (IMPORT FAILED): /tmp/base/custom_nodes/ComfyUI-SSAE",
        "IMPORT FAILED: nodes_upscale_model.py"]
    message = import_failure_message(LOG, "/tmp/base/comfyui.log")
    assert "/tmp/base/comfyui.log" in message and "spandrel" in message and "COMFYUI_STUBS" in message
    assert import_failure_message("Starting server\n", "log") is None
