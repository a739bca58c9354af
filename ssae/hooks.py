"""Joint-block hooks in ComfyUI's replace-patch protocol, with no ComfyUI import.

ComfyUI's MMDiT calls `patch(args, extra)` in place of joint block i, with args["img"], args["txt"],
args["vec"], args["transformer_options"] (current "sigmas", "cond_or_uncond") and
extra["original_block"](args) -> {"img", "txt"}. A `BlockHook` runs the block (or the patch that
was already there, so patches chain), then edits and/or records one stream inside a sigma window.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .errors import ShapeMismatchError
from .steer import ApplyTo, CaptureBuffer, Stream, cfg_rows, in_window, stream_addend

BlockFn = Callable[[dict, dict], dict]


class BlockHook:
    """Edit (delta · strength) and/or capture one stream of a joint block's output. `edit` is the delta,
    [C] (broadcast over tokens) or [L', C] (token-aligned), on any device and in any dtype."""

    def __init__(self, stream: Stream, edit: torch.Tensor | None = None, strength: float = 1.0,
                 sigma_window: tuple[float, float] = (float("inf"), 0.0), apply_to: ApplyTo = "positive",
                 capture: CaptureBuffer | None = None, previous: BlockFn | None = None):
        self.stream, self.edit, self.strength = stream, edit, strength
        self.sigma_start, self.sigma_end = sigma_window
        self.apply_to, self.capture, self.previous = apply_to, capture, previous
        self._layouts: dict[tuple, tuple[torch.Tensor | None, torch.Tensor | None]] = {}

    def __call__(self, args: dict, extra: dict) -> dict:
        out = self.previous(args, extra) if self.previous is not None else extra["original_block"](args)
        opts: dict[str, Any] = args.get("transformer_options", {})
        sigmas = opts.get("sigmas")
        if sigmas is not None and not in_window(float(sigmas.flatten()[0]), self.sigma_start, self.sigma_end):
            return out
        x = out.get(self.stream)
        if x is None:
            raise ShapeMismatchError(f"this joint block computes no {self.stream} output (the last block's text "
                                     "stream is pre_only in SD3): choose the img stream or an earlier block")
        rows, addend = self._prepared(x, opts.get("cond_or_uncond"))
        if self.capture is not None:
            self.capture.record(x, rows)
        if addend is not None:
            out = dict(out)
            out[self.stream] = x + addend
        return out

    def _prepared(self, x: torch.Tensor, cond_or_uncond: list[int] | None):
        """(indices of the rows to capture or None, the edit to add or None) for this batch layout, made
        once per layout, so that a sampling step pays one add and no host-to-device copy."""
        key = (tuple(cond_or_uncond or ()), tuple(x.shape[:2]), x.device, x.dtype)
        if key not in self._layouts:
            mask = cfg_rows(cond_or_uncond, x.shape[0], self.apply_to)
            rows = None if mask is None else mask.nonzero().flatten().to(x.device)
            addend = None
            if self.edit is not None and self.strength != 0:
                delta = self.edit.to(x.device, x.dtype)  # scaled in the stream's dtype, as the block computes
                addend = stream_addend(delta, mask, x.shape, self.strength, x.device, x.dtype)
            self._layouts[key] = rows, addend
        return self._layouts[key]
