"""Token layouts of SD3 conditioning and of a joint block's text stream: which rows come from CLIP, which from T5.

ComfyUI encodes an SD3 prompt as CLIP rows (77 per chunk of the prompt; CLIP-L and CLIP-G side by side
in the first 2048 channels, zero beyond) followed by T5 rows (77 or more; none without a T5 encoder).
diffusers' `encode_prompt`, whose features the paper used, gives 77 CLIP rows and 256 T5 rows. A
conditioning feature records its layout in its shape's named parts, `{"clip": [77, 4096], "t5": [77,
4096], "pooled_output": [2048]}`, and edits move CLIP rows to CLIP rows and T5 rows to T5 rows, so an
SSAE works on conditioning of any layout its rows fit.

A joint block's text stream holds, per batch row, the rows of the conditioning the model was given
(`RowLayout`): one prompt's CLIP and T5 rows, repeated when ComfyUI batched it with a longer conditioning
(it repeat-pads conditionings to a common length), after any register rows the MMDiT prepends (none in SD3).
Block text-stream features record their layout as conditioning features do, and an edit of them lands the
same way on each repetition of each batch row's prompt.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .errors import ShapeMismatchError
from .shapes import FeatureShape, n_features_of

log = logging.getLogger(__name__)
CLIP_CHANNELS = 2048
"""SD3's CLIP rows fill channels 0..2047 (CLIP-L 768 + CLIP-G 1280) and are zero-padded to the T5 width."""
KNOWN_ROWS = {333: (77, 256), 154: (77, 77), 77: (77, 0)}
"""Layouts of conditioning stored before layouts were recorded: diffusers' (the paper's), ComfyUI's with
T5, ComfyUI's CLIP only."""
POOLED = "pooled_output"


@dataclass(frozen=True)
class TokenLayout:
    """`clip` CLIP rows followed by `t5` T5 rows."""

    clip: int
    t5: int

    def __post_init__(self) -> None:
        if min(self.clip, self.t5) < 0:
            raise ShapeMismatchError(f"a token layout counts rows from 0 up, got {self.clip} CLIP and {self.t5} T5")

    @property
    def rows(self) -> int:
        return self.clip + self.t5

    def __str__(self) -> str:
        return f"{self.clip} CLIP + {self.t5} T5 rows"

    def spans(self) -> dict[str, slice]:
        return {"clip": slice(0, self.clip), "t5": slice(self.clip, self.rows)}


@dataclass(frozen=True)
class RowLayout:
    """One batch row of the conditioning a model call gets: a prompt's rows in `layout`, `repeats` times over
    (ComfyUI repeat-pads conditionings of different lengths that it batches together to a common length)."""

    layout: TokenLayout
    repeats: int = 1

    @property
    def rows(self) -> int:
        return self.layout.rows * self.repeats


PAD_FACTORS = (2, 3)
"""Repeat counts are found as products of these: ComfyUI pads a pair of conditionings to their least common
multiple when that repeats the shorter at most 4 times (2, 3, 2x2); more chunks give other products of them."""


def detect_layout(cond: torch.Tensor) -> TokenLayout:
    """The layout of ComfyUI SD3 conditioning [B, L, C] or [L, C]: the leading rows that are zero beyond the
    CLIP channels are CLIP rows, the rest T5. A conditioning no wider than the CLIP channels is all CLIP."""
    rows = cond.reshape(-1, cond.shape[-2], cond.shape[-1])[0]
    if rows.shape[-1] <= CLIP_CHANNELS:
        return TokenLayout(rows.shape[0], 0)
    dense = rows[:, CLIP_CHANNELS:].abs().amax(1) > 0  # as != 0 .any(), many times faster on a CPU
    n_clip = int(dense.int().argmax()) if bool(dense.any()) else rows.shape[0]
    return TokenLayout(n_clip, rows.shape[0] - n_clip)


def row_layouts(context: torch.Tensor) -> tuple[RowLayout, ...]:
    """The `RowLayout` of each batch row of conditioning [B, L, C] as a model call gets it: the shortest period
    of a repeat-padded row (its prompt's own rows), and that period's CLIP/T5 layout (`detect_layout`).

    A row whose every row is equal (a zeroed negative) has no period that can be told: it counts as one prompt
    of L rows. A prompt that is itself periodic (the same 75 tokens twice in a row) is taken as repeated, which
    edits its repeats alike and captures one of them: what its tokens say either way."""
    return tuple(_row_layout(row) for row in context.reshape(-1, context.shape[-2], context.shape[-1]))


