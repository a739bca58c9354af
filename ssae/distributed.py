"""Multi-process training under torchrun: feature columns are split across ranks.

The gram solver needs the data only through the N x N Gram matrix, a sum over feature columns, so
each rank reads its slice of columns, one all-reduce makes the Gram matrix whole on every rank, the
code and MLP train identically everywhere, and each rank solves its slice of the readout. The adam
solver's loss is a sum over columns too: each rank backpropagates its share and the code and MLP
gradients are summed, so every rank steps as one process would and updates its slice of W, b.
"""
from __future__ import annotations

import os
import sys
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
    with os._exit; rank 0, which may host that store, leaves last.
    """
    rank, world = rank_and_world()
    store = dist.distributed_c10d._get_default_store()
    store.add(f"ssae/done/{rank}", 1)  # add, unlike set, waits for the store to answer
    store.wait([f"ssae/done/{r}" for r in range(world)])
    if rank == 0:
        store.wait([f"ssae/left/{r}" for r in range(1, world)])
    else:
        store.add(f"ssae/left/{rank}", 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def column_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous slice [a, b) of n columns for one rank; sizes differ by at most one."""
    return rank * n // world, (rank + 1) * n // world


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def gather_columns(local: torch.Tensor, n_total: int) -> torch.Tensor:
    """Concatenate every rank's column slice (last dim) into the full tensor, on every rank."""
    if not dist.is_initialized():
        return local
    world = dist.get_world_size()
    width = max(b - a for a, b in (column_range(n_total, r, world) for r in range(world)))
    padded = torch.zeros(*local.shape[:-1], width, dtype=local.dtype, device=local.device)
    padded[..., :local.shape[-1]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[..., : b - a] for p, (a, b) in
                      zip(parts, (column_range(n_total, r, world) for r in range(world)))], dim=-1)
