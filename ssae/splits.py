"""Splits by held-out concept pairs: the rows that measure what an SSAE is for, a concept mix never seen together.

- The test split of a feature set holds every combination with one of its held-out pairs (`ssae.vocab.
  split_heldout_pairs`); training never sees those pairs meet.
- `development_split` carves pairs of its own out of the training rows, drawn as the test pairs were: settings are
  chosen on it, never on the test split.
- `validation_rows` holds back, inside one training run, rows for early stopping and for picking a ridge penalty:
  the rows of a few pairs of the training rows (validation that looks like the test, unlike random rows of seen
  pairs), or whole combinations drawn at random.

Rows of one combination (one prompt, however many seeds sampled it) always fall on the same side.
"""
from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import replace

import torch

from .errors import VocabularyError
from .store import FeatureSet
from .vocab import Vocabulary

Pair = tuple[str, str]


class _Rows:
    """The rows each pair of concepts meets in, and how many rows keep each concept while pairs are held out."""

    def __init__(self, labels: Sequence[Sequence[str]]):
        self.labels = [frozenset(row) for row in labels]
        self.of_pair: dict[Pair, list[int]] = {}
        for i, row in enumerate(self.labels):
            for p in itertools.combinations(sorted(row), 2):
                self.of_pair.setdefault(p, []).append(i)
        self.kept = [True] * len(self.labels)
        self.held = 0
        self.count: dict[str, int] = {}
        for row in self.labels:
            for c in row:
                self.count[c] = self.count.get(c, 0) + 1

    def hold_out(self, rows: list[int], limit: int | None) -> bool:
        """Hold out `rows` (those still kept) unless that leaves a concept in no kept row, leaves fewer than two
        kept rows, or passes `limit` held-out rows; True when held out."""
        new = [i for i in rows if self.kept[i]]
        if not new or len(self.kept) - self.held - len(new) < 2 or (limit is not None and self.held + len(new) > limit):
            return False
        lost: dict[str, int] = {}
        for i in new:
            for c in self.labels[i]:
                lost[c] = lost.get(c, 0) + 1
        if any(self.count[c] == n for c, n in lost.items()):
            return False
        for i in new:
            self.kept[i] = False
        self.held += len(new)
        for c, n in lost.items():
            self.count[c] -= n
        return True


def draw_pairs(vocabulary: Vocabulary, labels: Sequence[Sequence[str]], seed: int, n: int | None = None,
               fraction: float | None = None) -> tuple[list[Pair], list[bool]]:
    """Concept pairs to hold out of the rows `labels`, drawn as `Vocabulary.random_pairs` draws test pairs (two
    categories, then a concept of each), each meeting in some row, until `n` pairs are held out or, with
    `fraction`, that share of the rows (a pair that would take more than twice the share is passed over). A pair
    that would leave a concept in no row is passed over too. Returns the pairs and, per row, whether it holds
    one of them."""
    rows = _Rows(labels)
    rng = random.Random(seed)
    cats = [c for c, cs in vocabulary.categories.items() if cs]
    pairs: list[Pair] = []
    limit = None if fraction is None else max(int(2 * fraction * len(labels)), 1)
    target = None if fraction is None else max(int(fraction * len(labels)), 1)
    tries = 0
    while len(cats) > 1 and tries < 20 * len(rows.of_pair) + 100:
        if n is not None and len(pairs) >= n or target is not None and rows.held >= target:
            break
        tries += 1
        a, b = rng.sample(cats, 2)
        pair = tuple(sorted((rng.choice(vocabulary.categories[a]), rng.choice(vocabulary.categories[b]))))
        if pair not in pairs and rows.hold_out(rows.of_pair.get(pair, []), limit):
            pairs.append(pair)
    return pairs, [not k for k in rows.kept]


def validation_rows(vocabulary: Vocabulary, labels: Sequence[Sequence[str]], fraction: float, seed: int,
                    by: str = "pairs") -> tuple[torch.Tensor, torch.Tensor]:
    """Fit and validation positions among the training rows `labels`, about `fraction` of them held out: by "pairs",
    the rows of concept pairs drawn with `seed` (`draw_pairs`; where none can be held out, as "combinations"); by
    "combinations", whole combinations drawn at random (every seed of a prompt together). None when `fraction` is
    0 or nothing can be held out."""
    n = len(labels)
    held = [False] * n
    if fraction > 0 and n > 2:
        if by == "pairs":
            _, held = draw_pairs(vocabulary, labels, seed + 1, fraction=fraction)
        if not any(held):
            held = _combinations_held_out(labels, fraction, seed + 1)
    val = torch.tensor([i for i in range(n) if held[i]], dtype=torch.long)
    fit = torch.tensor([i for i in range(n) if not held[i]], dtype=torch.long)
    return fit, val


def _combinations_held_out(labels: Sequence[Sequence[str]], fraction: float, seed: int) -> list[bool]:
    """Whole combinations drawn at random until about `fraction` of the rows, each concept keeping a row."""
    rows = _Rows(labels)
    groups: dict[frozenset, list[int]] = {}
    for i, row in enumerate(rows.labels):
        groups.setdefault(row, []).append(i)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    target = max(int(fraction * len(labels)), 1)
    for g in order:
        if rows.held >= target:
            break
        rows.hold_out(g, 2 * target)
    return [not k for k in rows.kept]


def development_split(data: FeatureSet, n_pairs: int, seed: int = 0) -> tuple[FeatureSet, list[Pair]]:
    """The feature set seen through a development split: its 'train' rows are the training rows without `n_pairs`
    pairs drawn from them as the test pairs were drawn (sets of pairs that would hold out a larger share of the
    training rows than the test split is of the whole set are drawn again), its 'test' rows the training rows
    that hold one; the set's own test rows are in neither. Train on its 'train' split and measure on its 'test'
    split to choose settings without looking at the test pairs."""
    train_rows = data.indices("train").tolist()
    labels = [data.labels[i] for i in train_rows]
    share = 1 - len(train_rows) / len(data)
    for attempt in range(200):
        pairs, held = draw_pairs(data.vocabulary, labels, seed * 1000 + attempt, n=n_pairs)
        if len(pairs) == n_pairs and (share == 0 or sum(held) <= share * len(labels)):
            break
    else:
        raise VocabularyError(f"{n_pairs} development pairs could not be held out of the {len(train_rows)} training "
                              "rows (each must meet in them, leave every concept a row, and the split be no larger "
                              "than the test split): hold out fewer pairs")
    tags = ["heldout"] * len(data)
    for i, h in zip(train_rows, held):
        tags[i] = "test" if h else "train"
    return replace(data, split=tags), pairs
