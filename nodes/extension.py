"""The extension: registers the model folder, the server route and every node."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .block_map import SSAEBlockMap
from .capture import SSAECaptureConditioning, SSAECaptureFeatures
from .common import register_model_folder
from .concepts import SSAEConceptVector
from .conditioning import SSAEApplyConditioning
from .loader import SSAELoader, SSAESave
from .patch import SSAEPatchModel
from .promptset import SSAEPromptSet
from .routes import register_routes
from .save_features import SSAESaveFeatures
from .train import SSAETrain


class SSAEExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [SSAELoader, SSAESave, SSAEConceptVector, SSAEApplyConditioning, SSAEPatchModel, SSAEPromptSet,
                SSAECaptureConditioning, SSAECaptureFeatures, SSAESaveFeatures, SSAETrain, SSAEBlockMap]


async def comfy_entrypoint() -> SSAEExtension:
    register_model_folder()
    register_routes()
    return SSAEExtension()
