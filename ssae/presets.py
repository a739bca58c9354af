"""What a training run fits and how: the configuration dataclasses and the named presets.

A `Recipe` is everything that defines a run apart from the data: the decoder (`DecoderConfig`), the
preprocessing (`PreprocessConfig`) and the fitting (`TrainConfig`). Every config validates its fields on
construction; a recipe stored in a file is read back with `Recipe.from_dict` (unknown keys are ignored
with a warning, see `ssae.config`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from .config import check_bool, check_choice, check_float, check_int, from_dict
from .errors import SSAEError
from .model import DecoderConfig, ModelConfig
from .preprocess import PreprocessConfig

RIDGE_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
"""Relative ridge penalties a readout picks from on the validation rows, which hold concept pairs the fit rows
never show together (see `ssae.ridge`, `ssae.splits.validation_rows`). The grid starts at the penalty of the
additive closed-form baseline (`ssae.baselines.additive_fit`): the additive preset is never less regularised
than that baseline."""


@dataclass(frozen=True)
class TrainConfig:
    """How to fit; stored in the SSAE file as part of `ssae.training`."""

    solver: Literal["gram", "adam", "mean"] = "gram"
    """gram: the readout W is the ridge solution for the current code, so the loss depends on the data only
    through the N x N Gram matrix, and only the code and hidden layer are optimised; adam: W is learned with
    the rest by minibatch Adam on the plain MSE (the reference loop); mean: nothing is fitted, each concept's
    row of W is the mean of its samples minus the mean of all (a steering baseline, no SSAE)."""
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    """gram solver: L-BFGS with a strong Wolfe line search on the full-batch objective (`lbfgs_steps`
    iterations an epoch), or Adam with the linear lr schedule (one step an epoch). The adam solver always
    uses Adam."""
    epochs: int = 12
    """Epochs per member; early stopping may end a member sooner."""
    lbfgs_steps: int = 10
    """L-BFGS iterations in one epoch (validation, progress, checkpoints and early stopping go by epochs)."""
    members: int = 4
    """gram solver, concept codes, mlp decoder: independently initialised models trained one after another
    and averaged into one model whose hidden layer stacks theirs (the mean of their outputs, exactly)."""
    train_code: bool = False
    """Whether the concept code (each concept's slots) is optimised. False keeps every slot at 1, so that the
    code is the concept weights themselves: with the mlp decoder a learned per-concept scale only reweights
    the readout's penalty, and it generalises worse to unseen concept pairs. The paper presets learn it."""
    batch_size: int | None = None
    """adam solver: samples per step, in order (the paper: 16); None = full batch."""
    lr: float = 3e-2
    lr_end: float = 3e-3
    """Adam's learning rate decays linearly per epoch from lr to lr_end (the paper: 1e-3 -> 1e-4)."""
    ridge: float = 3e-3
    """Ridge penalty of the solved readout, relative to the mean squared norm of the basis (`ssae.ridge`); chosen on
    development pairs (benchmarks/README.md)."""
    ridge_grid: tuple[float, ...] | None = None
    """Penalties the final readout picks from by its error on the validation rows (None: `ridge`); one member."""
    val_fraction: float = 0.1
    """Share of the training rows held back for validation (early stopping, a ridge penalty picked from a grid;
    0: none)."""
    validation: Literal["pairs", "combinations"] = "combinations"
    """Which rows validate (`ssae.splits.validation_rows`): pairs, the rows of concept pairs drawn from the training
    rows, so that validation, like the test split, holds mixes the fit rows never show (what the additive preset
    picks its penalty on); combinations, whole combinations drawn at random (what the default's early stopping
    did best with on the development pairs: held-out pairs also take those mixes out of the members' fit). Either
    way every seed of a prompt falls on one side."""
    patience: int = 3
    """Stop a member after this many epochs without a better validation loss (0: never)."""
    min_delta: float = 0.02
    """A validation loss counts as better when it is below the best by this fraction of the best."""
    energy: float = 0.99
    """gram solver: share of the Gram matrix's trace its low-rank factor keeps for the optimised objective
    (the final readout uses every column of the data). Leaving out the last 1% makes a step cheaper; on the
    development pairs 0.999 and 0.95 did no better (benchmarks/README.md)."""
    warm_start: bool = True
    """adam solver: start W, b at their ridge solution instead of random."""
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    """bf16 autocast for the adam solver on CUDA."""
    checkpoint_every: int = 25
    """Epochs between checkpoint writes (a run also writes one when it ends, is cancelled or crashes)."""
    stream: bool | None = None
    """gram solver: read the training rows from the shards one column block per pass instead of holding
    them (memory then holds the [n, n] Gram matrix and the readout, not the [n, F] features; three reads
    of the data instead of one). None: stream when the rows would fill more than half the free memory."""

    def __post_init__(self) -> None:
        o = "TrainConfig"
        check_choice(o, "solver", self.solver, ("gram", "adam", "mean"))
        check_choice(o, "optimizer", self.optimizer, ("lbfgs", "adam"))
        check_choice(o, "validation", self.validation, ("pairs", "combinations"))
        for name, low in (("epochs", 0), ("lbfgs_steps", 1), ("members", 1), ("patience", 0), ("seed", 0),
                          ("checkpoint_every", 1)):
            check_int(o, name, getattr(self, name), low)
        check_int(o, "batch_size", self.batch_size, 1, optional=True)
        check_float(o, "lr", self.lr, 0, low_open=True)
        check_float(o, "lr_end", self.lr_end, 0, low_open=True)
        check_float(o, "ridge", self.ridge, 0)
        if self.ridge_grid is not None:
            if isinstance(self.ridge_grid, list):
                object.__setattr__(self, "ridge_grid", tuple(self.ridge_grid))  # as read back from JSON
            if not isinstance(self.ridge_grid, tuple) or not self.ridge_grid:
                raise SSAEError(f"{o}.ridge_grid must be a non-empty list of penalties or None, "
                                f"got {self.ridge_grid!r}")
            for r in self.ridge_grid:
                check_float(o, "ridge_grid[]", r, 0)
        check_float(o, "val_fraction", self.val_fraction, 0, 1, high_open=True)
        check_float(o, "min_delta", self.min_delta, 0, 1, high_open=True)
        check_float(o, "energy", self.energy, 0, 1, low_open=True)
        check_bool(o, "warm_start", self.warm_start)
        check_bool(o, "train_code", self.train_code)
        check_bool(o, "amp", self.amp)
        check_bool(o, "stream", self.stream, optional=True)
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu", "cuda", "mps")
                                                    or self.device.startswith("cuda:")):
            raise SSAEError(f"{o}.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")

    @classmethod
    def from_dict(cls, d: dict, what: str = "") -> TrainConfig:
        return from_dict(cls, d, what)


