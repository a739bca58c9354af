"""Feature preprocessing: optional top-k selection by range, then per-dimension scaling, and its inverse.

The SSAE works in the scaled space; `inverse` brings its output back to the original feature space
and size (unselected dimensions take their training mean), so decoded features are drop-in.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from .config import check_choice, check_int, from_dict
from .errors import SSAEError

Scale = Literal["standard", "minmax", "center", "none"]


@dataclass(frozen=True)
class PreprocessConfig:
    """How raw features map to the space the SSAE is fitted in."""

    top_k: int | None = None
    """Keep only the k dimensions with the largest range (the paper keeps 1000); None keeps all."""
    scale: Scale = "standard"
    """standard: (x-mean)/std; minmax: (x-min)/(max-min) as the paper; center: x-mean; none."""

    def __post_init__(self) -> None:
        check_choice("PreprocessConfig", "scale", self.scale, ("standard", "minmax", "center", "none"))
        check_int("PreprocessConfig", "top_k", self.top_k, 1, optional=True)

    @classmethod
    def from_dict(cls, d: dict, what: str = "") -> PreprocessConfig:
        return from_dict(cls, d, what)


@dataclass
class FeatureStats:
    """Per-dimension count, mean, M2 (for variance), min and max, accumulated over row chunks."""

    n: int
    mean: torch.Tensor
    m2: torch.Tensor
    min: torch.Tensor
    max: torch.Tensor

    @classmethod
    def of(cls, x: torch.Tensor, block: int = 1 << 14) -> FeatureStats:
        """Statistics of one [n, F] chunk, by column blocks (float32 maths, float64 results), so that the
        temporaries stay small whatever F is. Column sums go through a matrix product with a row of ones:
        torch's reductions over the first dimension are several times slower."""
        parts = []
        ones = torch.ones(1, x.shape[0], device=x.device)
        for a in range(0, x.shape[1], block):
            c = x[:, a:a + block].float()
            mean = (ones @ c)[0] / x.shape[0]
            d = c - mean
            parts.append((mean, (ones @ d.mul_(d))[0], c.amin(0), c.amax(0)))
        mean, m2, lo, hi = (torch.cat(p).double().cpu() for p in zip(*parts))
        return cls(x.shape[0], mean, m2, lo, hi)

    @classmethod
    def from_chunks(cls, chunks: Iterable[torch.Tensor]) -> FeatureStats:
        """Statistics over row chunks, merged exactly (Chan et al.)."""
        stats: FeatureStats | None = None
        for x in chunks:
            part = cls.of(x)
            stats = part if stats is None else stats.merge(part)
        if stats is None:
            raise SSAEError("no rows to compute feature statistics from: the split is empty")
        return stats

    def merge(self, o: FeatureStats) -> FeatureStats:
        n = self.n + o.n
        d = o.mean - self.mean
        return FeatureStats(n, self.mean + d * o.n / n, self.m2 + o.m2 + d * d * self.n * o.n / n,
                            torch.minimum(self.min, o.min), torch.maximum(self.max, o.max))

    @property
    def std(self) -> torch.Tensor:
        return (self.m2 / max(self.n - 1, 1)).sqrt()


