"""The worlds: what each is made of (`WorldSpec`), its held-out pairs (`World`), and scenes (a combination plus
nuisance jitter).

A world's categories are readable from pixels: the object's shape (template overlap), its colour and the
background colour (nearest palette entry), its position (the nearest nominal centre) and, where the world has
one, its size (the nearest nominal radius). A scene adds small seeded jitter (position, size, colours) so that
the diffusion model has to generalise a little instead of memorising one image per prompt.

Two worlds are defined: `CONCEPT`, four categories whose phrases of a category all have one token length (so
every concept sits on fixed rows of the conditioning), and `PAPER`, five categories whose phrases differ in
length within a category, as real prompts do, sampled sparsely for the SSAE as in the paper (docs/WORLD.md).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..vocab import Combination, Vocabulary, split_heldout_pairs

IMAGE_SIZE = 64
"""Scenes are IMAGE_SIZE x IMAGE_SIZE RGB images (8 x 8 latents for the TAESD3 layout)."""
RGB = tuple[float, float, float]
CATEGORIES = ("shape", "colour", "background", "position", "size")
"""Every category a world may have, in prompt order; a world without sizes leaves `size` out."""


@dataclass(frozen=True)
class WorldSpec:
    """A world's concepts: each category's prompt phrases and what each phrase draws.

    Every phrase is unique and none is part of another, so concept names and prompts parse unambiguously."""

    name: str
    shapes: dict[str, str]
    """Shape phrase -> outline drawn ('circle', 'square', 'triangle', 'cross', 'diamond'; `ssae.world.render`)."""
    colours: dict[str, RGB]
    """Object colour phrase -> RGB in [0, 1]: saturated, far from each other and from every background."""
    backgrounds: dict[str, RGB]
    """Background phrase -> RGB in [0, 1]: achromatic, so that an object never blends into its background."""
    positions: dict[str, tuple[float, float]]
    """Position phrase -> the object's nominal centre (x, y) in pixels, before jitter."""
    sizes: dict[str, float] = field(default_factory=dict)
    """Size phrase -> nominal radius in pixels; empty: no size category, every object has `radius`."""
    radius: float = 11.0
    """Nominal radius (a circle's radius; other outlines scale with it) of a world without sizes."""
    jitter: dict[str, float] = field(default_factory=lambda: {"offset": 2.0, "radius": 1.0, "colour": 0.04})
    """Nuisance jitter, uniform in +-value: centre offset (px, each axis), radius (px), colour (per channel)."""
    generator_sees_heldout: bool = False
    """Whether the diffusion model trains on the combinations that hold a held-out pair too (the paper's regime:
    the generator knows every mix, only the SSAE's prompt set leaves the pairs out)."""
    ssae_prompts: int | None = None
    """Prompts the SSAE's prompt set samples (None: every combination); also the set the held-out pairs are
    checked against (`ssae.world.heldout`)."""

    @property
    def categories(self) -> dict[str, list[str]]:
        """Category -> concept phrases, in prompt order."""
        parts = {"shape": self.shapes, "colour": self.colours, "background": self.backgrounds,
                 "position": self.positions, "size": self.sizes}
        return {cat: list(parts[cat]) for cat in CATEGORIES if parts[cat]}

    def vocabulary(self) -> Vocabulary:
        return Vocabulary(self.categories)

    def concepts_of(self, combo: Combination) -> dict[str, str]:
        """Category -> concept of a combination (one concept per category, in order)."""
        return dict(zip(self.categories, combo))

    def nominal_radius(self, combo: Combination) -> float:
        return self.sizes[self.concepts_of(combo)["size"]] if self.sizes else self.radius

    def to_dict(self) -> dict:
        """Everything that decides what the world draws (part of its build recipe's hash)."""
        return {"name": self.name, "shapes": self.shapes, "colours": self.colours, "backgrounds": self.backgrounds,
                "positions": self.positions, "sizes": self.sizes, "radius": self.radius, "jitter": self.jitter,
                "generator_sees_heldout": self.generator_sees_heldout, "ssae_prompts": self.ssae_prompts}


CONCEPT = WorldSpec(
    name="concept",
    shapes={"a circle": "circle", "a square": "square", "a triangle": "triangle", "a cross": "cross"},
    colours={"red": (0.90, 0.12, 0.10), "green": (0.10, 0.75, 0.20), "blue": (0.15, 0.25, 0.95),
             "yellow": (0.95, 0.85, 0.10)},
    backgrounds={"on black": (0.05, 0.05, 0.05), "on white": (0.95, 0.95, 0.95), "on grey": (0.50, 0.50, 0.50)},
    positions={"top left": (16.0, 16.0), "top right": (48.0, 16.0), "bottom left": (16.0, 48.0),
               "bottom right": (48.0, 48.0)},
)
"""The first world: 4 categories, 192 combinations, phrases of one token length per category."""

