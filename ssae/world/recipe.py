"""The world's build recipe, its presets, and the hashes that name what each part of a build depends on.

Each artefact is cached under the hash of everything it depends on: the text encoder on its seed; the
autoencoder on the world (held-out pairs, scenes) and its own recipe; the diffusion model on all of it.
A rebuild with the same recipe is a no-op, and a change rebuilds only what depends on it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace

from .autoencoder import AutoencoderRecipe
from .dit import DiTRecipe
from .scene import CONCEPT, WORLDS, WorldSpec
from .taesd import StackShape

log = logging.getLogger(__name__)

CODE_VERSION = 1
"""Bumped whenever the code changes what a recipe builds, so that old caches are rebuilt."""


@dataclass(frozen=True)
class SamplingDefaults:
    """How the world is sampled in ComfyUI (KSampler settings); recorded in world.json for clients."""

    steps: int = 20
    cfg: float = 1.5
    sampler: str = "euler"
    scheduler: str = "simple"


@dataclass(frozen=True)
class WorldRecipe:
    """Everything a build depends on."""

    world: str = CONCEPT.name
    """Which world (`ssae.world.scene.WORLDS`): its concepts, palette and geometry."""
    heldout_pairs: int = 4
    """Concept pairs (of different categories) that no training image shows together."""
    world_seed: int = 0
    """Chooses the held-out pairs and the training scenes' jitter."""
    text_seed: int = 0
    """The random CLIP-L's weights."""
    images: int = 8192
    """Training scenes rendered (cycling through the training combinations)."""
    max_combinations: int = 0
    """Use only this many training combinations (0: all), for quick test builds."""
    autoencoder: AutoencoderRecipe = field(default_factory=AutoencoderRecipe)
    dit: DiTRecipe = field(default_factory=DiTRecipe)
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)

    def __post_init__(self) -> None:
        if self.world not in WORLDS:
            raise ValueError(f"unknown world {self.world!r}: choose one of {sorted(WORLDS)}")

    @property
    def spec(self) -> WorldSpec:
        return WORLDS[self.world]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> WorldRecipe:
        """A recipe from `to_dict`'s output; unknown keys are ignored with a warning."""
        return _from_dict(cls, data)

    def hashes(self) -> dict[str, str]:
        """Cache keys: `text`, `autoencoder`, `dit` (each over all it depends on) and `world` (the whole build)."""
        world = {k: getattr(self, k) for k in ("heldout_pairs", "world_seed", "images", "max_combinations")}
        if self.world != CONCEPT.name:  # the first world's hashes predate the choice and stay as they were
            world["spec"] = self.spec.to_dict()
        text = _digest({"text_seed": self.text_seed})
        autoencoder = _digest({"world": world, "autoencoder": asdict(self.autoencoder)})
        dit = _digest({"world": world, "text": text, "autoencoder": autoencoder, "dit": asdict(self.dit)})
        return {"text": text, "autoencoder": autoencoder, "dit": dit,
                "world": _digest({"dit": dit, "sampling": asdict(self.sampling)})}


QUICK = WorldRecipe(images=64, max_combinations=8,
                    autoencoder=AutoencoderRecipe(decoder=StackShape(8, (1, 0, 0, 0), False), steps=3, batch=4),
                    dit=DiTRecipe(depth=2, steps=3, batch=4), sampling=SamplingDefaults(steps=4, cfg=2.0))
"""A tiny world for tests: loadable files of the real layout in a few seconds, quality irrelevant."""
PAPER_RECIPE = WorldRecipe(world="paper", images=16384, dit=DiTRecipe(steps=6000))
"""The paper world's build: more scenes and steps than the first world's, for 720 combinations the generator
learns every one of."""
PRESETS = {"default": WorldRecipe(), "quick": QUICK, "paper": PAPER_RECIPE}


def recipe_for(world: str, quick: bool = False) -> WorldRecipe:
    """A world's build recipe (`concept` or `paper`), or its quick variant: the same world with tiny models."""
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}: choose one of {sorted(WORLDS)}")
    if quick:
        return replace(QUICK, world=world)
    return PAPER_RECIPE if world == "paper" else WorldRecipe()


def _digest(obj) -> str:
    text = json.dumps({"code": CODE_VERSION, "recipe": obj}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _from_dict(cls, data: dict):
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        log.warning("ignoring unknown %s fields %s", cls.__name__, unknown)
    kwargs = {}
    for name, value in data.items():
        if name not in known:
            continue
        default = getattr(cls(), name)
        if is_dataclass(default):
            kwargs[name] = _from_dict(type(default), value)
        elif isinstance(default, tuple):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return replace(cls(), **kwargs)
