"""SSAELoader and SSAESave: SSAE files in the `ssae` model folder."""
from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io, ui

from ssae import SSAE
from ssae.paths import inside

from .common import CATEGORY, SSAEType, node_errors


class SSAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SSAELoader", display_name="Load SSAE", category=CATEGORY,
            description="Load a supervised sparse auto-encoder from models/ssae.",
            inputs=[io.Combo.Input("ssae_name", options=folder_paths.get_filename_list("ssae"),
                                   tooltip="An SSAE .safetensors file in models/ssae.")],
            outputs=[SSAEType.Output(display_name="SSAE")],
        )

    @classmethod
    def execute(cls, ssae_name: str) -> io.NodeOutput:
        with node_errors():
            path = folder_paths.get_full_path("ssae", ssae_name)
            if path is None:
                raise ValueError(f"SSAE: no file {ssae_name!r} in models/ssae")
            ssae = SSAE.load(path)
        return io.NodeOutput(ssae, ui=ui.PreviewText(ssae.describe()))


class SSAESave(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SSAESave", display_name="Save SSAE", category=CATEGORY, is_output_node=True,
            description="Write an SSAE into models/ssae so that Load SSAE lists it.",
            inputs=[SSAEType.Input("ssae", tooltip="The SSAE to write, e.g. from SSAE Train."),
                    io.String.Input("filename", default="my_ssae",
                                    tooltip="Name inside models/ssae (.safetensors added).")],
            outputs=[],
        )

    @classmethod
    def execute(cls, ssae: SSAE, filename: str) -> io.NodeOutput:
        with node_errors():
            name = filename if filename.endswith(".safetensors") else filename + ".safetensors"
            path = inside(folder_paths.get_folder_paths("ssae")[0], name)
            ssae.save(path)
        lines = [f"saved {os.path.basename(path)}"] + [
            f"{split}: explained variance {m['explained_variance']:.4f}"
            for split, m in (ssae.info.get("metrics") or {}).items()]
        return io.NodeOutput(ui=ui.PreviewText("\n".join(lines)))
