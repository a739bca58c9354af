"""Training: fit an SSAE to a feature set, fast by default and paper-faithful as a preset.

`train` stages the rows (`ssae.rows`), builds the objective (`ssae.objectives`), lets the `Trainer` run the
members' epochs, solves the readout (`ssae.readout`) and wraps the result as an `SSAE`. The `Trainer` owns
the optimiser, its schedule, validation, early stopping and the checkpoints (`ssae.checkpoint`).

- gram solver (default): the readout W is the ridge solution for the current code, so the loss depends on
  the data only through the N x N Gram matrix; L-BFGS fits the hidden layer of several members, one after
  another, and the model is their mean (`ssae.model.merge_members`).
- adam solver: W learned by minibatch Adam on the plain MSE, as the reference code (batch 16, lr 1e-3 -> 1e-4).
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .distributed import gather_columns, rank_and_world, rank_columns
from .errors import SSAEError
from .lbfgs import LBFGS
from .model import SupervisedSAE, merge_members
from .objectives import GramFactor, GramObjective, MSEObjective, Objective
from .preprocess import FeatureStats, Preprocessor
from .presets import PRESETS, Recipe, TrainConfig, with_overrides
from .readout import solve_readout, solve_readout_picking_ridge
from .rows import StreamedRows, column_blocks, preprocessed_rows, streams
from .splits import validation_rows
from .ssae_file import SSAE
from .store import FeatureSet

__all__ = ["PRESETS", "Recipe", "TrainConfig", "TrainResult", "Trainer", "Progress", "pick_device", "run_fingerprint",
           "train", "with_overrides"]
log = logging.getLogger(__name__)
Progress = Callable[[int, int, dict], None]
"""progress(epoch, total_epochs, history entry); may raise to cancel (the history is kept). The entry holds
"loss" and "val" (fractions of variance unexplained on the fit and validation rows) and, with several
members, "member" and "ensemble" (the validation loss of the mean of the members so far)."""


@dataclass
class TrainResult:
    ssae: SSAE
    history: list[dict]
    best_epoch: int
    seconds: float
    resumed_epochs: int = 0
    """Epochs a checkpoint already held when this call started (0: a fresh run)."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SSAEError("device 'cuda' asked for but no CUDA GPU is available: use --device cpu or auto")
    return torch.device(name)


def member_seed(seed: int, member: int) -> int:
    """Member 0 draws from `seed` itself, so a one-member run initialises as it always has."""
    return seed if member == 0 else seed * 1_000_003 + member


@dataclass
class Staged:
    """The training rows as the objectives use them: preprocessor, this rank's preprocessed columns Y (held
    or streamed), concept masks, sample ids, and the fit and validation positions."""

    pre: Preprocessor
    Y: torch.Tensor | StreamedRows
    mask: torch.Tensor
    ids: torch.Tensor
    fit: torch.Tensor
    val: torch.Tensor


