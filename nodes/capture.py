"""SSAECaptureFeatures and SSAESaveFeatures: record a site during sampling, append it to a feature set."""
from __future__ import annotations

import os
from dataclasses import dataclass

from comfy_api.latest import io, ui

from ssae import Vocabulary, append_features, count_samples
from ssae.errors import SSAEError
from ssae.steer import CaptureBuffer, check_block_site, parse_site

from .common import CATEGORY, FeaturesType, block_hook_for, features_root, inside, mmdit_geometry, node_errors, \
    sigma_window


@dataclass
class Capture:
    """What travels on an SSAE_FEATURES wire: the buffer the patched model fills, and its labels."""

    buffer: CaptureBuffer
    site: str
    feature_shape: list[int]
    vocabulary: Vocabulary
    labels: list[str]
    prompt: str


def parse_labels(text: str, vocabulary: Vocabulary) -> list[str]:
    """Concept names from 'blond, blue eyes, ...' or from a prompt that contains the vocabulary's phrases."""
    try:
        return [vocabulary.resolve(t.strip()) for t in text.split(",") if t.strip()]
    except SSAEError:
        found = vocabulary.parse_prompt(text)
        if not found:
            raise SSAEError(f"no concept of the vocabulary found in {text!r}: give concept names separated "
                            f"by commas, e.g. {', '.join(vocabulary.concepts[:2])}") from None
        return found


class SSAECaptureFeatures(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SSAECaptureFeatures", display_name="SSAE Capture Features", category=CATEGORY,
            description="Return a copy of the model that records a joint block's output while it samples; "
                        "connect FEATURES to SSAE Save Features after the sampler.",
            inputs=[
                io.Model.Input("model"),
                io.String.Input("site", default="joint_blocks.7.img",
                                tooltip="joint_blocks.<i>.img (pooled over image tokens) or joint_blocks.<i>.txt"),
                io.String.Input("labels", multiline=True, default="",
                                tooltip="Concepts of this sample, comma-separated, or the prompt itself."),
                io.String.Input("vocabulary", multiline=True, default="",
                                tooltip="JSON {category: [concepts]}; empty: the paper's portrait vocabulary."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01),
                io.Combo.Input("steps", options=["mean", "each"], default="mean",
                               tooltip="mean: one sample per image, averaged over the window; each: one per step."),
                io.Combo.Input("tokens", options=["auto", "mean", "all"], default="auto",
                               tooltip="auto: mean over tokens for img, all tokens for txt."),
            ],
            outputs=[io.Model.Output(), FeaturesType.Output(display_name="FEATURES")],
        )

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        return float("nan")  # a fresh buffer every run: captures of two queued prompts never mix

    @classmethod
    def execute(cls, model, site: str, labels: str, vocabulary: str, start_percent: float, end_percent: float,
                steps: str, tokens: str) -> io.NodeOutput:
        with node_errors():
            vocab = Vocabulary.from_json(vocabulary) if vocabulary.strip() else Vocabulary.portraits()
            target = parse_site(site.strip())
            depth, hidden = mmdit_geometry(model)
            check_block_site(target, depth, hidden, hidden)
            pool = {"auto": "mean" if target.stream == "img" else "none", "mean": "mean", "all": "none"}[tokens]
            buffer = CaptureBuffer(pool, per_step=steps == "each")
            m, _ = block_hook_for(model, target, capture=buffer, apply_to="positive",
                                  sigma_window=sigma_window(model, start_percent, end_percent))
            shape = [hidden] if pool == "mean" else [-1, hidden]
            capture = Capture(buffer, str(target), shape, vocab, parse_labels(labels, vocab), labels)
        return io.NodeOutput(m, capture)


class SSAESaveFeatures(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SSAESaveFeatures", display_name="SSAE Save Features", category=CATEGORY, is_output_node=True,
            description="Append what was captured to a feature set in output/ssae_features/<name> (atomic; "
                        "queue many prompts to build one training set).",
            inputs=[
                FeaturesType.Input("features"),
                io.Latent.Input("samples", tooltip="The sampler's output: makes this node run after sampling."),
                io.String.Input("name", default="my_features", tooltip="Feature-set folder in output/ssae_features."),
                io.Combo.Input("split", options=["train", "test"], default="train"),
            ],
            outputs=[],
        )

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        return float("nan")

    @classmethod
    def execute(cls, features: Capture, samples, name: str, split: str) -> io.NodeOutput:
        with node_errors():
            x = features.buffer.take()
            shape = features.feature_shape
            if -1 in shape:
                shape = [x.shape[1] // shape[-1], shape[-1]]
            folder = inside(features_root(), name)
            append_features(folder, x, features.vocabulary, [features.labels] * x.shape[0], [split] * x.shape[0],
                            [features.prompt] * x.shape[0], features.site, shape)
            total = count_samples(folder)
        return io.NodeOutput(ui=ui.PreviewText(f"{x.shape[0]} sample(s) of {features.site} appended to "
                                               f"{os.path.basename(folder)} ({total} in all)"))
