"""SSAELoader and SSAESave: SSAE files in the `ssae` model folder."""
from __future__ import annotations

import json
import os

import folder_paths
from comfy_api.latest import io, ui

from ssae import SSAE
from ssae.paths import inside

from .common import CATEGORY, SSAEType, node_errors


def describe(ssae: SSAE) -> str:
    """What a user should see about a loaded SSAE: site, shape, vocabulary, held-out metrics."""
    lines = [f"site: {ssae.site}   feature: {ssae.feature_shape}",
             f"decoder: {ssae.model.cfg.decoder}, {ssae.vocabulary.n_concepts} concepts"]
    lines += [f"{cat}: {', '.join(cs)}" for cat, cs in ssae.vocabulary.categories.items()]
    for split, m in (ssae.info.get("metrics") or {}).items():
        lines.append(f"{split}: explained variance {m['explained_variance']:.3f}, cosine {m['cosine']:.3f}")
    return "\n".join(lines)


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
        return io.NodeOutput(ssae, ui=ui.PreviewText(describe(ssae)))


class SSAESave(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SSAESave", display_name="Save SSAE", category=CATEGORY, is_output_node=True,
            description="Write an SSAE into models/ssae so that Load SSAE lists it.",
            inputs=[SSAEType.Input("ssae"),
                    io.String.Input("filename", default="my_ssae", tooltip="Name inside models/ssae (.safetensors added).")],
            outputs=[],
        )

    @classmethod
    def execute(cls, ssae: SSAE, filename: str) -> io.NodeOutput:
        with node_errors():
            name = filename if filename.endswith(".safetensors") else filename + ".safetensors"
            path = inside(folder_paths.get_folder_paths("ssae")[0], name)
            ssae.save(path)
        return io.NodeOutput(ui=ui.PreviewText(f"saved {os.path.basename(path)}\n{json.dumps(ssae.info.get('metrics'))}"))
