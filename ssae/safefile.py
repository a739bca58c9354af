"""Safe reading and atomic writing of .safetensors files that may come from strangers.

`read_header` validates the header with plain JSON before safetensors or torch allocate anything:
size caps, known dtypes, shapes that fit the file, offsets that neither overlap nor run past the end.
Every JSON document read from a file (the header, a metadata value, a manifest) goes through `loads_json`,
which refuses documents of more than MAX_JSON_CONTAINERS arrays and objects before parsing them.
"""
from __future__ import annotations

import json
import os
import re
import struct
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import SSAEError

MAX_HEADER_BYTES = 64 * 1024 * 1024
"""A header (JSON: tensor table plus metadata) larger than this is refused."""
MAX_TENSOR_BYTES = 1 << 40
"""No single tensor may claim more than 1 TiB, whatever the file size says."""
MAX_JSON_CONTAINERS = 2_000_000
"""A JSON document with more arrays and objects than this is refused unparsed: each costs ~60 bytes in
Python, so a 64 MB header of `[[],[],...]` would otherwise take 1.5 GB. Labels of 500k samples need 500k."""
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
"""A JSON string literal, or an unterminated one up to the end (so that a scan never backtracks)."""


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _nbytes(shape: tuple[int, ...], itemsize: int) -> int:
    """Bytes of a tensor, or some number over MAX_TENSOR_BYTES once the product passes it (so that a
    shape of many huge dimensions costs no big-integer arithmetic)."""
    if 0 in shape:
        return 0
    n = itemsize
    for s in shape:
        n *= s
        if n > MAX_TENSOR_BYTES:
            break
    return n


def loads_json(text: str):
    """`json.loads` of untrusted text. Raises ValueError (JSONDecodeError included) on malformed or
    over-large documents and RecursionError on absurd nesting; callers turn both into their own error."""
    if text.count("[") + text.count("{") > MAX_JSON_CONTAINERS:  # brackets inside strings count here too
        bare = _JSON_STRING.sub("", text)
        if bare.count("[") + bare.count("{") > MAX_JSON_CONTAINERS:
            raise ValueError(f"more than {MAX_JSON_CONTAINERS} JSON arrays and objects")
    return json.loads(text)


def read_header(path: str | Path, error: type[SSAEError] = SSAEError) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """The tensor table and string metadata of a safetensors file, validated; raises `error` on any defect."""
    path = Path(path)
    what = f"{path.name}"
    fix = "the file is damaged or not a .safetensors file; download or write it again"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise error(f"{what} is too short to be a safetensors file ({size} bytes): {fix}")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or n > size - 8:
                raise error(f"{what} declares a {n}-byte header in a {size}-byte file: {fix}")
            raw = f.read(n)
    except SSAEError:
        raise
    except (OSError, ValueError) as e:  # ValueError: a path with a NUL byte
        raise error(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from e
    try:
        header = loads_json(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise error(f"{what} has an unreadable header ({e.__class__.__name__}): {fix}") from e
    if not isinstance(header, dict):
        raise error(f"{what} has a header that is not a JSON object: {fix}")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise error(f"{what} has metadata that is not a string-to-string map: {fix}")
    data_len = size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    spans = []
    for name, t in header.items():
        try:
            dtype, shape, (start, end) = t["dtype"], tuple(t["shape"]), t["data_offsets"]
            ok = isinstance(dtype, str) and dtype in DTYPE_BYTES and all(_is_int(s) and 0 <= s for s in shape) \
                and _is_int(start) and _is_int(end)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise error(f"{what}: tensor {name!r} has a malformed entry in the header: {fix}")
        nbytes = _nbytes(shape, DTYPE_BYTES[dtype])
        if nbytes > MAX_TENSOR_BYTES or not 0 <= start <= end <= data_len or end - start != nbytes:
            raise error(f"{what}: tensor {name!r} of shape {list(shape)} does not fit the file "
                        f"({data_len} data bytes): {fix}")
        tensors[name] = TensorInfo(dtype, shape, start, end)
        spans.append((start, end))
    spans.sort()
    if any(a_end > b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])):
        raise error(f"{what}: tensors overlap in the file: {fix}")
    return tensors, meta


def load_tensors(path: str | Path, names: list[str] | None = None, error: type[SSAEError] = SSAEError,
                 device: str = "cpu") -> dict[str, torch.Tensor]:
    """Tensors of a file whose header `read_header` has accepted."""
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            return {k: f.get_tensor(k) for k in (names if names is not None else f.keys())}
    except Exception as e:  # safetensors raises its own untyped errors on damaged data
        raise error(f"{Path(path).name} could not be read ({e}): the file is damaged; write it again") from e


@contextmanager
def tensor_slices(paths: list[Path], name: str, error: type[SSAEError] = SSAEError) -> Iterator[list]:
    """Slice handles of tensor `name` in each file (whose header `read_header` has accepted), all kept
    open: `handle[:, a:b]` reads only those bytes from the memory-mapped file."""
    with ExitStack() as stack:
        try:
            handles = [stack.enter_context(safe_open(str(p), framework="pt")).get_slice(name) for p in paths]
        except Exception as e:
            raise error(f"could not open {name!r} in {[p.name for p in paths]} ({e}): a file is damaged") from e
        yield handles


def json_meta(meta: dict[str, str], key: str, what: str, error: type[SSAEError], default=...):
    """A metadata value parsed as JSON, with an error naming the key when missing or malformed."""
    if key not in meta:
        if default is not ...:
            return default
        raise error(f"{what} has no {key!r} metadata: it was not written by ssae, or the metadata was stripped")
    try:
        return loads_json(meta[key])
    except (ValueError, RecursionError) as e:
        raise error(f"{what}: metadata {key!r} is not valid JSON ({e})") from e


def atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: str | Path) -> Path:
    """Write a safetensors file so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        _fsync_replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(text: str, path: str | Path) -> Path:
    return atomic_write_bytes(text.encode("utf-8"), path)


def atomic_write_bytes(data: bytes, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _fsync_replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _fsync_replace(tmp: str, path: Path) -> None:
    """Make the temporary file the file at `path`, with the mode a plain open() would give it (mkstemp's
    0600 would hide models and features from a server running as another user)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass  # directories cannot be fsynced on every platform
