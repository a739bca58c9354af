"""Capture nodes: a prompt's conditioning, or a joint block's output while the model samples, as SSAE_FEATURES."""
from __future__ import annotations

from comfy_api.latest import io

from ssae import Vocabulary
from ssae.block_edit import BlockEdit, StreamAndVec, check_site, parse_block_site
from ssae.capture import CaptureBuffer, CapturedSample
from ssae.errors import SSAEError
from ssae.hooks import patch_block
from ssae.layout import POOLED, conditioning_features
from ssae.promptset import LabelledPrompt

from .common import CATEGORY, FeaturesType, SampleType, mmdit_geometry, node_errors, sigma_window


class SSAECaptureConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SSAECaptureConditioning", display_name="SSAE Capture Conditioning", category=CATEGORY,
            description="A prompt's conditioning (the paper's site: every token row and the pooled vector, with how "
                        "many rows are CLIP and how many T5) with the prompt's labels, for SSAE Save Features. "
                        "Needs no sampler.",
            inputs=[
                io.Conditioning.Input("conditioning", tooltip="The prompt's conditioning, from CLIP Text Encode."),
                SampleType.Input("sample", tooltip="The prompt's labels and split, from SSAE Prompt Set."),
            ],
            outputs=[FeaturesType.Output(display_name="FEATURES")],
        )

    @classmethod
    def execute(cls, conditioning, sample: LabelledPrompt) -> io.NodeOutput:
        with node_errors():
            if len(conditioning) != 1:
                raise SSAEError(f"capture one prompt's conditioning; this one holds {len(conditioning)} (combined?)")
            cond, extra = conditioning[0]
            x, shape = conditioning_features(cond, extra.get(POOLED))
        return io.NodeOutput(CapturedSample(sample, "conditioning", shape, values=x))


class SSAECaptureFeatures(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SSAECaptureFeatures", display_name="SSAE Capture Features", category=CATEGORY,
            description="Return a copy of the model that records a joint block's output while it samples (the "
                        "positive prompt's rows, one pass per step, its CLIP and T5 rows told apart on the text "
                        "stream); connect FEATURES to SSAE Save Features after the sampler.",
            inputs=[
                io.Model.Input("model", tooltip="The SD3 / SD3.5 model to record; it is not changed."),
                io.String.Input("site", default="joint_blocks.7.img",
                                tooltip="joint_blocks.<i>.img (pooled over image tokens) or joint_blocks.<i>.txt "
                                        "(with the blocks' modulation vector): block i's output; .img_in / "
                                        ".txt_in: its input (block 0's text input is the context embedder's "
                                        "output, a linear map of the conditioning)"),
                io.String.Input("labels", multiline=True, default="",
                                tooltip="Concepts of this sample, comma-separated, or the prompt itself. "
                                        "Not used when SAMPLE is connected."),
                io.String.Input("vocabulary", multiline=True, default="",
                                tooltip="JSON {category: [concepts]}; empty: the paper's portrait vocabulary. "
                                        "Not used when SAMPLE is connected."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Start of the schedule window whose steps are recorded."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="End of the schedule window whose steps are recorded."),
                io.Combo.Input("steps", options=["mean", "each"], default="mean",
                               tooltip="mean: one sample per image, averaged over the window; each: one per step."),
                io.Combo.Input("tokens", options=["auto", "mean", "all"], default="auto",
                               tooltip="auto: mean over tokens for img, all tokens for txt."),
                SampleType.Input("sample", optional=True,
                                 tooltip="The prompt's labels and split from SSAE Prompt Set, in place of typed ones."),
            ],
            outputs=[io.Model.Output(), FeaturesType.Output(display_name="FEATURES")],
        )

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        return float("nan")  # a fresh buffer every run: captures of two queued prompts never mix

    @classmethod
    def execute(cls, model, site: str, labels: str, vocabulary: str, start_percent: float, end_percent: float,
                steps: str, tokens: str, sample: LabelledPrompt | None = None) -> io.NodeOutput:
        with node_errors():
            if sample is None:
                vocab = Vocabulary.parse(vocabulary)
                sample = LabelledPrompt(vocab, labels, tuple(vocab.parse_labels(labels)), None)
            target = parse_block_site(site)
            depth, hidden = mmdit_geometry(model)
            check_site(target, depth, hidden, hidden)
            pool = {"auto": "mean" if target.stream == "img" else "none", "mean": "mean", "all": "none"}[tokens]
            # a text stream with the modulation vector: the pooled prompt reaches the blocks through it
            buffer = (StreamAndVec if target.stream == "txt" else CaptureBuffer)(pool, per_step=steps == "each")
            m = patch_block(model, target.block, BlockEdit(target.stream, position=target.position, capture=buffer,
                                                     sigma_window=sigma_window(model, start_percent, end_percent)))
        return io.NodeOutput(m, CapturedSample(sample, str(target), buffer=buffer))
