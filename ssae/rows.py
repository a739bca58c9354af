"""The training rows: preprocessed in memory, or streamed from the shards.

Under torchrun each process holds (or streams) only its own slice of the preprocessed feature columns.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch

from .distributed import rank_columns
from .errors import SSAEError
from .preprocess import FeatureStats, PreprocessConfig, Preprocessor
from .store import FeatureSet


def preprocessed_rows(data: FeatureSet, rows: torch.Tensor, config: PreprocessConfig, dev: torch.device,
                      rank: int = 0, world: int = 1) -> tuple[Preprocessor, torch.Tensor]:
    """The preprocessor fitted on `rows` and their preprocessed features [n, this rank's kept columns].

    When every column is kept by one process (the default), the rows are read once and scaled in place;
    otherwise (top-k, or columns split under torchrun) a first pass takes the statistics and a second
    keeps only the needed columns, so that memory never holds all F columns."""
    if config.top_k is None and world == 1:
        Y = torch.empty(rows.numel(), data.n_features, device=dev)

        def kept_blocks():  # each block is copied into Y as the statistics go over it
            for sel, x in data.row_blocks(rows):
                Y[sel.to(dev)] = x.to(dev)
                yield x
        pre = Preprocessor.fit(FeatureStats.from_chunks(kept_blocks()), config)
        return pre, pre.transform_(Y)
    pre = Preprocessor.fit(FeatureStats.from_chunks(x for _, x in data.row_blocks(rows)), config)
    a, b = rank_columns(pre.n_kept, rank, world)
    Y = torch.empty(rows.numel(), b - a, device=dev)
    for sel, x in data.row_blocks(rows):
        Y[sel.to(dev)] = pre.transform(x.to(dev))[:, a:b]
    return pre, Y


class StreamedRows:
    """The preprocessed [n, F] training rows, read from the shards one block of columns at a time: what
    the gram solver uses in place of an in-memory Y when the rows do not fit (see `column_blocks`)."""

    def __init__(self, data: FeatureSet, rows: torch.Tensor, pre: Preprocessor, cols: tuple[int, int],
                 dev: torch.device):
        self.data, self.rows, self.pre, self.cols, self.device = data, rows, pre, cols, dev
        self.shape = (rows.numel(), cols[1] - cols[0])

    def blocks(self, chunk: int, lo: int = 0, hi: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        hi = self.shape[1] if hi is None else hi
        for a, x in self.data.column_blocks(self.rows, chunk, (self.cols[0] + lo, self.cols[0] + hi)):
            yield a - self.cols[0], self.pre.transform_(x.to(self.device), a)


Rows = torch.Tensor | StreamedRows


def column_blocks(Y: Rows, chunk: int = 1 << 15, lo: int = 0, hi: int | None = None) \
        -> Iterator[tuple[int, torch.Tensor]]:
    """(first column, Y[:, a:a + chunk]) over the training rows' columns lo:hi (all by default), in memory or
    streamed; blocks start at lo."""
    hi = Y.shape[1] if hi is None else hi
    if isinstance(Y, StreamedRows):
        yield from Y.blocks(chunk, lo, hi)
        return
    for a in range(lo, hi, chunk):
        yield a, Y[:, a:min(a + chunk, hi)]


def streams(stream: bool | None, solver: str, preprocess: PreprocessConfig, n_values: int, dev: torch.device) -> bool:
    """Whether to stream the training rows: as asked, or when they would fill half the free memory."""
    if stream and (solver == "adam" or preprocess.top_k is not None):
        raise SSAEError("streaming needs the gram or mean solver on all columns (a top-k selection fits in memory): "
                        "use the default preset, or drop --stream")
    if stream is not None:
        return stream
    if solver == "adam" or preprocess.top_k is not None:
        return False
    return n_values * 4 > free_memory(dev) // 2


def free_memory(dev: torch.device) -> int:
    """Bytes free on the device (MemAvailable for the CPU on Linux; unbounded where it is unknown)."""
    if dev.type == "cuda":
        return torch.cuda.mem_get_info(dev)[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return 1 << 62
