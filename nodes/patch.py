"""SSAEPatchModel: the block setting, add a concept edit to a joint block's text or image stream."""
from __future__ import annotations

from comfy_api.latest import io

from ssae.block_edit import BlockEdit, block_edit_parts, check_site, edit_blocks, parse_block_site
from ssae.errors import SSAEError
from ssae.hooks import patch_block
from ssae.shapes import channel_width

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

MODES = {"attention keys/values": "kv", "residual stream": "residual"}
BLOCKS = {"this site": False, "this site and every later block": True}
SCALES = {"fixed": "fixed", "matched to the stream": "matched"}


class SSAEPatchModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SSAEPatchModel", display_name="SSAE Patch Model", category=CATEGORY,
            description="Return a copy of the model whose joint blocks make the concept edit at the SSAE's site "
                        "(a block's text or image stream) during a window of the schedule. The input model is not "
                        "changed.",
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
                io.String.Input("site", default="", tooltip="Override the SSAE's site: joint_blocks.<i>.txt / .img "
                                                            "(block i's output) or .txt_in / .img_in (its input); "
                                                            "empty: the site it was trained at."),
                context_input(),
                io.Combo.Input("mode", options=list(MODES), default="attention keys/values", optional=True,
                               tooltip="attention keys/values: the edit reaches only the text keys and values of "
                                       "the joint attention that reads the site's text stream (the image reads the "
                                       "edited text; the text stream itself is not changed); residual stream: the "
                                       "edit is added to the stream (the only mode for image sites). Either way "
                                       "an SSAE captured with the modulation vector also edits that vector in "
                                       "every block from the site on."),
                io.Combo.Input("blocks", options=list(BLOCKS), default="this site and every later block",
                               optional=True,
                               tooltip="With attention keys/values: edit the attention that reads the site only, or "
                                       "that one and every later block's, the same edit carried to each."),
                io.Combo.Input("scale", options=list(SCALES), default="fixed", optional=True,
                               tooltip="fixed: the edit times strength; matched to the stream: rescaled each step by "
                                       "how the stream's norm compares with its features' (needs the context)."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, concepts: SSAEConcepts, strength: float, start_percent: float, end_percent: float,
                apply_to: str, site: str = "", context: str = "", mode: str = "attention keys/values",
                blocks: str = "this site and every later block", scale: str = "fixed") -> io.NodeOutput:
        with node_errors():
            m, text, notes = patched_model(model, concepts, strength, start_percent, end_percent, apply_to, site,
                                           context, mode, blocks, scale)
        return io.NodeOutput(m, ui=show_notes(text, notes))


def patched_model(model, concepts: SSAEConcepts, strength: float, start_percent: float = 0.0,
                  end_percent: float = 1.0, apply_to: str = "positive", site: str = "", context: str = "",
                  mode: str = "attention keys/values", blocks: str = "this site and every later block",
                  scale: str = "fixed"):
    """(a patched copy of `model`, what it does, what the context left out): SSAE Patch Model's work, with its
    options by their names in the node (SSAE Block Map patches through it too)."""
    ssae = concepts.ssae
    name = site.strip() or ssae.site
    if name == "conditioning":
        raise SSAEError("this SSAE was trained on the conditioning: use SSAE Apply to Conditioning, not a "
                        "block patch")
    target = parse_block_site(name)
    depth, hidden = mmdit_geometry(model)
    check_site(target, depth, hidden, channel_width(ssae.feature_shape))
    kind = MODES[mode] if target.stream == "txt" else "residual"
    places = edit_blocks(target, depth, kind, BLOCKS[blocks] and kind == "kv")
    delta = concepts.choice.delta(ssae, context)
    reference = None
    if SCALES[scale] == "matched":
        if not context.strip():
            raise SSAEError("an edit matched to the stream's norm needs the context (the prompt being "
                            "edited) to know its features' norm: fill in context, or choose scale fixed")
        reference = ssae.reconstruct([ssae.vocabulary.parse_labels(context)])[0]
    edit, vec = block_edit_parts(delta.features, ssae.feature_shape, strength, target.stream, reference)
    window = sigma_window(model, start_percent, end_percent)
    m = model
    for block, position, with_stream in places:
        if with_stream or vec is not None:
            m = patch_block(m, block, BlockEdit(target.stream, edit if with_stream else None, position, kind,
                                                vec, strength, sigma_window=window, apply_to=apply_to))
    how = {v: k for k, v in MODES.items()}[kind]
    text = f"{target}, {how}, {blocks if kind == 'kv' else 'one block'}: {edit.describe()}"
    if vec is not None:
        text += f"; modulation vector edited in blocks {places[0][0]}..{depth - 1}"
    return m, text, delta.notes
