"""SSAEPatchModel: the block setting, add a concept edit to a joint block's text or image stream."""
from __future__ import annotations

from comfy_api.latest import io

from ssae.hooks import BlockHook, patch_block
from ssae.shapes import channel_width
from ssae.sites import check_block_site, parse_site
from ssae.steer import stream_edit

from .common import (
    CATEGORY,
    ConceptsType,
    context_input,
    mmdit_geometry,
    node_errors,
    show_notes,
    sigma_window,
)
from .concepts import SSAEConcepts


class SSAEPatchModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SSAEPatchModel", display_name="SSAE Patch Model", category=CATEGORY,
            description="Return a copy of the model whose joint block adds the concept edit to its text or image "
                        "stream during a window of the schedule. The input model is not changed.",
            inputs=[
                io.Model.Input("model", tooltip="The SD3 / SD3.5 model to patch; it is not changed."),
                ConceptsType.Input("concepts", tooltip="What to add and remove (SSAE Concepts)."),
                io.Float.Input("strength", default=1.0, min=-20.0, max=20.0, step=0.05,
                               tooltip="Scale of the edit; 0 leaves the model's output unchanged."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Start of the schedule window where the edit applies."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="End of the schedule window where the edit applies."),
                io.Combo.Input("apply_to", options=["positive", "both"], default="positive",
                               tooltip="positive: only the conditioned CFG branch; both: also the negative."),
                io.String.Input("site", default="", tooltip="Override the SSAE's site, e.g. joint_blocks.7.img "
                                                            "(empty: the site it was trained at)."),
                context_input(),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, concepts: SSAEConcepts, strength: float, start_percent: float, end_percent: float,
                apply_to: str, site: str = "", context: str = "") -> io.NodeOutput:
        ssae = concepts.ssae
        with node_errors():
            target = parse_site(site.strip() or ssae.site)
            depth, hidden = mmdit_geometry(model)
            check_block_site(target, depth, hidden, channel_width(ssae.feature_shape))
            delta = concepts.choice.delta(ssae, context)
            edit = stream_edit(delta.features, ssae.feature_shape, strength, target.stream)
            m = patch_block(model, target.block, BlockHook(target.stream, edit, apply_to=apply_to,
                                                     sigma_window=sigma_window(model, start_percent, end_percent)))
        return io.NodeOutput(m, ui=show_notes(f"{target}: {edit.describe()}", delta.notes))

