"""Block edits in ComfyUI's replace-patch protocol, beyond adding to a block's output (no ComfyUI import).

Where: a joint block's `input` (the stream its attention reads) or its `output` (what the next block reads).
How: `residual`, the edit added to the stream; or `kv`, the edit reaching the joint attention's text keys and
values only (attention injection, as Stable Flow and FreeFlux do on MMDiTs): the block's queries, its image
rows and its residual stream stay as they were. How much: a fixed `strength`, or `norm="matched"`, the edit
rescaled per step by how the stream's norm compares with the norm of the features it was trained on.

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
from typing import Any, Literal

import torch

from .errors import ShapeMismatchError, SSAEError
from .steer import ApplyTo, CaptureBuffer, Stream, cfg_rows, in_window, stream_addend

BlockFn = Callable[[dict, dict], dict]
Position = Literal["input", "output"]
Mode = Literal["residual", "kv"]
Norm = Literal["fixed", "matched"]


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
        return f"joint_blocks.{self.block}.{self.stream}{'_in' if self.position == 'input' else ''}"

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


class _Recorded(Exception):
    """Raised by the recording override once it holds the text keys and values: the rest of the block is not needed."""


STREAM_PART, VEC_PART = "stream", "vec"
"""The named parts of a text-stream capture: the stream's rows, then the block's modulation vector."""


class StreamAndVec:
    """A capture of a text stream with the block's modulation vector `vec` (the timestep embedding plus the pooled
    prompt's, which every block's adaLN reads): one sample [L·C + C] per positive row, the stream's rows first."""

    def __init__(self, stream: CaptureBuffer):
        self.stream, self.vec = stream, CaptureBuffer("mean", per_step=stream.per_step)

    def __deepcopy__(self, memo: dict) -> StreamAndVec:
        return self  # as CaptureBuffer: every clone of the model fills the one buffer the node handed on

    def record(self, x: torch.Tensor, rows: torch.Tensor | None, vec: torch.Tensor) -> None:
        self.stream.record(x, rows)
        self.vec.record(vec[:, None], rows)

    @property
    def steps(self) -> int:
        return self.stream.steps

    def take(self) -> torch.Tensor:
        return torch.cat([self.stream.take(), self.vec.take()], 1)


