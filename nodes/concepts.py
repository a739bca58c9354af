"""SSAEConceptVector: an SSAE plus a concept choice (a plain JSON widget value) -> SSAE_CONCEPTS."""
from __future__ import annotations

from dataclasses import dataclass

from comfy_api.latest import io, ui

from ssae import SSAE
from ssae.concepts import ConceptChoice

from .common import CATEGORY, ConceptsType, SSAEType, node_errors


@dataclass(frozen=True)
class SSAEConcepts:
    """What travels on an SSAE_CONCEPTS wire."""

    ssae: SSAE
    choice: ConceptChoice


class SSAEConceptVector(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SSAEConceptVector", display_name="SSAE Concepts", category=CATEGORY,
            description="Choose concepts to add and remove (edit) or to mix (compose), with weights.",
            inputs=[
                SSAEType.Input("ssae", tooltip="The SSAE whose concepts to choose from (Load SSAE)."),
                io.Combo.Input("mode", options=["edit", "compose"], default="edit",
                               tooltip="edit: swap concepts of the prompt; compose: decode a mix from concepts alone."),
                io.String.Input("concepts", multiline=True, default='{"add": {}, "remove": {}}',
                                tooltip='JSON {"add": {"blond": 1}, "remove": {"brunette": 1}} or text '
                                        '"blond, -brunette, hat:0.5". The concept widget writes it for you.'),
            ],
            outputs=[ConceptsType.Output(display_name="CONCEPTS")],
        )

    @classmethod
    def execute(cls, ssae: SSAE, mode: str, concepts: str) -> io.NodeOutput:
        with node_errors():
            choice = ConceptChoice.parse(concepts, mode).resolved(ssae.vocabulary)
        summary = ", ".join([f"+{k} ×{v:g}" for k, v in choice.add.items()] +
                            [f"-{k} ×{v:g}" for k, v in choice.remove.items()]) or "(no concepts)"
        return io.NodeOutput(SSAEConcepts(ssae, choice), ui=ui.PreviewText(f"{choice.mode}: {summary}"))
