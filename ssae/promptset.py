"""Prompt sets: the paper's training prompts, sampled from a vocabulary with held-out concept pairs.

A prompt set is what the loop starts from: `n` distinct concept combinations drawn with a seed, each
turned into its prompt, labelled with its concepts, and split so that the held-out pairs appear only
in 'test' (the unseen mixes that composition is measured on). Nothing is typed by hand: the labels
come from the combination the prompt was made of.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import VocabularyError
from .vocab import Vocabulary, split_heldout_pairs

log = logging.getLogger(__name__)
Pair = tuple[str, str]


@dataclass(frozen=True)
class LabelledPrompt:
    """One prompt of a set, with the concepts it was made of and its split ('train' or 'test')."""

    vocabulary: Vocabulary
    prompt: str
    concepts: tuple[str, ...]
    split: str | None
    """None for a sample captured by hand, whose split the saving node decides."""


def parse_pairs(text: str, vocabulary: Vocabulary) -> list[Pair]:
    """'blond + horseback; hat + coffee' -> [(concept, concept), ...] of full names, each pair from two
    categories (a pair within one category never meets anyway)."""
    pairs = []
    for item in filter(None, (t.strip() for t in text.replace("\n", ";").split(";"))):
        names = [n.strip() for n in item.split("+")]
        if len(names) != 2 or not all(names):
            raise VocabularyError(f"bad held-out pair {item!r}: write two concepts joined by '+', pairs separated "
                                  "by ';', e.g. 'blond + horseback; hat + coffee'")
        a, b = (vocabulary.resolve(n) for n in names)
        if vocabulary.category_of(a) == vocabulary.category_of(b):
            raise VocabularyError(f"held-out pair {item!r}: {a!r} and {b!r} are both {vocabulary.category_of(a)!r}, "
                                  "so they never meet in one prompt; pair concepts of two categories")
        pairs.append(tuple(sorted((a, b))))
    return pairs


def prompt_set(vocabulary: Vocabulary, n: int, seed: int = 0,
               heldout: int | Sequence[Pair] = 4) -> tuple[list[LabelledPrompt], list[Pair]]:
    """`n` distinct combinations (all of them if the vocabulary has fewer) drawn with `seed`, as labelled
    prompts, and the held-out pairs: `heldout` drawn with the same seed, or the pairs given."""
    if n < 1:
        raise VocabularyError(f"a prompt set needs at least one prompt, got {n}")
    pairs = vocabulary.random_pairs(heldout, seed) if isinstance(heldout, int) else \
        [tuple(sorted(vocabulary.resolve(c) for c in p)) for p in heldout]
    combos = vocabulary.sample_combinations(n, seed)
    splits = split_heldout_pairs(combos, pairs)
    if pairs and "test" not in splits:
        log.warning("no sampled prompt holds a held-out pair %s: the test split is empty; sample more prompts",
                    pairs)
    if "train" not in splits:
        raise VocabularyError(f"every sampled prompt holds a held-out pair {pairs}: nothing is left to train on; "
                              "hold out fewer pairs or sample more prompts")
    return [LabelledPrompt(vocabulary, vocabulary.prompt(c), tuple(c), s) for c, s in zip(combos, splits)], pairs
