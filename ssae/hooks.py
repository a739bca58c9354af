"""Joint-block hooks in ComfyUI's replace-patch protocol, and the apply-model wrapper that tells them each batch
row's token layout. Only `patch_block`, which takes a ComfyUI model, imports ComfyUI.

ComfyUI's MMDiT calls `patch(args, extra)` in place of joint block i, with args["img"], args["txt"],
args["vec"], args["transformer_options"] and extra["original_block"](args) -> {"img", "txt"}. The options
say which pass this model call is (`Pass`): the current "sigmas", the CFG chunks in "cond_or_uncond" (0 the
positive prompt, 1 the negative; one chunk alone when ComfyUI runs them as separate calls, as it does on low
memory or for prompts of different lengths) and their conditionings' "uuids". A `BlockHook` runs the block
(or the patch that was already there, so patches chain), then edits and/or records one stream.

A block sees the text stream, not the conditioning, so it cannot tell CLIP rows from T5 rows, nor a prompt
repeat-padded to a longer one's length from a longer prompt. `record_row_layouts`, registered as an
APPLY_MODEL wrapper beside the hooks, reads each batch row's layout off the conditioning the model call gets
(`layout.row_layouts`: CLIP rows are zero beyond channel 2048, a padded row is periodic) and hands it to the
hooks in transformer_options[ROW_LAYOUTS]. A wrapper rather than the hook's own bookkeeping because it is the
only place that sees the conditioning of exactly this call, whether the CFG chunks are batched or split.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from .capture import CaptureBuffer
from .errors import ShapeMismatchError, SSAEError
from .layout import RowLayout, TokenLayout, row_layouts
from .sites import Stream
from .steer import ApplyTo, StreamEdit

BlockFn = Callable[[dict, dict], dict]
ROW_LAYOUTS = "ssae_row_layouts"
"""transformer_options key of the conditioning's `RowLayout` per batch row, set by `record_row_layouts`."""
LAYOUT_WRAPPER = "ssae_row_layouts"
"""The key `record_row_layouts` is registered under (ComfyUI's `add_wrapper_with_key`), so that it is added once."""


def record_row_layouts(executor: Callable, x: torch.Tensor, t: torch.Tensor, c_concat=None, c_crossattn=None,
                       control=None, transformer_options: dict | None = None, **kwargs) -> torch.Tensor:
    """ComfyUI APPLY_MODEL wrapper (the signature of `BaseModel.apply_model`): the model call, with the row
    layouts of its conditioning in a copy of its transformer_options. Stateless, so that the copies that
    `ModelPatcher.clone()` makes of it are all the same function."""
    opts = dict(transformer_options or {})
    if c_crossattn is not None:
        opts[ROW_LAYOUTS] = row_layouts(c_crossattn)
    return executor(x, t, c_concat, c_crossattn, control, opts, **kwargs)


def cfg_rows(cond_or_uncond: list[int] | tuple[int, ...] | None, batch: int, apply_to: ApplyTo) -> torch.Tensor | None:
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


@dataclass(frozen=True)
class Pass:
    """One model call as its transformer_options describe it: the step's sigma, the CFG chunks in batch order,
    their conditionings' uuids, and each batch row's conditioning layout (None: not known)."""

    sigma: float | None = None
    chunks: tuple[int, ...] = ()
    uuids: tuple = ()
    layouts: tuple[RowLayout, ...] | None = None

    @classmethod
    def of(cls, opts: dict[str, Any]) -> Pass:
        sigmas = opts.get("sigmas")
        return cls(None if sigmas is None else float(sigmas.flatten()[0]), tuple(opts.get("cond_or_uncond") or ()),
                   tuple(opts.get("uuids") or ()), opts.get(ROW_LAYOUTS))

    @property
    def positive_source(self) -> tuple:
        """What tells the positive conditioning of this pass from another one: its uuids."""
        return tuple(u for u, c in zip(self.uuids, self.chunks) if c == 0)

    def row_layouts(self, batch: int) -> tuple[RowLayout, ...] | None:
        """The layouts of a stream of `batch` rows; None when unknown or not this stream's (another batch size)."""
        return self.layouts if self.layouts is not None and len(self.layouts) == batch else None


