"""Edit maths on plain tensors: an SSAE edit added to a joint block's stream, or to a prompt's conditioning.

An edit is a pooled feature [C], added to every token, or token rows [L', C]. Token rows land by token layout
(`ssae.layout`): CLIP rows on CLIP rows and T5 rows on T5 rows, on every repetition of each batch row's prompt;
an edit of unknown layout aligns on the first rows.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from .errors import ShapeMismatchError
from .layout import POOLED, RowLayout, TokenLayout, detect_layout, layout_notes, layout_of_shape, remap_rows
from .shapes import FeatureShape, unflatten
from .sites import Stream

ApplyTo = Literal["positive", "both"]
log = logging.getLogger(__name__)


def align_tokens(delta: torch.Tensor, length: int) -> torch.Tensor:
    """[L', C] -> [length, C]: truncate, or pad with zeros (extra tokens are left unchanged)."""
    if delta.shape[0] >= length:
        return delta[:length]
    return torch.cat([delta, delta.new_zeros(length - delta.shape[0], delta.shape[1])])


def token_rows(delta: torch.Tensor, source: TokenLayout | None, row: RowLayout | None, length: int) -> torch.Tensor:
    """An edit's token rows [L', C] in layout `source`, laid onto one batch row of a stream `length` rows long whose
    conditioning rows are `row`: each repetition of the prompt gets the edit (`remap_rows`), and rows before them
    (an MMDiT's register tokens; SD3 has none) nothing. Without a row layout the edit aligns on the first rows,
    which is refused for an edit with T5 rows: they would land on CLIP rows whenever a prompt has two CLIP chunks."""
    if row is None:
        if source is not None and source.t5:
            raise ShapeMismatchError(f"this edit has {source} but the text stream's CLIP/T5 layout is unknown (SSAE's "
                                     "apply-model wrapper did not run): patch the model with SSAE Patch Model")
        return align_tokens(delta, length)
    offset = length - row.rows
    if offset < 0:
        raise ShapeMismatchError(f"the text stream has {length} rows but its conditioning {row.rows} "
                                 f"({row.layout}, {row.repeats}x): a node between the conditioning and this block "
                                 "changed the text tokens; patch a model without it")
    one = remap_rows(delta, source, row.layout)
    for note in layout_notes(source, row.layout, "the text stream"):  # once per batch layout: hooks prepare once
        log.warning("SSAE block edit: %s", note)
    return torch.cat([one.new_zeros(offset, one.shape[1]), one.repeat(row.repeats, 1)])


@dataclass(frozen=True, eq=False)
class StreamEdit:
    """`strength` x `delta` added to a stream: [C] on every token, or token rows [L', C] whose CLIP/T5 `layout`
    (None: unknown) places them on a text stream's rows (`token_rows`)."""

    delta: torch.Tensor
    strength: float = 1.0
    layout: TokenLayout | None = None

    def addend(self, shape: torch.Size, rows: torch.Tensor | None = None,
               row_layouts: Sequence[RowLayout] | None = None, device: torch.device | None = None,
               dtype: torch.dtype | None = None) -> torch.Tensor:
        """What the edit adds to a stream of `shape` [B, L, C]: on the rows chosen by the bool mask `rows` (None:
        all), token rows placed by each batch row's conditioning layout (None: aligned on the first rows), in the
        stream's device and dtype (the delta is cast first, then scaled, as the block computes). It depends only
        on the batch's layout, so a hook computes it once per layout."""
        if self.delta.shape[-1] != shape[-1]:
            raise ShapeMismatchError(f"the edit is {self.delta.shape[-1]} wide but the stream is {shape[-1]} wide: "
                                     "this SSAE belongs to another model or site")
        d = self.delta.to(device, dtype)
        if d.ndim > 1 and row_layouts is None:
            d = token_rows(d, self.layout, None, shape[1])
        elif d.ndim > 1:  # placed on the chosen rows' layouts only: the others need not fit the edit
            chosen = [r if rows is None or rows[i] else None for i, r in enumerate(row_layouts)]
            placed = {r: token_rows(d, self.layout, r, shape[1]) for r in dict.fromkeys(chosen) if r is not None}
            if len(placed) == 1:
                d = next(iter(placed.values()))
            else:
                zero = d.new_zeros(shape[1], shape[2])
                d = torch.stack([zero if r is None else placed[r] for r in chosen])
        d = self.strength * d
        if rows is None:
            return d
        return rows.to(device).view(-1, 1, 1).to(d.dtype) * d

    def describe(self) -> str:
        """Where the edit lands, in words (for the node)."""
        if self.delta.ndim == 1:
            return f"strength {self.strength:g}, added to every token"
        if self.layout is None:
            return f"strength {self.strength:g}, {self.delta.shape[0]} token rows aligned on the first rows"
        return (f"strength {self.strength:g}, {self.layout} onto each prompt's CLIP and T5 rows (each repetition of "
                "a repeat-padded prompt alike)")

    def apply(self, x: torch.Tensor, addend: torch.Tensor) -> torch.Tensor:
        """The edited stream; an edit that scales with the stream (not this one) would read `x` here."""
        return x + addend


def stream_edit(flat: torch.Tensor, shape: FeatureShape, strength: float, stream: Stream) -> StreamEdit:
    """An SSAE's flat edit [F] of a block site as a StreamEdit: [C] for every token, or token rows with the CLIP/T5
    layout that the feature shape records (the text stream only: image tokens have no such layout)."""
    if isinstance(shape, dict):
        d, pooled = split_conditioning(flat, shape)
        if pooled is not None:
            raise ShapeMismatchError(f"an edit of shape {shape} holds a pooled part: it is a conditioning SSAE's; "
                                     "use SSAE Apply to Conditioning")
    else:
        d = unflatten(flat, shape)
    layout = layout_of_shape(shape) if stream == "txt" and d.ndim == 2 else None
    return StreamEdit(d, strength, layout)


def add_to_stream(x: torch.Tensor, delta: torch.Tensor, rows: torch.Tensor | None = None,
                  strength: float = 1.0) -> torch.Tensor:
    """x [B, L, C] + strength * delta on the chosen rows; delta [L', C] aligned on the first rows, or [C]."""
    edit = StreamEdit(delta, strength)
    return edit.apply(x, edit.addend(x.shape, rows, None, x.device, x.dtype))


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
                      strength: float) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """Add an SSAE edit to a prompt's conditioning [B, L, C] and pooled [B, P]; other values unchanged. The
    edit's rows, in layout `source`, land on the conditioning's CLIP and T5 rows (`layout.remap_rows`). Returns
    the edited pair and what the edit left undone (`layout.layout_notes`), for the node to show."""
    if tokens_delta.shape[-1] != cond.shape[-1]:
        raise ShapeMismatchError(f"the edit is {tokens_delta.shape[-1]} wide but the conditioning is "
                                 f"{cond.shape[-1]} wide: this SSAE belongs to another text encoder")
    target = detect_layout(cond)
    cond = add_to_stream(cond, remap_rows(tokens_delta, source, target), None, strength)
    if pooled is not None and pooled_delta is not None:
        if pooled.shape[-1] != pooled_delta.shape[-1]:
            raise ShapeMismatchError(f"pooled output is {pooled.shape[-1]} wide, the SSAE's {pooled_delta.shape[-1]}")
        pooled = pooled + strength * pooled_delta.to(pooled.device, pooled.dtype)
    return cond, pooled, layout_notes(source, target)
