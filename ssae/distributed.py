"""Multi-process training under torchrun: feature columns are split across ranks.

The gram solver needs the data only through the N x N Gram matrix, a sum over feature columns, so
each rank reads its slice of columns, the ranks' sums make the Gram matrix whole on every rank, the
code and MLP train identically everywhere, and each rank solves its slice of the readout. The adam
solver's loss is a sum over columns too: each rank backpropagates its share and the code and MLP
gradients are summed, so every rank steps as one process would and updates its slice of W, b.

Sums over columns that steer an optimiser (the Gram matrix, the validation terms that pick a ridge
penalty) are `chunked_sum`s: the columns fall into CHUNKS fixed chunks, each summed alone and the chunks
added in order, so the result has the same bits in one process as in any number of them. A plain
all-reduce adds in another order; L-BFGS on a non-convex loss turns that rounding into another model.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

import torch
import torch.distributed as dist


def init_from_env() -> bool:
    """Join the process group torchrun describes (gloo on CPU, NCCL on GPU); False when not under torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def exit_together(code: int) -> NoReturn:
    """End a torchrun worker once every rank is past its last collective, without tearing gloo down.

    gloo's teardown races with its own event-loop thread, both in destroy_process_group and at interpreter
    exit: now and then a rank aborts ("terminate called without an active exception") after the model is
    written, and torchrun reports the run as failed. So every rank marks itself done in the rendezvous
    store and waits for the others (no socket closes while a peer is inside a collective), then leaves
    with os._exit; rank 0, which may host that store, leaves last. Rank 0 may leave as soon as it sees the
    others' last mark, before its store has answered them: a closed connection then means they may go too.
    """
    rank, world = rank_and_world()
    store = dist.distributed_c10d._get_default_store()
    store.add(f"ssae/done/{rank}", 1)  # add, unlike set, waits for the store to answer
    store.wait([f"ssae/done/{r}" for r in range(world)])
    if rank == 0:
        store.wait([f"ssae/left/{r}" for r in range(1, world)])
    else:
        try:
            store.add(f"ssae/left/{rank}", 1)
        except dist.DistNetworkError:  # rank 0 saw the mark and left before the answer came back
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def column_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous slice [a, b) of n columns for one rank; sizes differ by at most one."""
    return rank * n // world, (rank + 1) * n // world


CHUNKS = 8
"""Fixed column chunks of a chunked sum; a rank holds whole chunks, so more processes than this leave some idle."""


def rank_columns(n: int, rank: int, world: int) -> tuple[int, int]:
    """This rank's slice [a, b) of n columns: whole chunks, CHUNKS split as evenly as the ranks allow."""
    first, last = column_range(CHUNKS, rank, world)
    return column_range(n, first, CHUNKS)[0], column_range(n, last, CHUNKS)[0] if last < CHUNKS else n


def chunked_sum(n: int, part: Callable[[int, int], torch.Tensor], shape: tuple[int, ...],
                device: torch.device | str = "cpu") -> torch.Tensor:
    """The float64 sum over all n columns of a quantity of `shape` that adds up over columns, with the same bits
    whatever the number of processes: part(a, b) sums one chunk, given as this rank's local columns a:b (in an
    order of its own that does not depend on the ranks), and the chunks are added in chunk order, after
    gathering every rank's chunk sums under torchrun."""
    rank, world = rank_and_world()
    offset = rank_columns(n, rank, world)[0]
    parts = [part(column_range(n, c, CHUNKS)[0] - offset, column_range(n, c, CHUNKS)[1] - offset).double()
             for c in range(*column_range(CHUNKS, rank, world))]
    if world > 1:
        spans = [column_range(CHUNKS, r, world) for r in range(world)]
        mine = torch.zeros(max(b - a for a, b in spans), *shape, dtype=torch.float64, device=device)
        for i, p in enumerate(parts):
            mine[i] = p
        gathered = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(gathered, mine)
        parts = [g[i] for g, (a, b) in zip(gathered, spans) for i in range(b - a)]
    total = torch.zeros(shape, dtype=torch.float64, device=device)
    for p in parts:
        total += p
    return total


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def gather_columns(local: torch.Tensor, n_total: int) -> torch.Tensor:
    """Concatenate every rank's column slice (last dim) into the full tensor, on every rank."""
    if not dist.is_initialized():
        return local
    world = dist.get_world_size()
    width = max(b - a for a, b in (rank_columns(n_total, r, world) for r in range(world)))
    padded = torch.zeros(*local.shape[:-1], width, dtype=local.dtype, device=local.device)
    padded[..., :local.shape[-1]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[..., : b - a] for p, (a, b) in
                      zip(parts, (rank_columns(n_total, r, world) for r in range(world)))], dim=-1)