@dataclass(frozen=True)
class Recipe:
    """Everything that defines a training run apart from the data: decoder, preprocessing, fitting."""

    model: DecoderConfig = field(default_factory=DecoderConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for name, cls in (("model", DecoderConfig), ("preprocess", PreprocessConfig), ("train", TrainConfig)):
            if not isinstance(getattr(self, name), cls):
                raise SSAEError(f"Recipe.{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        t, m = self.train, self.model
        if t.members > 1 and (t.solver != "gram" or m.code != "concept" or m.decoder != "mlp"):
            raise SSAEError(f"members={t.members} needs the gram solver, concept codes and the mlp decoder (members "
                            "differ only in their hidden layers): use members=1 with this recipe")
        if t.ridge_grid and t.members > 1:
            raise SSAEError("ridge_grid picks the penalty of one model's readout: use members=1 with it")
        if t.solver == "mean" and (m.decoder != "linear" or m.code != "concept" or m.d != 1 or t.members != 1
                                   or t.train_code):
            raise SSAEError("the mean solver sets a linear decoder's rows to concept means: use decoder='linear', "
                            "code='concept', d=1, members=1 and train_code=False with it")
        if t.ridge_grid and (t.solver != "gram" or m.code != "concept"):
            raise SSAEError("ridge_grid picks the penalty of a solved readout over concept codes: use it with the "
                            "gram solver and code='concept', or set ridge instead")
        if t.stream and (t.solver == "adam" or self.preprocess.top_k is not None):
            raise SSAEError("streaming needs the gram or mean solver on all columns (a top-k selection fits in "
                            "memory): use the default preset, or drop --stream")

    def model_config(self, n_concepts: int, n_features: int, n_samples: int) -> ModelConfig:
        return ModelConfig.of(self.model, n_concepts, n_features, n_samples if self.model.code == "sample" else 0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, what: str = "") -> Recipe:
        return from_dict(cls, d, what, nested={"model": DecoderConfig, "preprocess": PreprocessConfig,
                                               "train": TrainConfig})


_PAPER_PREP = PreprocessConfig(top_k=1000, scale="minmax")
_PAPER_LOOP = TrainConfig(solver="adam", optimizer="adam", epochs=100, members=1, train_code=True, batch_size=16,
                          lr=1e-3, lr_end=1e-4, ridge=0.1, min_delta=0.0, warm_start=False, patience=0, amp=False)
PRESETS: dict[str, Recipe] = {
    "default": Recipe(model=DecoderConfig(d=1, hidden=128)),
    "additive": Recipe(model=DecoderConfig(d=1, decoder="linear"),
                       train=TrainConfig(epochs=0, members=1, ridge_grid=RIDGE_GRID, validation="pairs")),
    "paper": Recipe(model=DecoderConfig(decoder="linear"), preprocess=_PAPER_PREP, train=_PAPER_LOOP),
    "paper-trainable": Recipe(model=DecoderConfig(code="sample", activation="relu", decoder="linear"),
                              preprocess=_PAPER_PREP, train=_PAPER_LOOP),
    "paper-ils": Recipe(model=DecoderConfig(code="sample", activation="relu", decoder="linear"), preprocess=_PAPER_PREP,
                        train=TrainConfig(solver="gram", optimizer="adam", members=1, train_code=True, lr=1e-3,
                                          lr_end=1e-4, epochs=100, patience=0, min_delta=0.0, ridge=0.1)),
    "mean-difference": Recipe(model=DecoderConfig(d=1, decoder="linear"),
                              train=TrainConfig(solver="mean", epochs=0, members=1, val_fraction=0.0)),
}
"""default: an ensemble of mlp decoders (hidden 128 each) over the concept weights, the readout solved, the
hidden layers by L-BFGS, all dimensions standardised; its settings chosen on development pairs
(benchmarks/README.md). additive: the closed-form linear decoder, its ridge penalty picked on validation rows
of held-out concept pairs. paper*: the three variants of the reference code with its loop and
preprocessing. mean-difference: no SSAE, the baseline it is measured against: each concept's vector is the
mean of its samples minus the mean of all, so an edit adds mean(new) - mean(old), a Concept-Sliders-like
steering direction."""


def with_overrides(recipe: Recipe, **train_overrides) -> Recipe:
    """The recipe with some TrainConfig fields replaced (None values ignored), e.g. device or seed."""
    kept = {k: v for k, v in train_overrides.items() if v is not None}
    return replace(recipe, train=replace(recipe.train, **kept)) if kept else recipe
