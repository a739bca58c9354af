"""Steering and capture maths on plain tensors, shared by the conditioning site and every joint-block site.

A site names where features live: `conditioning` (SD3.5's prompt embedding [L, 4096] plus pooled
[2048]) or `joint_blocks.{i}.txt|img` (the text or image stream output of MMDiT joint block i).
Token-level features align on the first tokens: a delta of L' tokens edits the first min(L, L')
tokens of a stream of L; a pooled (token-mean) feature is broadcast over every token.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch

from .errors import ShapeMismatchError, SSAEError
from .layout import POOLED, TokenLayout, detect_layout, remap_rows
from .shapes import FeatureShape, unflatten

Stream = Literal["txt", "img"]
ApplyTo = Literal["positive", "both"]
_SITE = re.compile(r"^joint_blocks\.(\d+)\.(txt|img)$")


@dataclass(frozen=True)
class Site:
    """`conditioning`, or joint block `block`'s `stream` output."""

    block: int | None = None
    stream: Stream | None = None

    @property
    def is_conditioning(self) -> bool:
        return self.block is None

    def __str__(self) -> str:
        return "conditioning" if self.is_conditioning else f"joint_blocks.{self.block}.{self.stream}"


def parse_site(site: str) -> Site:
    """'conditioning' or 'joint_blocks.7.txt' -> Site; anything else is an error listing the forms."""
    if site == "conditioning":
        return Site()
    m = _SITE.match(site)
    if not m:
        raise SSAEError(f"unknown site {site!r}: use 'conditioning' or 'joint_blocks.<i>.txt' / 'joint_blocks.<i>.img'")
    return Site(int(m.group(1)), m.group(2))  # type: ignore[arg-type]


def check_block_site(site: Site, depth: int, hidden: int, feature_width: int) -> None:
    """Refuse a block site the model does not have, or one whose width is not the model's hidden size."""
    if site.is_conditioning:
        raise SSAEError("this SSAE was trained on the conditioning: use SSAEApplyConditioning, not a block patch")
    if not 0 <= site.block < depth:
        raise ShapeMismatchError(f"site {site} does not exist: this model has joint blocks 0..{depth - 1}")
    if site.stream == "txt" and site.block == depth - 1:
        raise ShapeMismatchError(f"site {site}: the last joint block's text stream is not computed by SD3 "
                                 f"(pre_only); use joint_blocks.{depth - 1}.img or an earlier block's txt")
    if feature_width != hidden:
        raise ShapeMismatchError(f"this SSAE was trained on features {feature_width} wide, but the model's hidden size "
                                 f"is {hidden}: it belongs to another model (SD3.5 Medium is 1536, Large 2432)")


# -- deltas ---------------------------------------------------------------------------------------

def align_tokens(delta: torch.Tensor, length: int) -> torch.Tensor:
    """[L', C] -> [length, C]: truncate, or pad with zeros (extra tokens are left unchanged)."""
    if delta.shape[0] >= length:
        return delta[:length]
    return torch.cat([delta, delta.new_zeros(length - delta.shape[0], delta.shape[1])])


