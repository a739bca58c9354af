"""SSAESaveFeatures: write what capture nodes recorded, one queue press at a time, into a feature set."""
from __future__ import annotations

import os

from comfy_api.latest import io, ui

from ssae import append_features, count_samples
from ssae.capture import CapturedSample, collate
from ssae.errors import SSAEError
from ssae.paths import inside
from ssae.store import new_samples, replace_features

from .common import CATEGORY, FeaturesType, features_root, node_errors


class SSAESaveFeatures(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SSAESaveFeatures", display_name="SSAE Save Features", category=CATEGORY, is_output_node=True,
            is_input_list=True,
            description="Write the captured samples of a queue press (a whole prompt set at once) to the feature set "
                        "output/ssae_features/<name>, atomically.",
            inputs=[
                FeaturesType.Input("features", tooltip="From SSAE Capture Conditioning or SSAE Capture Features."),
                io.Latent.Input("samples", optional=True,
                                tooltip="Block captures: the sampler's output, so that this node runs after sampling. "
                                        "Not needed for the conditioning."),
                io.String.Input("name", default="my_features", tooltip="Feature-set folder in output/ssae_features."),
                io.Combo.Input("split", options=["auto", "train", "test"], default="auto",
                               tooltip="auto: each sample's split from SSAE Prompt Set (train for typed labels); "
                                       "train or test: all of them."),
                io.Combo.Input("if_exists", options=["append", "replace"], default="append", optional=True,
                               tooltip="append: add the samples the set does not hold yet (a prompt saved again "
                                       "with the same features, as a second queue press gives, is skipped; at "
                                       "another sampling seed it is new); replace: the set holds just these."),
            ],
            outputs=[],
        )

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        return float("nan")

    @classmethod
    def execute(cls, features: list[CapturedSample], name: list[str], split: list[str],
                if_exists: list[str] = ("append",), samples: list | None = None) -> io.NodeOutput:
        with node_errors():
            if samples is None and any(c.buffer is not None and c.buffer.steps == 0 for c in features):
                raise SSAEError("nothing was captured yet: connect the sampler's LATENT to this node's 'samples' "
                                "input so that it runs after sampling")
            batch = collate(features, split[0])
            folder = inside(features_root(), name[0])
            replace = if_exists[0] == "replace"
            keep = list(range(len(batch.labels))) if replace else new_samples(folder, batch.features, batch.prompts)
            if keep:
                write = replace_features if replace else append_features
                write(folder, batch.features[keep], batch.vocabulary, [batch.labels[i] for i in keep],
                      [batch.split[i] for i in keep], [batch.prompts[i] for i in keep], batch.site,
                      batch.feature_shape)
            total = count_samples(folder)
        n_test = sum(batch.split[i] == "test" for i in keep)
        text = f"{len(keep)} sample(s) of {batch.site} ({n_test} test) written to {os.path.basename(folder)} " \
               f"({total} in all)"
        if len(keep) < len(batch.labels):
            text += (f"; {len(batch.labels) - len(keep)} skipped: the set already holds them (same prompt and "
                     "features); use if_exists: replace to rewrite the set")
        return io.NodeOutput(ui=ui.PreviewText(text))
