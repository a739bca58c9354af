"""The concept world: its vocabulary, the held-out pairs, and scenes (a combination plus nuisance jitter).

Every concept has a ground truth that `ssae.world.measure` reads back from pixels: the object's shape
(template overlap), its colour and the background colour (nearest palette entry), and its position
(the quadrant of its centroid). A scene adds small seeded jitter (position, size, colours) so that the
diffusion model has to generalise a little instead of memorising one image per prompt.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from ..vocab import Combination, Vocabulary, split_heldout_pairs

IMAGE_SIZE = 64
"""Scenes are IMAGE_SIZE x IMAGE_SIZE RGB images (8 x 8 latents for the TAESD3 layout)."""

VOCABULARY = {
    "shape": ["a circle", "a square", "a triangle", "a cross"],
    "colour": ["red", "green", "blue", "yellow"],
    "background": ["on black", "on white", "on grey"],
    "position": ["top left", "top right", "bottom left", "bottom right"],
}
"""Category -> concept phrases, in prompt order: 'a circle, red, on black, top left'. Every phrase is unique
and none is a substring of another, so concept names and prompts parse unambiguously."""

OBJECT_RGB = {"red": (0.90, 0.12, 0.10), "green": (0.10, 0.75, 0.20), "blue": (0.15, 0.25, 0.95),
              "yellow": (0.95, 0.85, 0.10)}
"""Object colours in [0, 1]: saturated, far from each other and from every background."""
BACKGROUND_RGB = {"on black": (0.05, 0.05, 0.05), "on white": (0.95, 0.95, 0.95), "on grey": (0.50, 0.50, 0.50)}
"""Background colours in [0, 1]: achromatic, so that an object never blends into its background."""
QUADRANT_CENTRE = {"top left": (16.0, 16.0), "top right": (48.0, 16.0), "bottom left": (16.0, 48.0),
                   "bottom right": (48.0, 48.0)}
"""Position concept -> the object's nominal centre (x, y) in pixels, before jitter."""

RADIUS = 11.0
"""Nominal object radius in pixels (a circle's radius; other shapes scale with it)."""
JITTER = {"offset": 2.0, "radius": 1.0, "colour": 0.04}
"""Nuisance jitter, uniform in +-value: centre offset (px, each axis), radius (px), colour (per channel)."""


def world_vocabulary() -> Vocabulary:
    """The world's vocabulary as an `ssae.Vocabulary`."""
    return Vocabulary({cat: list(cs) for cat, cs in VOCABULARY.items()})


@dataclass(frozen=True)
class World:
    """The vocabulary, the concept pairs held out of all training, and the combinations on each side."""

    vocabulary: Vocabulary
    heldout_pairs: tuple[tuple[str, str], ...]

    @property
    def combinations(self) -> list[Combination]:
        return self.vocabulary.all_combinations()

    def split(self) -> list[str]:
        """'train' or 'test' for each of `combinations`: a test combination holds a held-out pair."""
        return split_heldout_pairs(self.combinations, self.heldout_pairs)

    @property
    def train_combinations(self) -> list[Combination]:
        return [c for c, s in zip(self.combinations, self.split()) if s == "train"]

    @property
    def test_combinations(self) -> list[Combination]:
        return [c for c, s in zip(self.combinations, self.split()) if s == "test"]

    def prompt(self, combo: Combination) -> str:
        return self.vocabulary.prompt(combo)

    def to_dict(self) -> dict:
        return {"vocabulary": self.vocabulary.categories, "heldout_pairs": [list(p) for p in self.heldout_pairs],
                "train": [list(c) for c in self.train_combinations], "test": [list(c) for c in self.test_combinations]}


def make_world(n_heldout: int = 4, seed: int = 0) -> World:
    """The world with `n_heldout` concept pairs (of different categories) held out, chosen with `seed`."""
    vocab = world_vocabulary()
    return World(vocab, tuple(vocab.random_pairs(n_heldout, seed)))


@dataclass(frozen=True)
class Scene:
    """One image's ground truth: a concept per category plus the nuisance values that render it."""

    combo: Combination
    dx: float = 0.0
    dy: float = 0.0
    radius: float = RADIUS
    object_jitter: tuple[float, float, float] = (0.0, 0.0, 0.0)
    background_jitter: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def concept(self, category: str) -> str:
        return self.combo[list(VOCABULARY).index(category)]


def random_scene(combo: Combination, seed: int) -> Scene:
    """`combo` with jitter drawn from `seed` (the same seed always gives the same scene)."""
    rng = random.Random(seed)
    u = lambda scale: rng.uniform(-scale, scale)  # noqa: E731
    return Scene(tuple(combo), u(JITTER["offset"]), u(JITTER["offset"]), RADIUS + u(JITTER["radius"]),
                 (u(JITTER["colour"]), u(JITTER["colour"]), u(JITTER["colour"])),
                 (u(JITTER["colour"]), u(JITTER["colour"]), u(JITTER["colour"])))
