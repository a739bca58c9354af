"""SSAETrain: train an SSAE on a captured feature set inside the graph, with progress, cancel and resume."""
from __future__ import annotations

import os
import re

import comfy.model_management
import comfy.utils
import numpy as np
import torch
from comfy_api.latest import io, ui

from ssae import load_features
from ssae.metrics import evaluate
from ssae.paths import inside
from ssae.progress import describe, validation_ev
from ssae.report import loss_curve_image
from ssae.train import PRESETS, run_fingerprint, train, with_overrides

from .common import CATEGORY, SSAEType, feature_sets, features_root, node_errors


def _show(text: str, node_id: str | None) -> None:
    """The status line on the node while it runs (ComfyUI's progress text)."""
    try:
        from server import PromptServer
        if node_id is not None and PromptServer.instance is not None:
            PromptServer.instance.send_progress_text(text, node_id)
    except (ImportError, AttributeError):
        pass


class SSAETrain(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SSAETrain", display_name="SSAE Train", category=CATEGORY, is_output_node=True,
            description="Train an SSAE on a feature set from output/ssae_features. Shows the validation explained "
                        "variance while it trains and stops by itself when it stops improving. Cancel keeps the "
                        "loss history; queueing it again resumes from the checkpoint.",
            inputs=[
                io.Combo.Input("features", options=feature_sets(),
                               tooltip="A feature set saved by SSAE Save Features."),
                io.Combo.Input("preset", options=sorted(PRESETS), default="default",
                               tooltip="default: an ensemble of small MLP decoders, seconds on a CPU; additive: the "
                                       "closed-form linear decoder; paper*: the reference code's loops; "
                                       "mean-difference: no SSAE, per-concept mean-difference steering vectors "
                                       "(a baseline)."),
                io.Int.Input("epochs", default=0, min=0, max=100000,
                             tooltip="Most epochs per member; 0: the preset's own. Training stops earlier once the "
                                     "validation loss stops improving."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=False,
                             tooltip="Seed of the initial code and the validation rows; queueing again with the same "
                                     "seed resumes."),
                io.Combo.Input("device", options=["auto", "cpu", "cuda"], default="auto",
                               tooltip="auto: the GPU when there is one."),
            ],
            outputs=[SSAEType.Output(display_name="SSAE"), io.Image.Output(display_name="loss curve")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, features: str, preset: str, epochs: int, seed: int, device: str) -> io.NodeOutput:
        node_id = cls.hidden.unique_id if cls.hidden is not None else None
        with node_errors(), torch.inference_mode(False), torch.enable_grad():
            folder = inside(features_root(), features)
            data = load_features(folder)
            recipe = with_overrides(PRESETS[preset], epochs=epochs or None, seed=seed, device=device)
            bar = comfy.utils.ProgressBar(max(recipe.train.epochs * recipe.train.members, 1), node_id=node_id)

            def progress(epoch: int, total: int, info: dict) -> None:
                bar.update_absolute(epoch, total)
                _show(describe(epoch, total, info), node_id)
                comfy.model_management.throw_exception_if_processing_interrupted()

            # named by the run's fingerprint: a feature set captured into again starts a fresh run (the old
            # run's checkpoint stays beside it), an unchanged one resumes after Cancel
            ckpt = os.path.join(folder, f".checkpoint-{preset}-{run_fingerprint(data, recipe)}.safetensors")
            same_preset = re.compile(rf"\.checkpoint-{re.escape(preset)}-[0-9a-f]{{16}}\.safetensors")
            earlier = not os.path.exists(ckpt) and any(same_preset.fullmatch(f) for f in os.listdir(folder))
            result = train(data, recipe, progress=progress, checkpoint=ckpt)
            bar.update_absolute(bar.total)
            if data.split and "test" in data.split:
                result.ssae.info["metrics"] = {"test": evaluate(result.ssae, data, "test")}
        image = torch.from_numpy(loss_curve_image(result.history).astype(np.float32) / 255.0)[None]
        text = f"trained {preset} on {len(data)} samples in {result.seconds:.1f}s, {len(result.history)} epochs"
        if result.resumed_epochs:
            text += f" (resumed after epoch {result.resumed_epochs})"
        elif earlier:
            text += " (a new run: the set or the settings changed since the last one)"
        if result.history and validation_ev(result.history[-1]) is not None:
            text += f", validation EV {validation_ev(result.history[-1]):.4f}"
        if "metrics" in result.ssae.info:
            text += f", held-out EV {result.ssae.info['metrics']['test']['explained_variance']:.4f}"
        _show(text, node_id)
        return io.NodeOutput(result.ssae, image, ui=ui.PreviewText(text))