def stream_addend(delta: torch.Tensor, rows: torch.Tensor | None, shape: torch.Size, strength: float,
                  device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """What `add_to_stream` adds to a stream of `shape` [B, L, C]: strength * delta, token-aligned ([L', C])
    or broadcast over tokens ([C]), on the rows chosen by the bool mask `rows` (None: all), in the
    stream's device and dtype. It depends only on the batch layout, so a hook computes it once."""
    if delta.shape[-1] != shape[-1]:
        raise ShapeMismatchError(f"the edit is {delta.shape[-1]} wide but the stream is {shape[-1]} wide: "
                                 "this SSAE belongs to another model or site")
    d = delta if delta.ndim == 1 else align_tokens(delta, shape[1])
    d = (strength * d).to(device, dtype)
    if rows is None:
        return d
    return rows.to(device).view(-1, 1, 1).to(dtype) * d


def add_to_stream(x: torch.Tensor, delta: torch.Tensor, rows: torch.Tensor | None = None,
                  strength: float = 1.0) -> torch.Tensor:
    """x [B, L, C] + strength * delta on the chosen rows; delta [L', C] token-aligned or [C] broadcast."""
    return x + stream_addend(delta, rows, x.shape, strength, x.device, x.dtype)


# -- CFG rows and schedule windows --------------------------------------------------------------

def cfg_rows(cond_or_uncond: list[int] | None, batch: int, apply_to: ApplyTo) -> torch.Tensor | None:
    """Bool [batch] of rows to edit. ComfyUI batches chunks in `cond_or_uncond` order (0 = positive)."""
    if apply_to == "both" or not cond_or_uncond:
        return None
    n = len(cond_or_uncond)
    if batch % n:
        return None
    per = batch // n
    return torch.tensor([c == 0 for c in cond_or_uncond]).repeat_interleave(per)


def in_window(sigma: float, sigma_start: float, sigma_end: float) -> bool:
    """Whether a step's sigma lies in [sigma_end, sigma_start] (sigmas fall as sampling proceeds)."""
    return sigma_end <= sigma <= sigma_start


# -- conditioning -------------------------------------------------------------------------------

def split_conditioning(flat: torch.Tensor, shape: FeatureShape) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A flat conditioning-site vector of `shape` -> (token rows [L, C] in that layout, pooled [P] or None)."""
    parts = unflatten(flat, shape)
    if not isinstance(parts, dict):
        return parts.reshape(-1, parts.shape[-1]) if parts.ndim > 1 else parts[None], None
    rows = [v.reshape(-1, v.shape[-1]) for k, v in parts.items() if k != POOLED]  # clip then t5 (or 'cond')
    return torch.cat(rows), parts.get(POOLED)


def edit_conditioning(cond: torch.Tensor, pooled: torch.Tensor | None, tokens_delta: torch.Tensor,
                      source: TokenLayout | None, pooled_delta: torch.Tensor | None,
                      strength: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Add an SSAE edit to a prompt's conditioning [B, L, C] and pooled [B, P]; other values unchanged. The
    edit's rows, in layout `source`, land on the conditioning's CLIP and T5 rows (`layout.remap_rows`)."""
    if tokens_delta.shape[-1] != cond.shape[-1]:
        raise ShapeMismatchError(f"the edit is {tokens_delta.shape[-1]} wide but the conditioning is "
                                 f"{cond.shape[-1]} wide: this SSAE belongs to another text encoder")
    cond = add_to_stream(cond, remap_rows(tokens_delta, source, detect_layout(cond)), None, strength)
    if pooled is not None and pooled_delta is not None:
        if pooled.shape[-1] != pooled_delta.shape[-1]:
            raise ShapeMismatchError(f"pooled output is {pooled.shape[-1]} wide, the SSAE's {pooled_delta.shape[-1]}")
        pooled = pooled + strength * pooled_delta.to(pooled.device, pooled.dtype)
    return cond, pooled


# -- capture ------------------------------------------------------------------------------------

class CaptureBuffer:
    """Records a stream's output over the steps of a sampling run, per positive row.

    pool='mean' averages over tokens (the default for the image stream, whose length depends on the
    resolution); pool='none' keeps every token (the text stream). per_step=False averages the steps
    of the window into one sample per row; True keeps one sample per row and step."""

    def __init__(self, pool: Literal["mean", "none"] = "mean", per_step: bool = False):
        self.pool, self.per_step = pool, per_step
        self._steps: list[torch.Tensor] = []
        self._count = 0

    def __deepcopy__(self, memo: dict) -> CaptureBuffer:
        """The buffer itself: ComfyUI's `ModelPatcher.clone()` deep-copies `model_options`, hook included, and
        every clone between the capture node and the sampler (ModelSamplingSD3, a LoRA loader, a patch) must
        still fill the buffer that the capture's FEATURES output hands to SSAESaveFeatures."""
        return self

    def record(self, x: torch.Tensor, rows: torch.Tensor | None) -> None:
        """Add one step of stream output [B, L, C], its `rows` only (a bool mask, or row indices on x's
        device, which need no device sync). The running sum stays on x's device until `take`; with
        per_step each step goes to the CPU as it comes, so that the device holds none of them."""
        x = x.detach()
        if rows is not None:
            x = x[rows.to(x.device)]
        x = x.float()  # pooled in float32: a bf16 mean would round the feature to 8 bits of mantissa
        x = x.mean(1) if self.pool == "mean" else x
        if self._steps and self._steps[0].shape != x.shape:
            raise ShapeMismatchError(f"captured shapes changed within a run ({list(self._steps[0].shape)} then "
                                     f"{list(x.shape)}): capture one resolution and batch size per run")
        if self.per_step:
            self._steps.append(x.to("cpu", copy=True))
        elif self._steps:
            self._steps[0] += x
        else:  # a copy: x may be the block's own output, which later code changes in place (ControlNet adds to it)
            self._steps.append(x.clone())
        self._count += 1

    @property
    def steps(self) -> int:
        return self._count

    def take(self) -> torch.Tensor:
        """[samples, F] flattened features (step mean, or every step), and reset for the next run."""
        if not self._steps:
            raise SSAEError("nothing was captured: the capture window held no sampling step; widen start/end percent")
        out = torch.cat(self._steps) if self.per_step else self._steps[0] / self.steps
        self._steps, self._count = [], 0
        return out.flatten(1).cpu()
