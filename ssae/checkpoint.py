"""Training checkpoints: where a run stands, in one safetensors file, so that a resumed run gives the model
an uninterrupted run gives (docs/FORMATS.md).

Tensors: `member.<e>.*` the finished members (their best states), `model.*` the member in training after its
last completed epoch, `best.*` its best state so far, `optim.*` the optimiser's state (Adam's moments, or
L-BFGS's curvature pairs). Metadata: `ssae.checkpoint` (the format), `epoch` (epochs done, all members),
`member`, `history`, `best`, `optim` (the layout of the optimiser's state) and the run's `fingerprint`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import SSAEError
from .safefile import atomic_save, load_tensors, read_header

FORMAT = "2"


@dataclass
class RunState:
    """What a checkpoint holds: everything the trainer needs to go on where it stopped."""

    epoch: int = 0
    member: int = 0
    members: list[dict[str, torch.Tensor]] = field(default_factory=list)
    model: dict[str, torch.Tensor] | None = None
    optim: dict | None = None
    best: dict | None = None
    """{"epoch", "score", "state"} of the member in training."""
    history: list[dict] = field(default_factory=list)


def _flatten_optim(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimiser's state_dict()["state"] as tensors plus a JSON layout (lists of tensors, plain numbers)."""
    tensors, layout = {}, {}
    for i, st in state.items():
        layout[str(i)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{i}.{k}"] = v.detach().clone()
                layout[str(i)][k] = "tensor"
            elif isinstance(v, list):
                for j, t in enumerate(v):
                    tensors[f"optim.{i}.{k}.{j}"] = t.detach().clone()
                layout[str(i)][k] = ["list", len(v)]
            else:
                layout[str(i)][k] = ["value", v]
    return tensors, layout


def _unflatten_optim(t: dict[str, torch.Tensor], layout: dict) -> dict:
    state: dict[int, dict] = {}
    for i, keys in layout.items():
        st = state.setdefault(int(i), {})
        for k, kind in keys.items():
            if kind == "tensor":
                st[k] = t[f"optim.{i}.{k}"]
            elif kind[0] == "list":
                st[k] = [t[f"optim.{i}.{k}.{j}"] for j in range(kind[1])]
            else:
                st[k] = kind[1]
    return state


def save(path: str | Path, p: RunState, fingerprint: str) -> None:
    t = {f"model.{k}": v for k, v in (p.model or {}).items()}
    for e, m in enumerate(p.members):
        t |= {f"member.{e}.{k}": v for k, v in m.items()}
    if p.best is not None:
        t |= {f"best.{k}": v for k, v in p.best["state"].items()}
    optim_t, layout = _flatten_optim(p.optim["state"]) if p.optim else ({}, {})
    t |= optim_t
    meta = {"ssae.checkpoint": FORMAT, "epoch": str(p.epoch), "member": str(p.member),
            "n_members": str(len(p.members)), "history": json.dumps(p.history), "fingerprint": fingerprint,
            "optim": json.dumps(layout),
            "best": json.dumps(None if p.best is None else {"epoch": p.best["epoch"], "score": p.best["score"]})}
    atomic_save(t, meta, path)


def load(path: str | Path, fingerprint: str) -> RunState:
    _, meta = read_header(path)
    if meta.get("ssae.checkpoint") != FORMAT:
        raise SSAEError(f"checkpoint {path} was written by another version of ssae (format "
                        f"{meta.get('ssae.checkpoint')!r}, this one reads {FORMAT!r}): delete it, or give a new "
                        "checkpoint path")
    if meta.get("fingerprint") != fingerprint:
        raise SSAEError(f"checkpoint {path} belongs to another run (other data or settings): "
                        "delete it, or give a new checkpoint path")
    t = load_tensors(path)

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix)}
    b = json.loads(meta["best"])
    return RunState(epoch=int(meta["epoch"]), member=int(meta["member"]),
                    members=[part(f"member.{e}.") for e in range(int(meta["n_members"]))],
                    model=part("model."), optim={"state": _unflatten_optim(t, json.loads(meta["optim"]))},
                    best=None if b is None else b | {"state": part("best.")}, history=json.loads(meta["history"]))
