"""SSAETrain: train an SSAE on a captured feature set inside the graph, with progress, cancel and resume."""
from __future__ import annotations

import os

import comfy.model_management
import comfy.utils
import numpy as np
import torch
from comfy_api.latest import io, ui

from ssae import load_features
from ssae.metrics import evaluate
from ssae.paths import inside
from ssae.report import loss_curve_image
from ssae.train import PRESETS, train, with_overrides

from .common import CATEGORY, SSAEType, feature_sets, features_root, node_errors


class SSAETrain(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SSAETrain", display_name="SSAE Train", category=CATEGORY, is_output_node=True,
            description="Train an SSAE on a feature set from output/ssae_features. Cancel keeps the loss history; "
                        "queueing it again resumes from the checkpoint.",
            inputs=[
                io.Combo.Input("features", options=feature_sets(),
                               tooltip="A feature set saved by SSAE Save Features."),
                io.Combo.Input("preset", options=sorted(PRESETS), default="default",
                               tooltip="default: MLP decoder over the concept code; additive: the closed form; "
                                       "paper*: the reference code's three variants."),
                io.Int.Input("epochs", default=300, min=0, max=100000,
                             tooltip="At most this many epochs (it stops earlier when validation stops improving)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=False,
                             tooltip="Seed of the initial code and the validation rows; queueing again with the same "
                                     "seed resumes."),
                io.Combo.Input("device", options=["auto", "cpu", "cuda"], default="auto",
                               tooltip="auto: the GPU when there is one."),
            ],
            outputs=[SSAEType.Output(display_name="SSAE"), io.Image.Output(display_name="loss curve")],
        )

    @classmethod
    def execute(cls, features: str, preset: str, epochs: int, seed: int, device: str) -> io.NodeOutput:
        with node_errors(), torch.inference_mode(False), torch.enable_grad():
            folder = inside(features_root(), features)
            data = load_features(folder)
            recipe = with_overrides(PRESETS[preset], epochs=epochs, seed=seed, device=device)
            bar = comfy.utils.ProgressBar(max(epochs, 1))

            def progress(epoch: int, total: int, info: dict) -> None:
                bar.update_absolute(epoch, total)
                comfy.model_management.throw_exception_if_processing_interrupted()

            ckpt = os.path.join(folder, f".checkpoint-{preset}-{seed}-{epochs}.safetensors")
            result = train(data, recipe, progress=progress, checkpoint=ckpt)
            if data.split and "test" in data.split:
                result.ssae.info["metrics"] = {"test": evaluate(result.ssae, data, "test")}
        image = torch.from_numpy(loss_curve_image(result.history).astype(np.float32) / 255.0)[None]
        text = f"trained {preset} on {len(data)} samples in {result.seconds:.1f}s, best epoch {result.best_epoch}"
        return io.NodeOutput(result.ssae, image, ui=ui.PreviewText(text))
