"""SSAEApplyConditioning: the paper's setting, edit or compose SD3.5's prompt conditioning."""
from __future__ import annotations

from comfy_api.latest import io

from ssae.errors import SSAEError
from ssae.layout import layout_of_shape
from ssae.steer import edit_conditioning, split_conditioning

from .common import CATEGORY, ConceptsType, context_input, node_errors, show_notes
from .concepts import SSAEConcepts


class SSAEApplyConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SSAEApplyConditioning", display_name="SSAE Apply to Conditioning", category=CATEGORY,
            description="Edit a prompt's conditioning by swapping concepts, or compose a conditioning from "
                        "concepts alone (an unseen mix no prompt names). SSAE trained at the 'conditioning' site.",
            inputs=[
                ConceptsType.Input("concepts", tooltip="What to add and remove, or mix (SSAE Concepts)."),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.05,
                               tooltip="Scale of the edit (edit mode); 0 leaves the conditioning unchanged."),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="The prompt's conditioning (edit mode). Compose mode needs none."),
                context_input(),
            ],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    def execute(cls, concepts: SSAEConcepts, strength: float, conditioning=None,
                context: str = "") -> io.NodeOutput:
        ssae, choice = concepts.ssae, concepts.choice
        with node_errors():
            if ssae.site != "conditioning":
                raise SSAEError(f"this SSAE was trained at {ssae.site}, not the conditioning: "
                                "use SSAE Patch Model for block sites")
            if choice.mode == "compose":
                tokens, pooled = split_conditioning(choice.features(ssae), ssae.feature_shape)
                batch = conditioning[0][0].shape[0] if conditioning else 1
                extra = {"pooled_output": pooled[None].expand(batch, -1).clone()} if pooled is not None else {}
                return io.NodeOutput([[tokens[None].expand(batch, -1, -1).clone(), extra]])
            if conditioning is None:
                raise SSAEError("edit mode needs the prompt's conditioning: connect it, or switch the concepts "
                                "to compose")
            delta = choice.delta(ssae, context)
            tokens_d, pooled_d = split_conditioning(delta.features, ssae.feature_shape)
            layout = layout_of_shape(ssae.feature_shape)
            out, notes = [], list(delta.notes)
            for cond, extra in conditioning:
                c, p, left = edit_conditioning(cond, extra.get("pooled_output"), tokens_d, layout, pooled_d, strength)
                notes += [n for n in left if n not in notes]
                extra = dict(extra)
                if p is not None:
                    extra["pooled_output"] = p
                out.append([c, extra])
        return io.NodeOutput(out, ui=show_notes(f"edited {len(out)} conditioning(s), strength {strength:g}", notes))
