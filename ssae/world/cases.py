"""What `evaluate` samples: edit cases (one or two concepts swapped in a prompt the SSAE was trained on) and
held-out compositions, each with its own sampling seed.

An edit case starts from a combination of the SSAE's training prompts and swaps the concepts of one or two
categories; the edited combination is a mix of the world's training side (single and double edits: in the
first world every such mix is one the generator learned) or holds a held-out pair (edits into held-out mixes:
the result is a mix no SSAE training prompt shows).
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from ..vocab import Combination

SEED_BASE = {"single": 30_000, "double": 50_000, "into_heldout": 60_000, "compose": 40_000}
"""Sampling seeds of each kind of case start at SEED_BASE[kind] * (evaluation seed + 1)."""


@dataclass(frozen=True)
class EditCase:
    """A combination sampled at `seed`, and `edited`: the same with the concepts of `categories` swapped."""

    combo: Combination
    edited: Combination
    seed: int
    categories: tuple[str, ...]

    @property
    def old(self) -> tuple[str, ...]:
        """The concepts swapped out, in category order."""
        return tuple(a for a, b in zip(self.combo, self.edited) if a != b)

    @property
    def new(self) -> tuple[str, ...]:
        """The concepts swapped in, in category order."""
        return tuple(b for a, b in zip(self.combo, self.edited) if a != b)

    @property
    def category(self) -> str:
        """The swapped category of a single edit."""
        if len(self.categories) != 1:
            raise ValueError(f"a {len(self.categories)}-category edit has no single category")
        return self.categories[0]


def edit_cases(seen: list[Combination], targets: list[Combination], categories: dict[str, list[str]], n: int,
               swaps: int = 1, seed: int = 0, kind: str = "single") -> list[EditCase]:
    """n cases over the `seen` combinations (a seeded order, cycled), the category sets of `swaps` categories
    swapped in turn, each for new concepts drawn among those that make one of `targets`.

    Raises ValueError when no seen combination can reach a target."""
    rng = random.Random(seed)
    names = list(categories)
    groups = list(itertools.combinations(range(len(names)), swaps))
    allowed = set(targets)
    order = rng.sample(seen, len(seen))
    cases: list[EditCase] = []
    i = 0
    while len(cases) < n:
        if i == len(order) * len(groups) and not cases:
            raise ValueError(f"no seen combination reaches a target by swapping {swaps} categories")
        combo, group = order[i % len(order)], groups[i % len(groups)]
        options = []
        for new in itertools.product(*(categories[names[k]] for k in group)):
            edited = list(combo)
            for k, concept in zip(group, new):
                edited[k] = concept
            if all(combo[k] != c for k, c in zip(group, new)) and tuple(edited) in allowed:
                options.append(tuple(edited))
        if options:
            cases.append(EditCase(tuple(combo), rng.choice(options), SEED_BASE[kind] * (seed + 1) + i,
                                  tuple(names[k] for k in group)))
        i += 1
    return cases


def compose_cases(test: list[Combination], seeds: int, limit: int | None,
                  seed: int = 0) -> list[tuple[Combination, int]]:
    """(held-out combination, sampling seed): every test combination at each of `seeds` seeds, at most `limit`
    (spread over the combinations: a seeded order)."""
    order = random.Random(seed).sample(test, len(test)) if limit is not None and limit < len(test) * seeds else test
    held = [(c, SEED_BASE["compose"] * (seed + 1) + k * 1000 + i) for k in range(seeds) for i, c in enumerate(order)]
    return held[:limit]