PAPER = WorldSpec(
    name="paper",
    shapes={"a circle": "circle", "a square": "square", "a triangle pointing up": "triangle",
            "a plus shaped cross": "cross"},
    colours={"red": (0.90, 0.12, 0.10), "bright green": (0.10, 0.75, 0.20), "a deep shade of blue": (0.15, 0.25, 0.95),
             "yellow": (0.95, 0.85, 0.10), "magenta": (0.85, 0.15, 0.80), "vivid cyan": (0.10, 0.80, 0.85)},
    backgrounds={"on black": (0.05, 0.05, 0.05), "on a plain white background": (0.95, 0.95, 0.95),
                 "on grey paper": (0.50, 0.50, 0.50)},
    positions={"top left": (19.0, 19.0), "in the top right corner": (45.0, 19.0), "bottom left": (19.0, 45.0),
               "near the bottom right edge": (45.0, 45.0), "in the centre": (32.0, 32.0)},
    sizes={"small": 10.0, "very large": 13.5},
    jitter={"offset": 2.0, "radius": 0.5, "colour": 0.04},
    generator_sees_heldout=True,
    ssae_prompts=600,
)
"""The paper's regime: 5 categories whose phrases differ in token length within a category (a colour as one word
or as a phrase, a background named plainly or described), so that a concept's rows depend on the phrases before
it; the SSAE samples a small part of the combinations, the generator learns every one."""

WORLDS = {spec.name: spec for spec in (CONCEPT, PAPER)}


def world_vocabulary(spec: WorldSpec = CONCEPT) -> Vocabulary:
    """A world's vocabulary as an `ssae.Vocabulary`."""
    return spec.vocabulary()


@dataclass(frozen=True)
class World:
    """A world's spec, the concept pairs its SSAE never sees together, and the combinations on each side."""

    vocabulary: Vocabulary
    heldout_pairs: tuple[tuple[str, str], ...]
    spec: WorldSpec = CONCEPT

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

    @property
    def generator_combinations(self) -> list[Combination]:
        """What the diffusion model trains on: every combination, or the training ones (`WorldSpec`)."""
        return self.combinations if self.spec.generator_sees_heldout else self.train_combinations

    def prompt(self, combo: Combination) -> str:
        return self.vocabulary.prompt(combo)

    def to_dict(self) -> dict:
        return {"world": self.spec.name, "vocabulary": self.vocabulary.categories,
                "heldout_pairs": [list(p) for p in self.heldout_pairs],
                "train": [list(c) for c in self.train_combinations], "test": [list(c) for c in self.test_combinations]}


def make_world(n_heldout: int = 4, seed: int = 0, spec: WorldSpec = CONCEPT) -> World:
    """The world of `spec` with `n_heldout` concept pairs (of different categories) held out, drawn with `seed`
    so that the SSAE's training prompts cover every row a test prompt puts a phrase on (`ssae.world.heldout`)."""
    from .heldout import covering_pairs
    vocab = spec.vocabulary()
    return World(vocab, tuple(covering_pairs(vocab, n_heldout, seed, spec.ssae_prompts)), spec)


@dataclass(frozen=True)
class Scene:
    """One image's ground truth: a concept per category plus the nuisance values that render it."""

    combo: Combination
    dx: float = 0.0
    dy: float = 0.0
    radius: float = CONCEPT.radius
    object_jitter: tuple[float, float, float] = (0.0, 0.0, 0.0)
    background_jitter: tuple[float, float, float] = (0.0, 0.0, 0.0)


def random_scene(combo: Combination, seed: int, spec: WorldSpec = CONCEPT) -> Scene:
    """`combo` with jitter drawn from `seed` (the same seed always gives the same scene)."""
    rng = random.Random(seed)
    u = lambda scale: rng.uniform(-scale, scale)  # noqa: E731
    j = spec.jitter
    return Scene(tuple(combo), u(j["offset"]), u(j["offset"]), spec.nominal_radius(combo) + u(j["radius"]),
                 (u(j["colour"]), u(j["colour"]), u(j["colour"])),
                 (u(j["colour"]), u(j["colour"]), u(j["colour"])))
