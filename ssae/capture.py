"""Captured samples on their way into a feature set: a labelled prompt, where its features were read, and them.

The conditioning is known as soon as the prompt is encoded; a joint block's output only once the patched
model has sampled, so such a sample holds the `CaptureBuffer` that the sampler fills. `collate` stacks
the samples of one queue press into the rows of one feature-set write.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import FeatureFileError
from .promptset import LabelledPrompt
from .shapes import FeatureShape, n_features_of
from .steer import CaptureBuffer
from .vocab import Vocabulary

ALL_TOKENS = -1
"""A shape's row count written as -1: every token of the text stream, however many the prompt had."""


@dataclass
class CapturedSample:
    """One labelled prompt's features at one site: `values` known at once, or a `buffer` the sampler fills."""

    sample: LabelledPrompt
    site: str
    feature_shape: FeatureShape
    buffer: CaptureBuffer | None = None
    values: torch.Tensor | None = None

    def take(self) -> torch.Tensor:
        """[rows, F] features (a block capture of every step gives a row per step)."""
        return self.values if self.buffer is None else self.buffer.take()


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
    'train' or 'test' sets them all. Samples must share their site, feature size and vocabulary."""
    if not captures:
        raise FeatureFileError("no captured samples to save")
    first = captures[0]
    rows, labels, splits, prompts = [], [], [], []
    for c in captures:
        if (c.site, c.sample.vocabulary) != (first.site, first.sample.vocabulary):
            raise FeatureFileError(f"one save mixes sites or vocabularies ({first.site} and {c.site}): save each "
                                   "site's captures to a feature set of its own")
        x = c.take()
        rows.append(x)
        labels += [list(c.sample.concepts)] * x.shape[0]
        splits += [split if split != "auto" else (c.sample.split or "train")] * x.shape[0]
        prompts += [c.sample.prompt] * x.shape[0]
    sizes = {x.shape[1] for x in rows}
    if len(sizes) > 1:
        raise FeatureFileError(f"the samples have {sorted(sizes)} features each: their prompts encode to different "
                               "numbers of tokens; keep prompts of one set under 77 tokens, or capture pooled tokens")
    x = torch.cat(rows)
    return Collated(x, first.sample.vocabulary, labels, splits, prompts, first.site,
                    _resolved(first.feature_shape, x.shape[1]))


def _resolved(shape: FeatureShape, n_features: int) -> FeatureShape:
    """A shape [-1, C] (or a first part [-1, C] of named parts) with its row count filled in from the sample's
    size."""
    if isinstance(shape, dict):
        first, *rest = shape
        others = n_features_of({k: shape[k] for k in rest})
        return {first: _resolved(shape[first], n_features - others), **{k: shape[k] for k in rest}}
    if isinstance(shape, list) and shape and shape[0] == ALL_TOKENS:
        return [n_features // shape[-1], shape[-1]]
    return shape