class Preprocessor:
    """Selection `index` (or None), affine `shift`/`scale` on the kept dims, `fill` for the dropped ones."""

    def __init__(self, n_features: int, shift: torch.Tensor, scale: torch.Tensor,
                 index: torch.Tensor | None = None, fill: torch.Tensor | None = None,
                 config: PreprocessConfig = PreprocessConfig()):
        self.n_features, self.shift, self.scale, self.index, self.fill, self.config = \
            n_features, shift, scale, index, fill, config

    @classmethod
    def fit(cls, stats: FeatureStats, config: PreprocessConfig) -> Preprocessor:
        F = stats.mean.numel()
        index = fill = None
        mean, std, lo, hi = stats.mean, stats.std, stats.min, stats.max
        if config.top_k is not None and config.top_k < F:
            index = torch.topk(hi - lo, config.top_k).indices.sort().values
            fill = mean.float()
            mean, std, lo, hi = mean[index], std[index], lo[index], hi[index]
        shift, scale = {
            "standard": (mean, std),
            "minmax": (lo, hi - lo),
            "center": (mean, torch.ones_like(mean)),
            "none": (torch.zeros_like(mean), torch.ones_like(mean)),
        }[config.scale]
        # a dimension constant in training gets scale 0: it transforms to 0 and inverts to the constant
        # exactly, whatever the decoder writes there, and no edit moves it
        constant = (hi - lo) <= 1e-12 * hi.abs().clamp(min=1)
        scale = torch.where(constant, torch.zeros_like(scale), scale)
        return cls(F, torch.where(constant, lo, shift).float(), scale.float(), index, fill, config)

    @property
    def n_kept(self) -> int:
        return self.shift.numel()

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """[n, F] raw -> [n, F_kept] scaled (float32)."""
        if self.index is not None:
            x = x[:, self.index.to(x.device)]
        return (x.float() - self.shift.to(x.device)) / self._divisor(x.device)

    def _divisor(self, device: torch.device) -> torch.Tensor:
        """The scale with constant dimensions (scale 0) divided by 1 instead."""
        return torch.where(self.scale == 0, torch.ones_like(self.scale), self.scale).to(device)

    def transform_(self, x: torch.Tensor, first: int = 0) -> torch.Tensor:
        """`transform` in place on float32 features of columns first.., for a preprocessor that keeps every
        column: at SD3.5 size the training rows are gigabytes, and a copy would double them."""
        if self.index is not None or x.dtype != torch.float32:
            raise SSAEError("transform_ needs float32 features and a preprocessor that keeps every column")
        cols = slice(first, first + x.shape[1])
        return x.sub_(self.shift[cols].to(x.device)).div_(self._divisor(x.device)[cols])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """[n, F_kept] scaled -> [n, F] raw; dropped dims get their training mean."""
        x = y * self.scale.to(y.device) + self.shift.to(y.device)
        if self.index is None:
            return x
        out = self.fill.to(y.device, y.dtype).expand(y.shape[0], -1).clone()
        out[:, self.index.to(y.device)] = x
        return out

    def inverse_delta(self, dy: torch.Tensor) -> torch.Tensor:
        """A difference in scaled space -> the same difference in raw space (zero on dropped dims)."""
        dx = dy * self.scale.to(dy.device)
        if self.index is None:
            return dx
        out = dy.new_zeros(dy.shape[0], self.n_features)
        out[:, self.index.to(dy.device)] = dx
        return out

    def without_constant(self) -> tuple[Preprocessor, torch.Tensor]:
        """The preprocessor with its kept dimensions that were constant in training (scale 0) moved to the dropped
        ones, which decode to `fill` (their constant), and the mask of the kept dimensions that remain. An SSAE
        stores nothing for a constant dimension: SD3's conditioning is zero in most channels of its CLIP rows."""
        keep = self.scale != 0
        if bool(keep.all()):
            return self, keep
        index = torch.arange(self.n_features) if self.index is None else self.index.long()
        fill = self.shift.clone() if self.index is None else self.fill.float().clone()
        fill[index[~keep]] = self.shift[~keep]
        return Preprocessor(self.n_features, self.shift[keep], self.scale[keep], index[keep], fill, self.config), keep

    def tensors(self) -> dict[str, torch.Tensor]:
        t = {"pre.shift": self.shift, "pre.scale": self.scale}
        if self.index is not None:  # int32 holds any column number of a feature up to 2^31 values
            t |= {"pre.index": self.index.to(torch.int32 if self.n_features < 2**31 else torch.int64),
                  "pre.fill": self.fill}
        return t

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], n_features: int, config: PreprocessConfig) -> Preprocessor:
        index = t.get("pre.index")
        return cls(n_features, t["pre.shift"].float(), t["pre.scale"].float(),
                   None if index is None else index.long(), None if index is None else t["pre.fill"].float(), config)

    def config_dict(self) -> dict:
        return asdict(self.config)
