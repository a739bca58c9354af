"""Block edits beyond adding to a block's output, on `hooks.BlockHook` (no ComfyUI import).

Where: a joint block's `input` (the stream its attention reads) or its `output` (what the next block reads).
How: `residual`, the edit added to the stream; or `kv`, the edit reaching the joint attention's text keys and
values only (attention injection, as Stable Flow and FreeFlux do on MMDiTs): the block's queries, its image
rows and its residual stream stay as they were. How much: a fixed strength, or `MatchedEdit`, rescaled each
step by how the stream's norm compares with the norm of the features it was made for. And the modulation
vector `vec` (timestep plus pooled-prompt embedding) that every block's adaLN reads: a text stream is captured
with it (`StreamAndVec`, named part `vec`), and an edit adds its `vec` part at every block from the site on.

`kv` needs no access to the block's weights: the block runs once on the edited text stream under an attention
override that records the text rows' keys and values and stops the block there, then once on the unedited
stream under an override that puts them in place. ComfyUI calls `transformer_options
["optimized_attention_override"](func, q, k, v, ...)` in place of attention; in a joint block q, k and v are the
text rows then the image rows, and the joint attention is the block's first attention call.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from .capture import CaptureBuffer
from .errors import ShapeMismatchError, SSAEError
from .hooks import BlockHook, Pass, cfg_rows, in_window
from .shapes import FeatureShape, n_features_of, unflatten
from .sites import Stream
from .steer import StreamEdit, stream_edit

Position = Literal["input", "output"]
Mode = Literal["residual", "kv"]
VEC = "vec"
"""The named part of a text-stream capture that holds the block's modulation vector."""
_SITE = re.compile(r"^joint_blocks\.(\d+)\.(txt|img)(_in)?$")


@dataclass(frozen=True)
class BlockSite:
    """Joint block `block`'s `stream` at its `position`: `joint_blocks.<i>.txt` is block i's text output,
    `joint_blocks.<i>.txt_in` its text input (what its attention reads; for block 0, the context embedder's output,
    a linear map of the conditioning), and the same for `img`."""

    block: int
    stream: Stream
    position: Position = "output"

    def __str__(self) -> str:
        return f"joint_blocks.{self.block}.{self.part}"

    @property
    def part(self) -> str:
        """'txt', 'txt_in', 'img' or 'img_in': the stream and its position, as the site's name ends."""
        return f"{self.stream}{'_in' if self.position == 'input' else ''}"

    @property
    def reader(self) -> int:
        """The block whose attention reads this stream: the block itself for an input, the next one for an output."""
        return self.block + (self.position == "output")


def parse_block_site(site: str) -> BlockSite:
    """'joint_blocks.7.txt', 'joint_blocks.0.txt_in', 'joint_blocks.3.img' -> BlockSite; anything else an error."""
    m = _SITE.match(site.strip())
    if not m:
        raise SSAEError(f"unknown block site {site!r}: use joint_blocks.<i>.txt or .img (block i's output) or "
                        "joint_blocks.<i>.txt_in or .img_in (its input)")
    return BlockSite(int(m.group(1)), m.group(2), "input" if m.group(3) else "output")  # type: ignore[arg-type]


def check_site(site: BlockSite, depth: int, hidden: int, feature_width: int) -> None:
    """Refuse a site the model does not have, or features whose width is not the model's hidden size."""
    if not 0 <= site.block < depth:
        raise ShapeMismatchError(f"site {site} does not exist: this model has joint blocks 0..{depth - 1}")
    if (site.stream, site.position, site.block) == ("txt", "output", depth - 1):
        raise ShapeMismatchError(f"site {site}: the last joint block's text output is not computed by SD3 "
                                 f"(pre_only); use joint_blocks.{depth - 1}.txt_in, its input")
    if feature_width != hidden:
        raise ShapeMismatchError(f"these features are {feature_width} wide, but the model's hidden size is {hidden}: "
                                 "they belong to another model (SD3.5 Medium is 1536, Large 2432)")


