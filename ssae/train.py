"""Training: fit an SSAE to a feature set, fast by default and paper-faithful as a preset.

Two solvers share one epoch loop (Adam, linear lr decay, validation, early stopping, checkpoints):
- "gram" (default): the readout W is the ridge solution given the code, so the loss depends on the
  data only through the N x N Gram matrix. Each step costs O(N^2 P), independent of the feature size F;
  F enters once, in one chunked pass for the Gram matrix and one for the final readout.
- "adam": W learned by minibatch Adam on the plain MSE, as the reference code (batch 16, lr 1e-3 -> 1e-4).
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from .distributed import all_reduce_sum, column_range, gather_columns, rank_and_world
from .errors import SSAEError
from .model import ModelConfig, SupervisedSAE
from .preprocess import FeatureStats, PreprocessConfig, Preprocessor
from .safefile import atomic_save, load_tensors, read_header
from .ssae_file import SSAE
from .store import FeatureSet

log = logging.getLogger(__name__)
Progress = Callable[[int, int, dict], None]
"""progress(epoch, total_epochs, {"loss": ..., "val": ...}); may raise to cancel (history is kept)."""


@dataclass(frozen=True)
class TrainConfig:
    """How to fit; stored in the SSAE file as `ssae.training`."""

    solver: Literal["gram", "adam"] = "gram"
    epochs: int = 300
    batch_size: int | None = None
    """adam solver: samples per step, in order (the paper: 16); None = full batch."""
    lr: float = 3e-2
    lr_end: float = 3e-3
    """Learning rate decays linearly per epoch from lr to lr_end (the paper: 1e-3 -> 1e-4)."""
    ridge: float = 0.1
    """Ridge penalty of the solved readout, relative to the mean squared norm of the basis."""
    val_fraction: float = 0.1
    """Share of the training rows held back for early stopping (0: none)."""
    patience: int = 40
    """Stop after this many epochs without a better validation loss (0: never)."""
    warm_start: bool = True
    """adam solver: start W, b at their ridge solution instead of random."""
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    """bf16 autocast for the adam solver on CUDA."""
    checkpoint_every: int = 25
    stream: bool | None = None
    """gram solver: read the training rows from the shards one column block per pass instead of holding
    them (memory then holds the [n, n] Gram matrix and the readout, not the [n, F] features; three reads
    of the data instead of one). None: stream when the rows would fill more than half the free memory."""

    def __post_init__(self) -> None:
        if self.solver not in ("gram", "adam"):
            raise SSAEError(f"unknown solver {self.solver!r}: use 'gram' or 'adam'")
        if self.epochs < 0 or (self.batch_size is not None and self.batch_size < 1) or not 0 <= self.val_fraction < 1:
            raise SSAEError(f"invalid training settings: epochs={self.epochs}, batch_size={self.batch_size}, "
                            f"val_fraction={self.val_fraction}")


@dataclass(frozen=True)
class Recipe:
    """Everything that defines a training run apart from the data: decoder, preprocessing, fitting."""

    d: int = 10
    code: Literal["concept", "sample"] = "concept"
    activation: Literal["leaky_relu", "relu"] = "leaky_relu"
    decoder: Literal["linear", "mlp"] = "mlp"
    hidden: int = 256
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def model_config(self, n_concepts: int, n_features: int, n_samples: int) -> ModelConfig:
        return ModelConfig(n_concepts, n_features, self.d, self.code, self.activation, self.decoder, self.hidden,
                           n_samples if self.code == "sample" else 0)

    def to_dict(self) -> dict:
        return asdict(self)


_PAPER_LOOP = TrainConfig(solver="adam", epochs=100, batch_size=16, lr=1e-3, lr_end=1e-4, warm_start=False,
                          patience=0, amp=False)
PRESETS: dict[str, Recipe] = {
    "default": Recipe(),
    "additive": Recipe(decoder="linear", train=TrainConfig(epochs=0)),
    "paper": Recipe(decoder="linear", preprocess=PreprocessConfig(top_k=1000, scale="minmax"), train=_PAPER_LOOP),
    "paper-trainable": Recipe(code="sample", activation="relu", decoder="linear",
                              preprocess=PreprocessConfig(top_k=1000, scale="minmax"), train=_PAPER_LOOP),
    "paper-ils": Recipe(code="sample", activation="relu", decoder="linear",
                        preprocess=PreprocessConfig(top_k=1000, scale="minmax"),
                        train=TrainConfig(solver="gram", lr=1e-3, lr_end=1e-4, epochs=100, patience=0)),
}
"""default: mlp decoder, gram solver, all dimensions standardised. additive: the closed-form linear
decoder. paper*: the three variants of the reference code with its loop and preprocessing."""


@dataclass
class TrainResult:
    ssae: SSAE
    history: list[dict]
    best_epoch: int
    seconds: float


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SSAEError("device 'cuda' asked for but no CUDA GPU is available: use --device cpu or auto")
    return torch.device(name)


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
    fit_pos, val_pos = _holdout(rows.numel(), cfg.val_fraction, cfg.seed)
    if _streams(cfg, recipe.preprocess, rows.numel() * data.n_features // world, dev):
        pre = Preprocessor.fit(FeatureStats.from_chunks(x for _, x in data.row_blocks(rows)), recipe.preprocess)
        Y = _StreamedRows(data, rows, pre, column_range(pre.n_kept, rank, world), dev)
    else:
        pre, Y = _preprocessed_rows(data, rows, recipe.preprocess, dev, rank, world)
    mask = data.mask(rows).to(dev)
    counts = _concept_counts(data.vocabulary, mask)
    ids = torch.arange(rows.numel(), device=dev)
    gen = torch.Generator().manual_seed(cfg.seed)
    model_cfg = recipe.model_config(data.vocabulary.n_concepts, pre.n_kept, rows.numel())
    solved = cfg.solver == "gram" or cfg.warm_start  # the readout is solved, so its random draw is skipped
    model = SupervisedSAE(replace(model_cfg, n_features=Y.shape[1]), gen, random_readout=not solved).to(dev)
    fit_pos, val_pos = fit_pos.to(dev), val_pos.to(dev)

    if cfg.solver == "gram":  # with no epochs (the additive preset) only the final readout solve is needed
        objective = _GramObjective(Y, mask, ids, fit_pos, val_pos, cfg.ridge) if cfg.epochs else None
        trained = [n for n, _ in model.named_parameters() if n not in ("W", "b")]  # the readout is solved
    else:
        objective = _MSEObjective(Y, mask, ids, fit_pos, val_pos, cfg)
        if cfg.warm_start:
            _solve_readout(model, Y, mask, ids, fit_pos, cfg.ridge)
        trained = [n for n, _ in model.named_parameters()]
    history, best = [], None
    if objective is not None:
        history, best = _epoch_loop(model, trained, objective, cfg, progress if rank == 0 else None, checkpoint,
                                    _fingerprint(data, rows, recipe, world), writer=rank == 0)
    if best is not None:
        model.load_state_dict(best["state"], strict=False)
    if cfg.solver == "gram":  # refit the readout on every training row, validation rows included
        _solve_readout(model, Y, mask, ids, None, cfg.ridge)
    model.finalize_sample_codes(mask)
    if world > 1:  # every rank holds a slice of the readout's columns: make the model whole
        full = SupervisedSAE(model_cfg).to(dev)
        state = model.state_dict()
        state["W"], state["b"] = gather_columns(state["W"], pre.n_kept), gather_columns(state["b"], pre.n_kept)
        full.load_state_dict(state)
        model = full
    info = {"training": recipe.to_dict() | {"split": split, "n_train": rows.numel()},
            "history": history, "best_epoch": best["epoch"] if best else len(history), "concept_counts": counts}
    ssae = SSAE(model.cpu(), pre, data.vocabulary, data.site, data.feature_shape, info)
    return TrainResult(ssae, history, info["best_epoch"], time.perf_counter() - t0)


# -- data -------------------------------------------------------------------------------------

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


def _holdout(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit and validation positions; validation only when there are enough rows for it."""
    n_val = int(n * fraction)
    if n_val < 1 or n - n_val < 2:
        return torch.arange(n), torch.arange(0)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _preprocessed_rows(data: FeatureSet, rows: torch.Tensor, config: PreprocessConfig, dev: torch.device,
                       rank: int, world: int) -> tuple[Preprocessor, torch.Tensor]:
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
    a, b = column_range(pre.n_kept, rank, world)
    Y = torch.empty(rows.numel(), b - a, device=dev)
    for sel, x in data.row_blocks(rows):
        Y[sel.to(dev)] = pre.transform(x.to(dev))[:, a:b]
    return pre, Y