def stage(data: FeatureSet, rows: torch.Tensor, recipe: Recipe, dev: torch.device, rank: int = 0,
          world: int = 1) -> Staged:
    cfg = recipe.train
    fit, val = validation_rows(data.vocabulary, [data.labels[i] for i in rows.tolist()], cfg.val_fraction, cfg.seed,
                               cfg.validation)
    if streams(cfg.stream, cfg.solver, recipe.preprocess, rows.numel() * data.n_features // world, dev):
        pre = Preprocessor.fit(FeatureStats.from_chunks(x for _, x in data.row_blocks(rows)), recipe.preprocess)
        Y = StreamedRows(data, rows, pre, rank_columns(pre.n_kept, rank, world), dev)
    else:
        pre, Y = preprocessed_rows(data, rows, recipe.preprocess, dev, rank, world)
    return Staged(pre, Y, data.mask(rows).to(dev), torch.arange(rows.numel(), device=dev), fit.to(dev), val.to(dev))


def train(data: FeatureSet, recipe: Recipe = Recipe(), split: str = "train", progress: Progress | None = None,
          checkpoint: str | Path | None = None) -> TrainResult:
    """Fit an SSAE on one split of a feature set. With `checkpoint`, an interrupted run resumes from it."""
    t0 = time.perf_counter()
    cfg = recipe.train
    rank, world = rank_and_world()
    dev = pick_device(cfg.device)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", torch.cuda.current_device())
    torch.manual_seed(cfg.seed)
    rows = data.indices(split)
    s = stage(data, rows, recipe, dev, rank, world)
    counts = _concept_counts(data.vocabulary, s.mask)
    model_cfg = recipe.model_config(data.vocabulary.n_concepts, s.pre.n_kept, rows.numel())
    local_cfg = replace(model_cfg, n_features=s.Y.shape[1])  # this rank's feature columns
    solved = cfg.solver == "gram" or cfg.warm_start  # the readout is solved, so its random draw is skipped

    # several members are merged into a new model with the one readout, so theirs are one-column stand-ins
    member_cfg = replace(local_cfg, n_features=1) if cfg.members > 1 else local_cfg

    def new_member(e: int) -> SupervisedSAE:
        gen = torch.Generator().manual_seed(member_seed(cfg.seed, e))
        m = SupervisedSAE(member_cfg, gen, random_readout=not solved).to(dev)
        if model_cfg.code == "concept" and not cfg.train_code:  # every slot 1: the code is the concept weights
            m.embed.requires_grad_(False).fill_(1.0)  # (leaky_relu(1) = relu(1) = 1)
        return m

    trainer = Trainer(cfg, progress if rank == 0 else None, checkpoint, run_fingerprint(data, recipe, split, world),
                      writer=rank == 0)
    fit_model = {"gram": _fit_gram, "adam": _fit_adam, "mean": _fit_mean}[cfg.solver]
    model, chosen_ridge = fit_model(s, cfg, trainer, new_member)
    model.finalize_sample_codes(s.mask[s.fit], s.ids[s.fit])
    if world > 1:  # every rank holds a slice of the readout's columns: make the model whole
        n = s.pre.n_kept
        full = SupervisedSAE(replace(model.cfg, n_features=n), random_readout=False).to(dev)
        state = model.state_dict()
        state["W"], state["b"] = gather_columns(state["W"], n), gather_columns(state["b"], n)
        full.load_state_dict(state)
        model = full
    history = trainer.history
    best_epoch = trainer.best_epochs[-1] if trainer.best_epochs and trainer.best_epochs[-1] is not None \
        else len(history)
    training = recipe.to_dict() | {"split": split, "n_train": rows.numel()}
    if chosen_ridge is not None:
        training["chosen_ridge"] = chosen_ridge
    info = {"training": training, "history": history, "best_epoch": best_epoch, "concept_counts": counts}
    if len(trainer.best_epochs) > 1:
        info["best_epochs"] = trainer.best_epochs
    ssae = SSAE(model.cpu(), s.pre, data.vocabulary, data.site, data.feature_shape, info).compact()  # as saved
    return TrainResult(ssae, history, best_epoch, time.perf_counter() - t0, trainer.resumed_epochs)


def _trainable(model: SupervisedSAE, solved_readout: bool) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad and not (solved_readout and n in ("W", "b"))]


def _fit_gram(s: Staged, cfg: TrainConfig, trainer: Trainer, new_member: Callable[[int], SupervisedSAE]):
    """The gram solver: members fitted on the Gram objective, then the readout solved on the training rows
    (or picked from `ridge_grid` on the validation rows). Returns (model, the penalty picked or None)."""
    first = new_member(0)
    trained = _trainable(first, True)
    members = [first]
    if cfg.epochs and trained:  # with no epochs (the additive preset) only the readout solve is needed
        objective = GramObjective(GramFactor(s.Y, s.pre.n_kept, s.fit, s.val, cfg.energy), s.mask, s.ids, cfg.ridge)
        members = trainer.run(objective, new_member, trained, cfg.members, first=first)
    if cfg.ridge_grid and s.val.numel() and cfg.members == 1 and first.cfg.code == "concept":
        chosen = solve_readout_picking_ridge(first, s.Y, s.pre.n_kept, s.mask, s.ids, s.fit, s.val, cfg.ridge_grid)
        return first, chosen
    # refitted on every training row that has a trained code: all of them, or the fit rows of a 'sample'
    # model (the validation rows' own codes are never trained)
    rows = s.fit if first.cfg.code == "sample" else s.ids
    model = merge_members(members, s.Y.shape[1])
    solve_readout(members, model, s.Y, s.mask, s.ids, rows, cfg.ridge)
    return model, None


def _fit_adam(s: Staged, cfg: TrainConfig, trainer: Trainer, new_member: Callable[[int], SupervisedSAE]):
    """The adam solver: one model, its readout learned with the rest (started at the ridge solution when
    warm_start). Returns (model, None)."""
    model = new_member(0)
    if cfg.warm_start:
        solve_readout([model], model, s.Y, s.mask, s.ids, s.fit, cfg.ridge)
    objective = MSEObjective(s.Y, s.mask, s.ids, s.fit, s.val, cfg.batch_size, cfg.amp)
    return trainer.run(objective, new_member, _trainable(model, False), 1, first=model)[0], None