class BlockHook:
    """Edit and/or capture one stream of a joint block's output during a sigma window.

    `edit` (a `StreamEdit`) is added to the rows `apply_to` names; `capture` records the positive prompt's
    rows (its own tokens, for the text stream) once per sampling step. The steps are plain: `_block` runs what
    the block runs, `_touch` acts on a dict of streams, so that a hook acting elsewhere (on the block's input,
    say) calls `_touch` on `args` before `_block`, and another kind of edit is another `StreamEdit`."""

    def __init__(self, stream: Stream, edit: StreamEdit | None = None,
                 sigma_window: tuple[float, float] = (float("inf"), 0.0), apply_to: ApplyTo = "positive",
                 capture: CaptureBuffer | None = None, previous: BlockFn | None = None):
        self.stream, self.edit, self.apply_to, self.capture, self.previous = stream, edit, apply_to, capture, previous
        self.sigma_start, self.sigma_end = sigma_window
        self._prepared: dict[tuple, _Prepared] = {}

    def __call__(self, args: dict, extra: dict) -> dict:
        out = self._block(args, extra)
        p = Pass.of(args.get("transformer_options", {}))
        if p.sigma is not None and not in_window(p.sigma, self.sigma_start, self.sigma_end):
            return out
        return self._touch(out, p)

    def _block(self, args: dict, extra: dict) -> dict:
        return self.previous(args, extra) if self.previous is not None else extra["original_block"](args)

    def _touch(self, streams: dict, p: Pass) -> dict:
        """`streams` with this hook's stream captured and edited."""
        x = streams.get(self.stream)
        if x is None:
            raise ShapeMismatchError(f"this joint block computes no {self.stream} output (the last block's text "
                                     "stream is pre_only in SD3): choose the img stream or an earlier block")
        prepared = self._prepare(x, p.chunks, p.row_layouts(x.shape[0]) if self.stream == "txt" else None)
        if self.capture is not None and prepared.positive.numel():  # none in a negative-only pass
            if p.chunks.count(0) > 1:
                raise SSAEError(f"the positive conditioning holds {p.chunks.count(0)} entries (combined or area "
                                "conditioning): capture one prompt per sampler run")
            own = x[prepared.positive, prepared.tokens]
            self.capture.record(own, p.sigma, p.positive_source, prepared.layout)
        if prepared.addend is None:
            return streams
        return {**streams, self.stream: self.edit.apply(x, prepared.addend)}

    def _prepare(self, x: torch.Tensor, chunks: tuple[int, ...], layouts: tuple[RowLayout, ...] | None) -> _Prepared:
        """What this hook does to a batch of this layout, made once per layout, so that a sampling step pays one
        add (and a capture one copy) and no host-to-device copy."""
        key = (chunks, tuple(x.shape[:2]), x.device, x.dtype, layouts)
        if key not in self._prepared:
            positive = cfg_rows(chunks, x.shape[0], "positive")
            positive = torch.arange(x.shape[0]) if positive is None else positive.nonzero().flatten()
            tokens, layout = slice(None), None
            if self.capture is not None and layouts is not None and positive.numel():
                tokens, layout = _own_tokens(x.shape[1], [layouts[i] for i in positive.tolist()])
            mask = cfg_rows(chunks, x.shape[0], self.apply_to)
            addend = None
            if self.edit is not None and self.edit.strength != 0 and (mask is None or mask.any()):
                addend = self.edit.addend(x.shape, mask, layouts, x.device, x.dtype)
            self._prepared[key] = _Prepared(positive.to(x.device), tokens, layout, addend)
        return self._prepared[key]


class _Prepared(NamedTuple):
    positive: torch.Tensor
    """Indices of the positive prompt's batch rows, on the stream's device."""
    tokens: slice
    """Its own tokens in the text stream: one repetition, after any register tokens."""
    layout: TokenLayout | None
    addend: torch.Tensor | None


def _own_tokens(length: int, rows: list[RowLayout]) -> tuple[slice, TokenLayout]:
    """The stream tokens of the one prompt that `rows` (the positive batch rows' layouts) hold, and its layout."""
    if len(set(rows)) > 1:
        raise ShapeMismatchError(f"the positive rows of one pass hold prompts of different layouts "
                                 f"({', '.join(sorted({str(r.layout) for r in rows}))}): capture one prompt")
    start = length - rows[0].rows  # register tokens, if the model has any, come first
    if start < 0:
        raise ShapeMismatchError(f"the text stream has {length} rows but its conditioning {rows[0].rows}: a node "
                                 "between the conditioning and this block changed the text tokens")
    return slice(start, start + rows[0].layout.rows), rows[0].layout


def patch_block(model, block: int, hook: BlockHook):
    """A clone of ComfyUI `model` (a ModelPatcher) whose joint block `block` runs `hook`, chained onto any patch
    already on that block, with `record_row_layouts` added as an APPLY_MODEL wrapper once per model: under its
    key, which `clone()` copies with the model options, so that a chain of SSAE patches adds it once."""
    import comfy.patcher_extension as ext
    m = model.clone()
    key = ("double_block", block)
    hook.previous = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {}).get(key)
    m.set_model_patch_replace(hook, "dit", "double_block", block)
    kind = ext.WrappersMP.APPLY_MODEL
    if not ext.get_wrappers_with_key(kind, LAYOUT_WRAPPER, m.model_options, is_model_options=True):
        ext.add_wrapper_with_key(kind, LAYOUT_WRAPPER, record_row_layouts, m.model_options, is_model_options=True)
    return m