def edit_blocks(site: BlockSite, depth: int, mode: Mode, carry: bool) -> list[tuple[int, Position, bool]]:
    """(block, position, whether the stream edit goes there) of each BlockEdit that makes one edit at `site`. A
    key/value edit goes into the attention that reads the site's text stream, and with `carry` into every later
    block's too; a residual edit is added once, where the site is. The `vec` part of an edit goes to every
    block from the site's on (a vector-only BlockEdit where no stream edit goes)."""
    if mode == "kv" and site.stream != "txt":
        raise SSAEError(f"site {site}: key/value edits act on the text stream; use mode residual for the image stream")
    if site.reader >= depth and (mode == "kv" or site.stream == "txt"):
        raise ShapeMismatchError(f"site {site}: no block reads it (the model has joint blocks 0..{depth - 1})")
    if mode == "residual":
        if carry:
            raise SSAEError("a residual edit carried over blocks would be added again at every block: carry a "
                            "key/value edit, or edit one block")
        return [(site.block, site.position, True)] + [(b, "input", False) for b in range(site.block + 1, depth)]
    return [(b, "input", carry or b == site.reader) for b in range(site.reader, depth)]


def block_edit_parts(flat: torch.Tensor, shape: FeatureShape, strength: float, stream: Stream,
                     reference: torch.Tensor | None = None) -> tuple[StreamEdit, torch.Tensor | None]:
    """An SSAE's flat edit [F] of a block site as (the stream's StreamEdit, a `MatchedEdit` when `reference` [F] is
    given, the `vec` part [C] or None)."""
    vec = None
    if isinstance(shape, dict) and VEC in shape:
        parts = unflatten(flat, shape)
        vec = parts[VEC]
        shape = {k: v for k, v in shape.items() if k != VEC}
        flat = flat[..., :n_features_of(shape)]
        if reference is not None:
            reference = reference[..., :n_features_of(shape)]
    edit = stream_edit(flat, shape, strength, stream)
    if reference is not None:
        ref = stream_edit(reference, shape, 1.0, stream).delta
        edit = MatchedEdit(edit.delta, edit.strength, edit.layout, ref.norm(dim=-1))
    return edit, vec


@dataclass(frozen=True, eq=False)
class MatchedEdit(StreamEdit):
    """A StreamEdit rescaled each step by the stream's norm over `reference`, the norm of the features it was made
    for (per token row [L'] for token rows, one value for a pooled edit), so that it keeps its share of the
    stream when the stream grows or shrinks over the schedule."""

    reference: torch.Tensor | None = None

    def apply(self, x: torch.Tensor, addend: torch.Tensor) -> torch.Tensor:
        return x + addend * stream_scale(x, self.reference, self.delta.ndim == 1)


def stream_scale(x: torch.Tensor, reference: torch.Tensor, pooled: bool) -> torch.Tensor:
    """[B, L or 1, 1]: the stream's norm over the reference norm, per token row (token-aligned edits; rows past the
    reference keep scale 1) or of the token mean (pooled edits)."""
    ref = reference.to(x.device, torch.float32).clamp_min(1e-6)
    if pooled:
        return (x.float().mean(1).norm(dim=-1) / ref.reshape(())).reshape(-1, 1, 1).to(x.dtype)
    n = min(x.shape[1], ref.shape[0])
    scale = torch.ones(x.shape[:2], device=x.device)
    scale[:, :n] = x[:, :n].float().norm(dim=-1) / ref[:n]
    return scale[..., None].to(x.dtype)


class StreamAndVec(CaptureBuffer):
    """A capture of a text stream with the block's modulation vector: one sample [F + C] per run (or step), the
    stream's features first, its shape the stream's named parts plus `vec` [C]."""

    def __init__(self, pool: Literal["mean", "none"] = "none", per_step: bool = False):
        super().__init__(pool, per_step)
        self.vec = CaptureBuffer("mean", per_step)

    def record_vec(self, vec: torch.Tensor, step: float | None, source) -> None:
        self.vec.record(vec[:, None], step, source)

    def take(self) -> tuple[torch.Tensor, FeatureShape]:
        x, shape = super().take()
        v, _ = self.vec.take()
        parts = dict(shape) if isinstance(shape, dict) else {"rows" if len(shape) > 1 else "mean": shape}
        return torch.cat([x, v], 1), {**parts, VEC: [v.shape[1]]}