class BlockEdit:
    """One joint block's edit and/or capture: `edit` ([C] broadcast over tokens, or [L', C] token-aligned) times
    `strength`, on `stream` at the block's `position`, by `mode`, inside a sigma window, on the rows `apply_to`
    names, and `vec_edit` [C] times `strength` on the block's modulation vector; `capture` (a CaptureBuffer, or
    StreamAndVec) records the unedited stream there (positive rows). `reference` (norm="matched"): the norm of
    the features the edit was made for, per token row [L'] or one value for a token-pooled edit; each step the
    edit is scaled by the stream's norm over it."""

    def __init__(self, stream: Stream, edit: torch.Tensor | None = None, strength: float = 1.0,
                 position: Position = "output", mode: Mode = "residual", norm: Norm = "fixed",
                 reference: torch.Tensor | None = None, sigma_window: tuple[float, float] = (float("inf"), 0.0),
                 apply_to: ApplyTo = "positive", capture: CaptureBuffer | None = None,
                 vec_edit: torch.Tensor | None = None, previous: BlockFn | None = None):
        if mode == "kv" and (stream, position) != ("txt", "input"):
            raise ShapeMismatchError("a key/value edit acts on the text stream a block's attention reads: "
                                     "use stream txt at the block's input")
        if norm == "matched" and reference is None:
            raise ShapeMismatchError("a norm-matched edit needs the norm of the features it was made for")
        self.stream, self.edit, self.strength = stream, edit, strength
        self.position, self.mode, self.norm, self.reference = position, mode, norm, reference
        self.sigma_start, self.sigma_end = sigma_window
        self.apply_to, self.capture, self.previous = apply_to, capture, previous
        self.vec_edit = vec_edit

    def __call__(self, args: dict, extra: dict) -> dict:
        run = (lambda a: self.previous(a, extra)) if self.previous is not None else extra["original_block"]
        opts: dict[str, Any] = args.get("transformer_options", {})
        sigmas = opts.get("sigmas")
        if sigmas is not None and not in_window(float(sigmas.flatten()[0]), self.sigma_start, self.sigma_end):
            return run(args)
        editing = self.edit is not None and self.strength != 0
        vec = args.get("vec")
        if self.vec_edit is not None and self.strength != 0:
            args = {**args, "vec": vec + self.vec_addend(vec, opts)}
        if self.position == "output":
            out = run(args)
            x = out.get(self.stream)
            if x is None:
                raise ShapeMismatchError(f"this joint block computes no {self.stream} output (the last block's text "
                                         "stream is pre_only in SD3): use its input (_in) or an earlier block")
            self._record(x, opts, vec)
            return {**out, self.stream: x + self.addend(x, opts)} if editing else out
        x = args[self.stream]
        self._record(x, opts, vec)
        if not editing:
            return run(args)
        edited = {**args, self.stream: x + self.addend(x, opts)}
        if self.mode == "residual":
            return run(edited)
        k, v = _text_kv(run, edited)
        return run({**args, "transformer_options": _with_override(opts, _substitute(k, v))})

    def _record(self, x: torch.Tensor, opts: dict, vec: torch.Tensor | None) -> None:
        if self.capture is None:
            return
        rows = cfg_rows(opts.get("cond_or_uncond"), x.shape[0], "positive")
        if isinstance(self.capture, StreamAndVec):
            self.capture.record(x, rows, vec)
        else:
            self.capture.record(x, rows)

    def vec_addend(self, vec: torch.Tensor, opts: dict) -> torch.Tensor:
        """What this step adds to the block's modulation vector `vec` [B, C] (timestep plus pooled-prompt embedding)."""
        rows = cfg_rows(opts.get("cond_or_uncond"), vec.shape[0], self.apply_to)
        add = stream_addend(self.vec_edit.to(vec.device, vec.dtype), rows, vec[:, None].shape, self.strength,
                            vec.device, vec.dtype)
        return add.reshape(-1, vec.shape[-1]).expand_as(vec)

    def addend(self, x: torch.Tensor, opts: dict) -> torch.Tensor:
        """What this step adds to stream `x` [B, L, C]: the edit on the chosen rows, scaled as `norm` says."""
        rows = cfg_rows(opts.get("cond_or_uncond"), x.shape[0], self.apply_to)
        add = stream_addend(self.edit.to(x.device, x.dtype), rows, x.shape, self.strength, x.device, x.dtype)
        if self.norm == "fixed":
            return add
        return add * stream_scale(x, self.reference, self.edit.ndim == 1)


def stream_scale(x: torch.Tensor, reference: torch.Tensor, pooled: bool) -> torch.Tensor:
    """[B, L or 1, 1]: the stream's norm over the reference norm, per token row (token-aligned edits; rows past the
    reference keep scale 1) or of the token mean (pooled edits), so that an edit keeps its share of the stream."""
    ref = reference.to(x.device, torch.float32).clamp_min(1e-6)
    if pooled:
        return (x.float().mean(1).norm(dim=-1) / ref.reshape(())).reshape(-1, 1, 1).to(x.dtype)
    n = min(x.shape[1], ref.shape[0])
    scale = torch.ones(x.shape[:2], device=x.device)
    scale[:, :n] = x[:, :n].float().norm(dim=-1) / ref[:n]
    return scale[..., None].to(x.dtype)


def _with_override(opts: dict, override: Callable) -> dict:
    """A copy of transformer_options whose attention override is `override`, chained onto one already there."""
    before = opts.get("optimized_attention_override")
    if before is None:
        return {**opts, "optimized_attention_override": override}

    def chained(func, *a, **kw):
        return override(lambda *a2, **kw2: before(func, *a2, **kw2), *a, **kw)
    return {**opts, "optimized_attention_override": chained}


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
    """(block, position, whether the text edit goes there) of each BlockEdit that makes one edit at `site`. A
    key/value edit goes into the attention that reads the site's text stream, and with `carry` into every later
    block's too; a residual edit is added once, where the site is. The modulation-vector part of an edit goes
    to every block from the one that reads the site on (a vector-only BlockEdit where no text edit goes)."""
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