@torch.no_grad()
def _fit_mean(s: Staged, cfg: TrainConfig, trainer: Trainer, new_member: Callable[[int], SupervisedSAE],
              chunk: int = 1 << 15):
    """The mean solver (the mean-difference baseline): b is the mean of the training rows and W's row of a
    concept the mean of the rows that have it minus b; nothing is optimised. Returns (model, None)."""
    model = new_member(0)
    m = s.mask.float()
    per_concept = m.T / m.sum(0).clamp_min(1)[:, None]  # [K, n]: each concept's mean over its rows
    for a, Yc in column_blocks(s.Y, chunk):
        mean = Yc.mean(0)
        model.W[:, a:a + Yc.shape[1]] = per_concept @ Yc - mean
        model.b[a:a + Yc.shape[1]] = mean
    return model, None


def _concept_counts(vocabulary, mask: torch.Tensor) -> dict[str, int]:
    """Training samples per concept, with a warning for the two cases a supervised code cannot learn: a
    concept in no sample (untrained slot; compose and edit refuse it) and one in every sample (its effect
    cannot be told apart from the bias, so edits that add or remove it are unreliable)."""
    counts = dict(zip(vocabulary.concepts, mask.sum(0).long().tolist()))
    n = mask.shape[0]
    for names, kind in (([c for c, k in counts.items() if k == 0], "in no training sample (untrained)"),
                        ([c for c, k in counts.items() if k == n], "in every training sample (not separable)")):
        if names:
            log.warning("concepts %s: %s", kind, ", ".join(names))
    return counts


def run_fingerprint(data: FeatureSet, recipe: Recipe, split: str = "train", world: int = 1) -> str:
    """What a checkpoint must share with the run that resumes it: the recipe (device and save cadence may
    differ), the split's rows and labels, and the shard files themselves (name, size, modification time), so
    that a feature set appended to or rewritten since gives another run. Naming a checkpoint by it (as
    SSAETrain does) starts a fresh run on changed data and resumes on unchanged data."""
    settings = recipe.to_dict()
    for k in ("device", "amp", "checkpoint_every", "stream"):
        settings["train"].pop(k)
    shards = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in data.shards]
    h = hashlib.sha256(json.dumps([settings, data.site, data.n_features, len(data), data.indices(split).tolist(),
                                   data.labels, shards, world]).encode())
    return h.hexdigest()[:16]


