"""Capture: features of labelled prompts on their way into a feature set.

The conditioning is known as soon as the prompt is encoded; a joint block's output only once the patched
model has sampled, so such a sample holds the `CaptureBuffer` that the block's hook (`ssae.hooks`) fills
with one positive pass per sampling step. `collate` stacks the samples of one queue press into the rows of
one feature-set write.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from .errors import FeatureFileError, ShapeMismatchError, SSAEError
from .layout import TokenLayout, conditioning_shape
from .promptset import LabelledPrompt
from .shapes import FeatureShape
from .vocab import Vocabulary


class CaptureBuffer:
    """Records a stream's output over the steps of a sampling run: the positive prompt's rows, one pass per step.

    pool='mean' averages over tokens (the default for the image stream, whose length depends on the
    resolution); pool='none' keeps every token (the text stream), with the CLIP/T5 layout the hook read.
    per_step=False averages the steps of the window into one sample per row; True keeps one per row and step.

    A step is a sigma: the first positive pass at a sigma is recorded, and a later one at the same sigma with
    the same conditioning (a guidance pass such as SkipLayerGuidance's, run with some blocks skipped) is not.
    """

    def __init__(self, pool: Literal["mean", "none"] = "mean", per_step: bool = False):
        self.pool, self.per_step = pool, per_step
        self._steps: list[torch.Tensor] = []
        self._count = 0
        self._layout: TokenLayout | None = None
        self._last: tuple[float, Hashable] | None = None

    def __deepcopy__(self, memo: dict) -> CaptureBuffer:
        """The buffer itself: ComfyUI's `ModelPatcher.clone()` deep-copies `model_options`, hook included, and
        every clone between the capture node and the sampler (ModelSamplingSD3, a LoRA loader, a patch) must
        still fill the buffer that the capture's FEATURES output hands to SSAESaveFeatures."""
        return self

    def record(self, x: torch.Tensor, step: float | None = None, source: Hashable = None,
               layout: TokenLayout | None = None) -> bool:
        """Add one pass of the positive prompt's stream rows x [n, T, C] (n batch rows, T its own tokens in
        `layout`, None when unknown or not text) at sampling step `step` (a sigma; None: every call is a step)
        for conditioning `source` (ComfyUI's cond uuids). Returns whether it was recorded: a second pass at the
        same step is a guidance pass and is not, unless it is another conditioning, which is refused.
        The running sum stays on x's device until `take`; with per_step each step goes to the CPU as it comes."""
        if step is not None and self._last is not None and self._last[0] == step:
            if self._last[1] != source:
                raise SSAEError("two positive conditionings were sampled at one step (a combined or area "
                                "conditioning, or two samplers on one capture): capture one prompt per sampler run")
            return False
        x = x.detach().float()  # pooled in float32: a bf16 mean would round the feature to 8 bits of mantissa
        x = x.mean(1) if self.pool == "mean" else x
        if self._steps and (self._steps[0].shape != x.shape or self._layout != layout):
            raise ShapeMismatchError(
                f"captured shapes changed within a run ({list(self._steps[0].shape)} in {self._layout} then "
                f"{list(x.shape)} in {layout}): capture one resolution, batch size and prompt per sampler run")
        if self.per_step:
            self._steps.append(x.to("cpu", copy=True))
        elif self._steps:
            self._steps[0] += x
        else:  # a copy: x may be the block's own output, which later code changes in place (ControlNet adds to it)
            self._steps.append(x.clone())
        self._count, self._layout, self._last = self._count + 1, layout, (step, source)
        return True

    @property
    def steps(self) -> int:
        return self._count

    def take(self) -> tuple[torch.Tensor, FeatureShape]:
        """([samples, F] flattened features (step mean, or every step), their feature shape), and reset for the
        next run. The shape is [C] pooled, the layout's named parts `{"clip": [n, C], "t5": [m, C]}` for text
        rows whose layout was read, [T, C] otherwise."""
        if not self._steps:
            raise SSAEError("nothing was captured: the capture window held no sampling step; widen start/end percent")
        out = torch.cat(self._steps) if self.per_step else self._steps[0] / self.steps
        width = out.shape[-1]
        if self.pool == "mean":
            shape: FeatureShape = [width]
        elif self._layout is not None:
            shape = conditioning_shape(self._layout, width, None)
        else:
            shape = [out.shape[1], width]
        self._steps, self._count, self._layout, self._last = [], 0, None, None
        return out.flatten(1).cpu(), shape


@dataclass
class CapturedSample:
    """One labelled prompt's features at one site: `values` in `feature_shape` known at once, or a `buffer` that
    the sampler fills (and that knows their shape)."""

    sample: LabelledPrompt
    site: str
    feature_shape: FeatureShape | None = None
    buffer: CaptureBuffer | None = None
    values: torch.Tensor | None = None

    def take(self) -> tuple[torch.Tensor, FeatureShape]:
        """([rows, F] features (a block capture of every step gives a row per step), their feature shape)."""
        return (self.values, self.feature_shape) if self.buffer is None else self.buffer.take()


@dataclass
class Collated:
    """Everything `ssae.append_features` writes for a batch of samples."""

    features: torch.Tensor
    vocabulary: Vocabulary
    labels: list[list[str]]
    split: list[str]
    prompts: list[str]
    site: str
    feature_shape: FeatureShape


def collate(captures: Sequence[CapturedSample], split: str = "auto") -> Collated:
    """Stack samples into one write. `split` 'auto' keeps each sample's own split ('train' where it has none);
    'train' or 'test' sets them all. Samples must share their site, feature shape and vocabulary."""
    if not captures:
        raise FeatureFileError("no captured samples to save")
    first = captures[0]
    rows, shapes, labels, splits, prompts = [], [], [], [], []
    for c in captures:
        if (c.site, c.sample.vocabulary) != (first.site, first.sample.vocabulary):
            raise FeatureFileError(f"one save mixes sites or vocabularies ({first.site} and {c.site}): save each "
                                   "site's captures to a feature set of its own")
        x, shape = c.take()
        rows.append(x)
        shapes.append(shape)
        labels += [list(c.sample.concepts)] * x.shape[0]
        splits += [split if split != "auto" else (c.sample.split or "train")] * x.shape[0]
        prompts += [c.sample.prompt] * x.shape[0]
    differ = next((s for s in shapes if s != shapes[0]), None)
    if differ is not None:
        raise FeatureFileError(f"the samples have features of shapes {shapes[0]} and {differ}: their prompts encode "
                               "to different numbers of tokens; keep the prompts of one set under 75 tokens (one CLIP "
                               "chunk) and encode them alike, or capture pooled tokens")
    return Collated(torch.cat(rows), first.sample.vocabulary, labels, splits, prompts, first.site, shapes[0])
