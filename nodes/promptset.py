"""SSAEPromptSet: the training prompts of a vocabulary, as lists that run every downstream node once per prompt."""
from __future__ import annotations

from comfy_api.latest import io, ui

from ssae import Vocabulary
from ssae.promptset import parse_pairs, prompt_set

from .common import CATEGORY, SampleType, node_errors


class SSAEPromptSet(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SSAEPromptSet", display_name="SSAE Prompt Set", category=CATEGORY,
            description="Sample prompts from a concept vocabulary, each labelled with its concepts and split so that "
                        "held-out concept pairs appear only in 'test'. Its outputs are lists: connect PROMPT to a text "
                        "encoder and SAMPLE to an SSAE capture node, and one queue press captures the whole set.",
            inputs=[
                io.String.Input("vocabulary", multiline=True, default="",
                                tooltip="JSON {category: [concept phrases]}; empty: the paper's portrait vocabulary "
                                        "(7 categories, 28 concepts). A prompt joins one phrase per category."),
                io.Int.Input("prompts", default=200, min=1, max=100000,
                             tooltip="How many distinct concept combinations to sample (all of them if fewer exist)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=False,
                             tooltip="Seed of the sampled combinations and of the drawn held-out pairs."),
                io.Int.Input("heldout_pairs", default=4, min=0, max=100,
                             tooltip="Concept pairs, drawn with the seed, that never meet in 'train': the unseen "
                                     "mixes that composition is measured on."),
                io.String.Input("heldout", default="",
                                tooltip="Held-out pairs to use instead of drawing them, e.g. "
                                        "'blond + horseback; hat + coffee' (any unique fragment of a concept)."),
            ],
            outputs=[io.String.Output(display_name="PROMPT", is_output_list=True),
                     SampleType.Output(display_name="SAMPLE", is_output_list=True)],
        )

    @classmethod
    def execute(cls, vocabulary: str, prompts: int, seed: int, heldout_pairs: int, heldout: str) -> io.NodeOutput:
        with node_errors():
            vocab = Vocabulary.parse(vocabulary)
            pairs = parse_pairs(heldout, vocab) if heldout.strip() else heldout_pairs
            samples, held = prompt_set(vocab, prompts, seed, pairs)
        n_test = sum(s.split == "test" for s in samples)
        text = (f"{len(samples)} prompts: {len(samples) - n_test} train, {n_test} test\nheld out: " +
                ("; ".join(" + ".join(p) for p in held) or "none"))
        return io.NodeOutput([s.prompt for s in samples], samples, ui=ui.PreviewText(text))