class BlockEdit(BlockHook):
    """A BlockHook at the block's `position`, by `mode`, plus `vec_edit` [C] (times the edit's strength, or 1 with
    no stream edit) added to the block's modulation vector; a `StreamAndVec` capture records the vector too."""

    def __init__(self, stream: Stream, edit: StreamEdit | None = None, position: Position = "output",
                 mode: Mode = "residual", vec_edit: torch.Tensor | None = None, vec_strength: float = 1.0, **kwargs):
        if mode == "kv" and (stream, position) != ("txt", "input"):
            raise ShapeMismatchError("a key/value edit acts on the text stream a block's attention reads: "
                                     "use stream txt at the block's input")
        super().__init__(stream, edit, **kwargs)
        self.position, self.mode, self.vec_edit, self.vec_strength = position, mode, vec_edit, vec_strength

    def __call__(self, args: dict, extra: dict) -> dict:
        p = Pass.of(args.get("transformer_options", {}))
        if p.sigma is not None and not in_window(p.sigma, self.sigma_start, self.sigma_end):
            return self._block(args, extra)
        vec = args.get("vec")
        if isinstance(self.capture, StreamAndVec) and vec is not None and p.chunks.count(0) <= 1:
            positive = cfg_rows(p.chunks, vec.shape[0], "positive")
            if positive is None or positive.any():
                self.capture.record_vec(vec if positive is None else vec[positive.to(vec.device)], p.sigma,
                                        p.positive_source)
        if self.vec_edit is not None and self.vec_strength != 0 and vec is not None:
            args = {**args, "vec": vec + self._vec_addend(vec, p)}
        if self.position == "output":
            return self._touch(self._block(args, extra), p)
        touched = self._touch(args, p)
        if self.mode == "residual" or touched[self.stream] is args[self.stream]:
            return self._block(touched, extra)
        k, v = _text_kv(lambda a: self._block(a, extra), touched)
        opts = args.get("transformer_options", {})
        return self._block({**args, "transformer_options": _with_override(opts, _substitute(k, v))}, extra)

    def _vec_addend(self, vec: torch.Tensor, p: Pass) -> torch.Tensor:
        rows = cfg_rows(p.chunks, vec.shape[0], self.apply_to)
        d = self.vec_strength * self.vec_edit.to(vec.device, vec.dtype)
        return d.expand_as(vec) if rows is None else rows.to(vec.device).view(-1, 1).to(vec.dtype) * d


def _with_override(opts: dict, override: Callable) -> dict:
    """A copy of transformer_options whose attention override is `override`, chained onto one already there."""
    before = opts.get("optimized_attention_override")
    if before is None:
        return {**opts, "optimized_attention_override": override}

    def chained(func, *a, **kw):
        return override(lambda *a2, **kw2: before(func, *a2, **kw2), *a, **kw)
    return {**opts, "optimized_attention_override": chained}


class _Recorded(Exception):
    """Raised by the recording override once it holds the text keys and values: the rest of the block is not needed."""


def _text_kv(run: Callable[[dict], dict], args: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The text rows' keys and values of the block's joint attention on `args` (the block stops there)."""
    n = args["txt"].shape[1]
    held: list[torch.Tensor] = []

    def record(func, q, k, v, *a, **kw):
        held.extend((k[:, :n], v[:, :n]))
        raise _Recorded

    try:
        run({**args, "transformer_options": _with_override(args.get("transformer_options", {}), record)})
    except _Recorded:
        return held[0], held[1]
    raise ShapeMismatchError("the patched block ran no joint attention through ComfyUI's attention override: "
                             "key/value edits need ComfyUI 0.3.60 or later and an MMDiT joint block")


def _substitute(k_txt: torch.Tensor, v_txt: torch.Tensor) -> Callable:
    """An attention override that puts the given text keys and values into the block's first (joint) attention."""
    n, calls = k_txt.shape[1], [0]

    def substitute(func, q, k, v, *a, **kw):
        calls[0] += 1
        if calls[0] == 1 and k.shape[1] > n and k.shape[0] == k_txt.shape[0]:
            k = torch.cat([k_txt.to(k.dtype), k[:, n:]], 1)
            v = torch.cat([v_txt.to(v.dtype), v[:, n:]], 1)
        return func(q, k, v, *a, **kw)
    return substitute