def _row_layout(row: torch.Tensor) -> RowLayout:
    period = row.shape[0]
    if not torch.equal(row[1:], row[:-1]):  # a constant row has no period that can be told
        shorter = True
        while shorter:
            shorter = False
            for r in PAD_FACTORS:
                p = period // r
                if period % r == 0 and torch.equal(row[p:period], row[:period - p]):
                    period, shorter = p, True
                    break
    return RowLayout(detect_layout(row[:period]), row.shape[0] // period)


def conditioning_shape(layout: TokenLayout, width: int, pooled: int | None) -> dict[str, list[int]]:
    """The feature shape of conditioning in `layout`: named parts clip, t5 (when present) and pooled_output."""
    shape = {name: [n, width] for name, n in (("clip", layout.clip), ("t5", layout.t5)) if n}
    if pooled is not None:
        shape[POOLED] = [pooled]
    return shape


def layout_of_shape(shape: FeatureShape) -> TokenLayout | None:
    """The layout a conditioning feature shape records: from its named parts, or for shapes stored before
    layouts were (`{"cond": [L, C], ...}` or flat) from the known row counts; None when it cannot be told."""
    if isinstance(shape, dict) and ("clip" in shape or "t5" in shape):
        return TokenLayout(shape.get("clip", [0])[0], shape.get("t5", [0])[0])
    rows = next(iter(shape.values()))[0] if isinstance(shape, dict) else (shape[0] if len(shape) == 2 else None)
    return TokenLayout(*KNOWN_ROWS[rows]) if rows in KNOWN_ROWS else None


def layout_notes(source: TokenLayout | None, target: TokenLayout, what: str = "the conditioning") -> list[str]:
    """What an edit of `source` rows leaves undone on `target` rows (`remap_rows`), one sentence each: rows of
    the target left unedited, and rows of the edit with nowhere to land. Empty when every row meets its own."""
    if source is None:
        return []
    notes = []
    for part, src, dst in zip(("CLIP", "T5"), (source.clip, source.t5), (target.clip, target.t5)):
        if dst > src:
            rows = f"all {dst} of {what}'s {part} rows" if src == 0 else f"{what}'s {part} rows {src + 1}-{dst}"
            why = f"the SSAE was trained without {part} rows" if src == 0 else f"the SSAE has {src} {part} rows"
            notes.append(f"{rows} are left unedited: {why} ({source})")
        elif src > dst:
            rows = f"the SSAE's {part} rows" if dst == 0 else f"the SSAE's {part} rows {dst + 1}-{src}"
            notes.append(f"{rows} are dropped: {what} has {dst} {part} rows ({target})")
    return notes


def remap_rows(x: torch.Tensor, source: TokenLayout | None, target: TokenLayout) -> torch.Tensor:
    """[..., source rows, C] -> [..., target rows, C]: CLIP rows onto CLIP rows and T5 rows onto T5 rows, each
    aligned on its first row; rows the target has beyond the source's are zero. An unknown source aligns on the
    first rows. Refused when no row would land (e.g. T5 rows only, onto CLIP rows only); `layout_notes` says
    what is left undone."""
    if source is None:
        source = TokenLayout(x.shape[-2], 0) if target.clip else TokenLayout(0, x.shape[-2])
    if (min(source.clip, target.clip) + min(source.t5, target.t5)) == 0:
        raise ShapeMismatchError(f"this SSAE's features have {source}, the conditioning {target}: none of its rows "
                                 "fits; encode the prompt with the text encoders the SSAE was trained with")
    out = x.new_zeros(*x.shape[:-2], target.rows, x.shape[-1])
    for src, dst in zip(source.spans().values(), target.spans().values()):
        n = min(src.stop - src.start, dst.stop - dst.start)
        out[..., dst.start:dst.start + n, :] = x[..., src.start:src.start + n, :]
    return out


def conditioning_features(cond: torch.Tensor, pooled: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
    """Conditioning-site features of a prompt's conditioning [B, L, C] and pooled [B, P]: [B, L·C (+ P)] in the
    conditioning's own dtype (a lossless copy), and the feature shape that records their layout."""
    x = cond.reshape(cond.shape[0], -1)
    if pooled is not None:
        x = torch.cat([x, pooled.reshape(cond.shape[0], -1).to(x.dtype)], 1)
    width = pooled.shape[-1] if pooled is not None else None
    return x.detach().cpu().clone(), conditioning_shape(detect_layout(cond), cond.shape[-1], width)


def parts_of(shape: FeatureShape, width: int = 4096, pooled: int = 2048) -> dict[str, list[int]] | None:
    """A conditioning feature shape as named parts clip / t5 / pooled_output, however it was stored: named parts,
    `{"cond": [L, C], "pooled_output": [P]}`, [L, C], or flat [L·C (+ P)] as the reference code stores SD3.5's
    conditioning (L of the known row counts, C = `width`, P = `pooled`); None when it cannot be told."""
    if isinstance(shape, dict) and ("clip" in shape or "t5" in shape):
        return shape
    if isinstance(shape, dict) or len(shape) == 2:
        tokens = next(iter(shape.values())) if isinstance(shape, dict) else shape
        extra = n_features_of(shape) - n_features_of(tokens)
    else:
        n = shape[0]
        rows = next((r for r in KNOWN_ROWS if n in (r * width, r * width + pooled)), None)
        if rows is None:
            return None
        tokens, extra = [rows, width], n - rows * width
    layout = layout_of_shape([tokens[0], tokens[1]])
    return None if layout is None else conditioning_shape(layout, tokens[1], extra or None)


def relayout(x: torch.Tensor, parts: dict[str, list[int]], target: TokenLayout) -> tuple[torch.Tensor, dict]:
    """Conditioning features [n, F] with named `parts` -> the same prompts in `target`'s rows (`remap_rows` for
    each sample: CLIP rows to CLIP rows, T5 rows to T5 rows, extra rows zero), pooled kept; and their shape."""
    width = next(v for k, v in parts.items() if k != POOLED)[1]
    source = layout_of_shape(parts)
    n_tok = source.rows * width
    tokens = x[:, :n_tok].reshape(x.shape[0], source.rows, width)
    out = remap_rows(tokens, source, target).flatten(1)
    for note in layout_notes(source, target, "the target layout"):
        log.warning(note)
    pooled = parts.get(POOLED)
    if pooled is not None:
        out = torch.cat([out, x[:, n_tok:]], 1)
    return out, conditioning_shape(target, width, pooled[0] if pooled else None)

