"""Concept vocabularies: categories of mutually exclusive concepts, prompts, combinations and splits.

A vocabulary maps each category to its concepts; a concept's name is its prompt phrase
(the format of the paper's vocabulary files). A training sample takes one concept per category.
"""
from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from .errors import VocabularyError

Combination = tuple[str, ...]
MAX_CONCEPTS = 100_000
"""A vocabulary of more concepts than this is refused when read from a file (before it is indexed)."""


@dataclass(frozen=True)
class Vocabulary:
    """Ordered categories, each an ordered list of concept names (prompt phrases)."""

    categories: dict[str, list[str]]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.categories, dict) or not self.categories:
            raise VocabularyError("a vocabulary needs at least one category: give a JSON object category -> [concepts]")
        seen: dict[str, str] = {}
        for cat, concepts in self.categories.items():
            if not isinstance(concepts, list) or not concepts or not all(isinstance(c, str) and c for c in concepts):
                raise VocabularyError(f"category {cat!r} must be a non-empty list of concept names")
            for c in concepts:
                if c in seen:
                    raise VocabularyError(f"concept {c!r} appears in both {seen[c]!r} and {cat!r}: names must be "
                                          "unique")
                seen[c] = cat
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(seen)})

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise VocabularyError(f"vocabulary is not valid JSON ({e}): expected an object category -> "
                                  "[concepts]") from e
        if not isinstance(data, dict):
            raise VocabularyError("vocabulary must be a JSON object category -> [concepts]")
        return cls({str(k): v for k, v in data.items()})

    @classmethod
    def from_stored(cls, categories) -> Vocabulary:
        """A vocabulary from a file's metadata, whose size is checked before any concept is indexed."""
        if isinstance(categories, dict) and \
                sum(len(c) if isinstance(c, list) else 1 for c in categories.values()) > MAX_CONCEPTS:
            raise VocabularyError(f"the vocabulary has more than {MAX_CONCEPTS} concepts")
        return cls(categories)

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    @classmethod
    def parse(cls, text: str) -> Vocabulary:
        """A vocabulary typed in a node: JSON {category: [concepts]}, or the paper's portraits when empty."""
        return cls.from_json(text) if text.strip() else cls.portraits()

    @classmethod
    def portraits(cls) -> Vocabulary:
        """The paper's portrait vocabulary (7 categories, 28 concepts), shipped with the package."""
        return cls.from_json(resources.files("ssae.data").joinpath("sd35_portraits.json").read_text(encoding="utf-8"))

    def to_json(self) -> str:
        return json.dumps(self.categories)

    # -- lookup ------------------------------------------------------------------------------
    @property
    def concepts(self) -> list[str]:
        return list(self._index)

    @property
    def n_concepts(self) -> int:
        return len(self._index)

    def index(self, name: str) -> int:
        return self._index[self.resolve(name)]

    def category_of(self, name: str) -> str:
        name = self.resolve(name)
        return next(cat for cat, cs in self.categories.items() if name in cs)

    def resolve(self, name: str) -> str:
        """The concept a user means: an exact name, or a case-insensitive fragment that matches just one."""
        if name in self._index:
            return name
        frag = name.strip().lower()
        hits = [c for c in self._index if frag and frag in c.lower()]
        if len(hits) == 1:
            return hits[0]
        if hits:
            raise VocabularyError(f"concept {name!r} is ambiguous: it matches {hits}; use the full name")
        raise VocabularyError(f"unknown concept {name!r}; known concepts: {self.concepts}")

    # -- labels ------------------------------------------------------------------------------
    def mask(self, labels: Sequence[Sequence[str]]) -> torch.Tensor:
        """Binary [N, K] matrix of which concepts each sample has."""
        m = torch.zeros(len(labels), self.n_concepts)
        for i, row in enumerate(labels):
            if isinstance(row, str):
                raise VocabularyError(f"labels of sample {i} must be a list of concept names, got the string {row!r}")
            for name in row:
                m[i, self.index(name)] = 1.0
        return m

    def prompt(self, combo: Iterable[str]) -> str:
        """The paper's prompt: the phrases of a combination in category order, joined with ', '."""
        chosen = {self.category_of(c): self.resolve(c) for c in combo}
        return ", ".join(chosen[cat] for cat in self.categories if cat in chosen)

    def parse_labels(self, text: str) -> list[str]:
        """Concepts from 'blond, blue eyes, ...' (names or unique fragments), or else the phrases a prompt contains."""
        try:
            return [self.resolve(t.strip()) for t in text.split(",") if t.strip()]
        except VocabularyError:
            found = self.parse_prompt(text)
            if not found:
                raise VocabularyError(f"no concept of the vocabulary found in {text!r}: give concept names separated "
                                      f"by commas, e.g. {', '.join(self.concepts[:2])}") from None
            return found

    def parse_prompt(self, prompt: str) -> list[str]:
        """Concepts whose phrase occurs in a prompt (longest match per category wins)."""
        text = prompt.lower()
        found = []
        for concepts in self.categories.values():
            hits = sorted((c for c in concepts if c.lower() in text), key=len, reverse=True)
            if hits:
                found.append(hits[0])
        return found

    # -- combinations ------------------------------------------------------------------------
    def all_combinations(self) -> list[Combination]:
        return list(itertools.product(*self.categories.values()))

    def sample_combinations(self, n: int, seed: int = 0) -> list[Combination]:
        """n distinct combinations drawn uniformly with a seed (all of them if n is larger)."""
        combos = self.all_combinations()
        if n >= len(combos):
            return combos
        return random.Random(seed).sample(combos, n)

    def random_pairs(self, n: int, seed: int = 0) -> list[tuple[str, str]]:
        """n concept pairs from different categories, for a held-out-pair split."""
        rng = random.Random(seed)
        cats = list(self.categories)
        sizes = [len(c) for c in self.categories.values()]
        available = (sum(sizes) ** 2 - sum(k * k for k in sizes)) // 2
        if n > available:
            raise VocabularyError(f"asked for {n} held-out pairs, but this vocabulary has only {available} pairs of "
                                  "concepts from different categories")
        pairs: set[tuple[str, str]] = set()
        while len(pairs) < n:
            a, b = rng.sample(cats, 2)
            pairs.add(tuple(sorted((rng.choice(self.categories[a]), rng.choice(self.categories[b])))))
        return sorted(pairs)


def split_heldout_pairs(combos: Sequence[Sequence[str]], pairs: Sequence[tuple[str, str]]) -> list[str]:
    """'test' for every combination that holds a held-out pair, else 'train': the pairs never meet in training."""
    pair_sets = [set(p) for p in pairs]
    return ["test" if any(p <= set(c) for p in pair_sets) else "train" for c in combos]