class _StreamedRows:
    """The preprocessed [n, F] training rows, read from the shards one block of columns at a time: what
    the gram solver uses in place of an in-memory Y when the rows do not fit (see `_column_blocks`)."""

    def __init__(self, data: FeatureSet, rows: torch.Tensor, pre: Preprocessor, cols: tuple[int, int],
                 dev: torch.device):
        self.data, self.rows, self.pre, self.cols, self.device = data, rows, pre, cols, dev
        self.shape = (rows.numel(), cols[1] - cols[0])

    def blocks(self, chunk: int) -> Iterator[tuple[int, torch.Tensor]]:
        for a, x in self.data.column_blocks(self.rows, chunk, self.cols):
            yield a - self.cols[0], self.pre.transform_(x.to(self.device), a)


def _column_blocks(Y: torch.Tensor | _StreamedRows, chunk: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(first column, Y[:, a:a + chunk]) over the training rows, held in memory or streamed."""
    if isinstance(Y, _StreamedRows):
        yield from Y.blocks(chunk)
        return
    for a in range(0, Y.shape[1], chunk):
        yield a, Y[:, a:a + chunk]


def _streams(cfg: TrainConfig, preprocess: PreprocessConfig, n_values: int, dev: torch.device) -> bool:
    """Whether to stream the training rows: as asked, or when they would fill half the free memory."""
    if cfg.stream and (cfg.solver != "gram" or preprocess.top_k is not None):
        raise SSAEError("streaming needs the gram solver on all columns (a top-k selection fits in memory): "
                        "use the default preset, or drop --stream")
    if cfg.stream is not None:
        return cfg.stream
    if cfg.solver != "gram" or preprocess.top_k is not None:
        return False
    return n_values * 4 > _free_memory(dev) // 2


def _free_memory(dev: torch.device) -> int:
    """Bytes free on the device (MemAvailable for the CPU on Linux; unbounded where it is unknown)."""
    if dev.type == "cuda":
        return torch.cuda.mem_get_info(dev)[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return 1 << 62


def _fingerprint(data: FeatureSet, rows: torch.Tensor, recipe: Recipe, world: int) -> str:
    """What a checkpoint must share with the run that resumes it (device and save cadence may differ)."""
    settings = recipe.to_dict()
    for k in ("device", "amp", "checkpoint_every", "stream"):
        settings["train"].pop(k)
    h = hashlib.sha256(json.dumps([settings, data.site, data.n_features, len(data), rows.tolist(),
                                   data.labels, world]).encode())
    return h.hexdigest()[:16]


# -- objectives -------------------------------------------------------------------------------

def _basis(model: SupervisedSAE, mask, ids) -> torch.Tensor:
    return model.basis(model.code(mask, ids))


def _ridge_factor(H: torch.Tensor, ridge: float) -> torch.Tensor:
    """(H^T H + lambda I)^-1 H^T for centred H, lambda relative to the mean squared column norm."""
    B = H.T @ H
    lam = ridge * B.diagonal().mean().clamp(min=1e-12) + 1e-10
    return torch.linalg.solve(B + lam * torch.eye(B.shape[0], dtype=B.dtype, device=B.device), H.T)


@torch.no_grad()
def _solve_readout(model: SupervisedSAE, Y, mask, ids, pos: torch.Tensor | None, ridge: float,
                   chunk: int = 1 << 16) -> None:
    """Set W, b to the ridge solution on rows `pos` (all rows if None), streaming over feature columns."""
    pos = torch.arange(Y.shape[0], device=Y.device) if pos is None else pos
    H = _basis(model, mask[pos], ids[pos]).double()
    h_mean = H.mean(0)
    R = _ridge_factor(H - h_mean, ridge).float()  # [P, n]
    for a, Yc in _column_blocks(Y, chunk):
        Yc = Yc[pos]
        y_mean = Yc.mean(0)
        model.W[:, a:a + chunk] = R @ (Yc - y_mean)
        model.b[a:a + chunk] = y_mean - h_mean.float() @ model.W[:, a:a + chunk]


class _GramObjective:
    """Loss of the best ridge readout for the current code, from the Gram matrix alone.

    With centred targets Yc and basis Hc on the fit rows T, W = A Hc_T^T Yc_T, A = (B + lambda I)^-1,
    B = Hc_T^T Hc_T, S = Hc_T^T G_TT Hc_T:  SSE_T = tr G_TT - 2 tr(A S) + tr(A S A B); the validation
    SSE likewise with G_TV and G_VV (A B = I - lambda A shortens the first). Values are fractions of variance unexplained. G is kept as a
    factor L with G ~ L L^T (eigenvalues up to 1 - 1e-4 of the energy), so a step costs O(N r P).
    """

    def __init__(self, Y, mask, ids, fit, val, ridge: float, chunk: int = 1 << 15, energy: float = 1 - 1e-4):
        self.mask, self.ids, self.fit, self.val, self.ridge = mask, ids, fit, val, ridge
        G = torch.zeros(Y.shape[0], Y.shape[0], dtype=torch.float64, device=Y.device)
        for _, c in _column_blocks(Y, chunk):
            G += (c @ c.T).double()
        p = torch.zeros(Y.shape[0], dtype=torch.float64, device=Y.device)
        p[fit] = 1.0 / fit.numel()
        C = torch.eye(Y.shape[0], dtype=torch.float64, device=Y.device) - p  # rows minus the fit mean
        G = C @ all_reduce_sum(G) @ C.T  # under torchrun each rank summed its own feature columns
        self.tr_fit = G.diagonal()[fit].sum()
        self.tr_val = G.diagonal()[val].sum() if val.numel() else None
        lam, U = torch.linalg.eigh(G)
        lam, U = lam.flip(0).clamp(min=0), U.flip(1)
        r = int((lam.cumsum(0) < energy * lam.sum()).sum()) + 1
        L = U[:, :r] * lam[:r].sqrt()
        self.L_fit, self.L_val = L[fit], L[val]

    def __call__(self, model: SupervisedSAE) -> tuple[torch.Tensor, float | None]:
        H = _basis(model, self.mask, self.ids).double()
        H = H - H[self.fit].mean(0)
        Ht = H[self.fit]
        B = Ht.T @ Ht
        lam = self.ridge * B.diagonal().mean().clamp(min=1e-12) + 1e-10
        A = torch.cholesky_inverse(torch.linalg.cholesky(B + lam * torch.eye(B.shape[0], dtype=B.dtype,
                                                                             device=B.device)))
        M = self.L_fit.T @ Ht  # [r, P]
        S = M.T @ M
        AS = A @ S
        # A B = I - lam A, so tr(A S A B) = tr(A S) - lam tr(A S A): SSE = tr G - tr(A S) - lam <A S, A>
        loss = (self.tr_fit - AS.trace() - lam * (AS * A).sum()) / self.tr_fit
        val = None
        if self.tr_val is not None:
            with torch.no_grad():
                Hv = H[self.val]
                cross = ((self.L_val.T @ Hv) @ A @ M.T).trace()
                quad = ((Hv @ A) @ S * (Hv @ A)).sum()
                val = float((self.tr_val - 2 * cross + quad) / self.tr_val)
        return loss.float(), val


class _MSEObjective:
    """Plain MSE with an explicit readout, over minibatches of the fit rows in order (the reference loop).

    Under torchrun each rank holds a slice of the feature columns and of W, b: its loss is its columns'
    share, so the code and MLP gradients are summed across ranks (`reduce_grads`) and every rank takes
    the step one process would; Adam is elementwise, so the readout slices follow suit."""

    def __init__(self, Y, mask, ids, fit, val, cfg: TrainConfig):
        self.Y, self.mask, self.ids, self.fit, self.val, self.cfg = Y, mask, ids, fit, val, cfg
        self.var_fit = all_reduce_sum(((Y[fit] - Y[fit].mean(0)) ** 2).sum(1).mean())
        self.var_val = all_reduce_sum(((Y[val] - Y[val].mean(0)) ** 2).sum(1).mean()) if val.numel() else None

    @staticmethod
    def reduce_grads(model: SupervisedSAE) -> None:
        """Sum the shared parameters' gradients over the ranks (a no-op in one process)."""
        for name, p in model.named_parameters():
            if name not in ("W", "b") and p.grad is not None:
                all_reduce_sum(p.grad)

    def batches(self, epoch: int) -> list[torch.Tensor]:
        bs = self.cfg.batch_size or self.fit.numel()
        return list(self.fit.split(bs))

    def loss(self, model: SupervisedSAE, pos: torch.Tensor) -> torch.Tensor:
        amp = self.cfg.amp and self.Y.is_cuda
        with torch.autocast("cuda", torch.bfloat16, enabled=amp):
            pred = model(self.mask[pos], self.ids[pos])
        return ((pred.float() - self.Y[pos]) ** 2).sum(1).mean() / self.var_fit

    @torch.no_grad()
    def validate(self, model: SupervisedSAE) -> float | None:
        if self.var_val is None:
            return None
        err = torch.cat([((model(self.mask[p], self.ids[p]) - self.Y[p]) ** 2).sum(1) for p in self.val.split(4096)])
        return float(all_reduce_sum(err.mean()) / self.var_val)


# -- the loop ---------------------------------------------------------------------------------

def _epoch_loop(model, trained: list[str], objective, cfg: TrainConfig, progress: Progress | None,
                checkpoint: str | Path | None, fingerprint: str, writer: bool = True) -> tuple[list[dict], dict | None]:
    """Adam epochs with linear lr decay, best-on-validation tracking, early stopping and checkpoints
    (written by `writer` only, read by everyone)."""
    named = dict(model.named_parameters())
    opt = torch.optim.Adam([named[n] for n in trained], lr=cfg.lr)
    kept = set(trained) | {n for n, _ in model.named_buffers()}
    snapshot = lambda: {k: v.detach().clone() for k, v in model.state_dict().items() if k in kept}
    history: list[dict] = []
    best: dict | None = None
    start = 0
    if checkpoint and Path(checkpoint).exists():
        start, history, best = _load_checkpoint(checkpoint, model, opt, fingerprint)
        log.info("resuming from %s at epoch %d", checkpoint, start)
    stale = 0 if best is None else len(history) - 1 - best["epoch"]
    saving = bool(checkpoint) and writer
    # the state after the last completed epoch: what an interrupt mid-epoch saves, so a resume repeats nothing
    done = (start, snapshot(), copy.deepcopy(opt.state_dict())) if saving else None
    try:
        for epoch in range(start, cfg.epochs):
            if cfg.patience and stale >= cfg.patience:
                break
            lr = cfg.lr + (cfg.lr_end - cfg.lr) * epoch / max(cfg.epochs - 1, 1)
            for g in opt.param_groups:
                g["lr"] = lr
            model.train()
            if isinstance(objective, _GramObjective):
                opt.zero_grad(set_to_none=True)
                loss, val = objective(model)
                loss.backward()
                opt.step()
                train_loss = loss.item()
            else:
                total = 0.0
                for pos in objective.batches(epoch):
                    opt.zero_grad(set_to_none=True)
                    loss = objective.loss(model, pos)
                    loss.backward()
                    objective.reduce_grads(model)
                    opt.step()
                    total += all_reduce_sum(loss.detach()).item() * pos.numel()
                train_loss, val = total / objective.fit.numel(), objective.validate(model)
            if not (train_loss == train_loss) or train_loss == float("inf"):
                raise SSAEError(f"training diverged at epoch {epoch} (loss {train_loss}): lower the learning rate")
            history.append({"epoch": epoch, "loss": train_loss, "val": val, "lr": lr})
            if val is not None and (best is None or val < best["score"]):
                best = {"epoch": epoch, "score": val, "state": snapshot()}
                stale = 0
            elif val is not None:
                stale += 1
            if saving:
                done = (epoch + 1, snapshot(), copy.deepcopy(opt.state_dict()))
                if (epoch + 1) % cfg.checkpoint_every == 0:
                    _save_checkpoint(checkpoint, *done, history, best, fingerprint)
            if progress:
                progress(epoch + 1, cfg.epochs, history[-1])
    except BaseException:
        if saving and history:  # cancelled or crashed: keep the loss history and the last completed epoch
            _save_checkpoint(checkpoint, *done, history[: done[0]], best, fingerprint)
        raise
    if saving:
        _save_checkpoint(checkpoint, *done, history, best, fingerprint)
    return history, best


def _save_checkpoint(path, epoch: int, model_state: dict, opt_state: dict, history, best, fingerprint: str) -> None:
    t = {f"model.{k}": v for k, v in model_state.items()}
    if best is not None:
        t |= {f"best.{k}": v for k, v in best["state"].items()}
    for i, st in opt_state["state"].items():
        t |= {f"optim.{i}.{k}": v if torch.is_tensor(v) else torch.tensor(v) for k, v in st.items()}
    meta = {"ssae.checkpoint": "1", "epoch": str(epoch), "history": json.dumps(history), "fingerprint": fingerprint,
            "best": json.dumps(None if best is None else {"epoch": best["epoch"], "score": best["score"]})}
    atomic_save(t, meta, path)


def _load_checkpoint(path, model, opt, fingerprint: str):
    _, meta = read_header(path)
    if meta.get("fingerprint") != fingerprint:
        raise SSAEError(f"checkpoint {path} belongs to another run (other data or settings): "
                        "delete it, or give a new checkpoint path")
    t = load_tensors(path)
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")}, strict=False)
    state: dict[int, dict] = {}
    for k, v in t.items():
        if k.startswith("optim."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    b = json.loads(meta["best"])
    best = None if b is None else b | {"state": {k[5:]: v for k, v in t.items() if k.startswith("best.")}}
    return int(meta["epoch"]), json.loads(meta["history"]), best


def with_overrides(recipe: Recipe, **train_overrides) -> Recipe:
    """The recipe with some TrainConfig fields replaced (None values ignored), e.g. device or seed."""
    kept = {k: v for k, v in train_overrides.items() if v is not None}
    return replace(recipe, train=replace(recipe.train, **kept)) if kept else recipe