class Trainer:
    """Runs the epochs of one member after another: owns the optimiser and its schedule, validation (of each
    member and of the members' mean), early stopping and the checkpoints (written by `writer` only, read by
    every rank). After `run`, `history` holds every epoch and `best_epochs` each member's best epoch."""

    def __init__(self, cfg: TrainConfig, progress: Progress | None, checkpoint: str | Path | None, fingerprint: str,
                 writer: bool = True):
        self.cfg, self.progress, self.path, self.fingerprint = cfg, progress, checkpoint, fingerprint
        self.saving = bool(checkpoint) and writer
        self.history: list[dict] = []
        self.best_epochs: list[int | None] = []
        self.resumed_epochs = 0

    def optimizer(self, params: list[torch.nn.Parameter]) -> LBFGS | torch.optim.Adam:
        """L-BFGS for the gram solver's full-batch objective (unless Adam is asked for), else Adam."""
        if self.cfg.solver == "gram" and self.cfg.optimizer == "lbfgs":
            return LBFGS(params, max_iter=self.cfg.lbfgs_steps)
        return torch.optim.Adam(params, lr=self.cfg.lr)

    def lr(self, epoch: int) -> float:
        """Adam's learning rate in a member's epoch: linear from lr to lr_end."""
        cfg = self.cfg
        return cfg.lr + (cfg.lr_end - cfg.lr) * epoch / max(cfg.epochs - 1, 1)

    def run(self, objective: Objective, new_member: Callable[[int], SupervisedSAE], trained: list[str],
            n_members: int, first: SupervisedSAE | None = None) -> list[SupervisedSAE]:
        """Train `n_members` models built by `new_member(e)` (`first` is member 0 when given) and return each
        at its best epoch."""
        st = ckpt.RunState()
        if self.path and Path(self.path).exists():
            st = ckpt.load(self.path, self.fingerprint)
            self.resumed_epochs = st.epoch
            log.info("resuming from %s at epoch %d (member %d)", self.path, st.epoch, st.member)
        self.history = st.history
        members: list[SupervisedSAE] = []
        val_sum = None  # the finished members' validation predictions, summed
        try:
            for e in range(n_members):
                model = first if e == 0 and first is not None else new_member(e)
                kept = set(trained) | {n for n, _ in model.named_buffers()}
                if e < len(st.members):  # finished before the interruption
                    model.load_state_dict(st.members[e], strict=False)
                    best = self._best_epoch(e)
                else:
                    best = self._fit_member(objective, model, e, n_members, trained, kept, st, val_sum)
                    if self.saving:
                        st.members.append(_snapshot(model, kept))
                        st.member, st.model, st.optim, st.best = e + 1, None, None, None
                self.best_epochs.append(best)
                members.append(model)
                pred = objective.val_prediction(model)
                if pred is not None:
                    val_sum = pred if val_sum is None else val_sum + pred
        except BaseException:
            if self.saving and st.history:  # cancelled or crashed: keep the loss history and the last epoch
                ckpt.save(self.path, replace(st, history=st.history[: st.epoch]), self.fingerprint)
            raise
        if self.saving:
            ckpt.save(self.path, st, self.fingerprint)
        return members

    def _best_epoch(self, member: int) -> int | None:
        own = [h for h in self.history if h.get("member", 0) == member and h["val"] is not None]
        return min(own, key=lambda h: h["val"])["epoch"] if own else None

    def _fit_member(self, objective: Objective, model: SupervisedSAE, e: int, n_members: int, trained: list[str],
                    kept: set[str], st: ckpt.RunState, val_sum: torch.Tensor | None) -> int | None:
        """Epochs of member e from where `st` stands; leaves the model at its best epoch, returns that epoch."""
        cfg = self.cfg
        named = dict(model.named_parameters())
        opt = self.optimizer([named[n] for n in trained])
        adam = isinstance(opt, torch.optim.Adam)
        best = None
        if e == st.member and st.model:  # resume inside this member
            model.load_state_dict(st.model, strict=False)
            state = {"state": st.optim["state"]}
            if isinstance(opt, torch.optim.Optimizer):
                state["param_groups"] = opt.state_dict()["param_groups"]
            opt.load_state_dict(state)
            best = st.best
        own = [h for h in self.history if h.get("member", 0) == e]
        ref, stale = None, 0  # early stopping: epochs since the validation loss last beat `ref` by min_delta
        for h in own:
            ref, stale = _stopping(h["val"], ref, stale, cfg.min_delta)
        for epoch in range(len(own), cfg.epochs):
            if cfg.patience and stale >= cfg.patience:
                break
            lr = self.lr(epoch) if adam else None  # L-BFGS has no learning rate: its line search sets each step
            if adam:
                for g in opt.param_groups:
                    g["lr"] = lr
            total = 0.0
            for pos in objective.batches(epoch):
                def closure(pos=pos):
                    model.zero_grad(set_to_none=True)
                    loss = objective.loss(model, pos)
                    loss.backward()
                    objective.reduce_grads(model)
                    return loss
                total += objective.reduce_loss(opt.step(closure).detach()) * pos.numel()
            loss = total / objective.fit.numel()
            if not (loss == loss) or loss == float("inf"):
                fix = ("lower the learning rate (lr)" if adam else "check the features for extreme values, or train "
                       "with optimizer 'adam' and a small learning rate")
                raise SSAEError(f"training diverged at epoch {len(self.history)} (loss {loss}): {fix}")
            pred = objective.val_prediction(model)
            val = None if pred is None else objective.val_error(pred)
            entry = {"epoch": len(self.history), "loss": loss, "val": val, "lr": lr}
            if n_members > 1:
                entry["member"] = e
                entry["ensemble"] = None if pred is None else objective.val_error(
                    (pred if val_sum is None else val_sum + pred) / (e + 1))
            self.history.append(entry)
            if val is not None:
                if best is None or val < best["score"]:
                    best = {"epoch": entry["epoch"], "score": val, "state": _snapshot(model, kept)}
                ref, stale = _stopping(val, ref, stale, cfg.min_delta)
            if self.saving:
                st.epoch, st.member, st.history = len(self.history), e, self.history
                st.model, st.optim, st.best = _snapshot(model, kept), copy.deepcopy(opt.state_dict()), best
                if st.epoch % cfg.checkpoint_every == 0:
                    ckpt.save(self.path, st, self.fingerprint)
            if self.progress:
                self.progress(len(self.history), n_members * cfg.epochs, entry)
        if best is not None:
            model.load_state_dict(best["state"], strict=False)
            return best["epoch"]
        return None


def _stopping(val: float | None, ref: float | None, stale: int, min_delta: float) -> tuple[float | None, int]:
    """Early stopping's count after one more epoch: reset when `val` beats `ref` by the fraction min_delta."""
    if val is None:
        return ref, stale
    if ref is None or val < ref * (1 - min_delta):
        return val, 0
    return ref, stale + 1


def _snapshot(model: SupervisedSAE, kept: set[str]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in kept}
