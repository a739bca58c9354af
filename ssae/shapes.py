"""Feature shapes: a list of ints, or named parts {name: shape} concatenated in order (docs/FORMATS.md)."""
from __future__ import annotations

import operator

import torch

FeatureShape = list[int] | dict[str, list[int]]
_MAX_DIM = 1 << 62


def n_features_of(shape: FeatureShape) -> int:
    """Flat size of a feature shape: a list of ints, or named parts {name: shape} concatenated in order.
    Raises TypeError unless every dimension is an int >= 0 (floats, negatives and absurd sizes included)."""
    parts = shape.values() if isinstance(shape, dict) else [shape]
    total = 0
    for part in parts:
        if isinstance(part, (str, bytes)):
            raise TypeError(f"a shape must be a list of ints, got {part!r}")
        size = 1
        for d in part:
            if isinstance(d, bool) or not 0 <= operator.index(d) <= _MAX_DIM:
                raise TypeError(f"shape dimensions must be ints from 0 to 2**62, got {d!r}")
            size *= d
            if size > _MAX_DIM:  # stop before a shape of many huge dimensions costs big-integer arithmetic
                raise TypeError(f"shape {part} has more than 2**62 values")
        total += size
    return total


def unflatten(flat: torch.Tensor, shape: FeatureShape) -> torch.Tensor | dict[str, torch.Tensor]:
    """[..., F] -> [..., *shape], or a dict of named parts for a multi-part shape (e.g. the conditioning)."""
    lead = flat.shape[:-1]
    if not isinstance(shape, dict):
        return flat.reshape(*lead, *shape)
    out, start = {}, 0
    for name, part in shape.items():
        n = n_features_of(part)
        out[name] = flat[..., start:start + n].reshape(*lead, *part)
        start += n
    return out


def channel_width(shape: FeatureShape) -> int:
    """Channels of a token-level or pooled feature: the last dimension of its (first) part."""
    main = next(iter(shape.values())) if isinstance(shape, dict) else shape
    return int(main[-1])
