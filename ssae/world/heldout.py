"""Held-out pairs whose test prompts put every phrase on rows the training prompts have shown it on.

A CLIP conditioning holds one row per token, and a prompt joins its phrases with ', ', so a phrase's first row
is one past the tokens of every phrase before it: in a world whose phrases differ in length within a category,
the rows a concept takes depend on the concepts before it. No decoder composes a phrase on rows it never saw
it on (measured in issue 17: every method explains 0.25-0.36 of such held-out conditionings), so held-out pairs
are drawn until every (phrase, first row) of a test prompt, and the row of its end token, occurs in the
training prompts: the pairs `Vocabulary.random_pairs` draws with `seed` * MAX_DRAWS when they cover, else with
that + 1, + 2, ... (so seed 0 keeps the first world's pairs, and two seeds never share a draw).
"""
from __future__ import annotations

import functools

from ..errors import SSAEError
from ..vocab import Combination, Vocabulary, split_heldout_pairs

MAX_DRAWS = 1000
"""Draws of held-out pairs tried before giving up."""
END = "<end>"
"""The end token, whose row is the prompt's token count plus one."""


@functools.lru_cache(maxsize=None)
def token_count(phrase: str) -> int:
    """CLIP-L BPE tokens of a phrase (without start and end tokens)."""
    from .text import END as END_ID
    from .text import tokenize
    return tokenize(phrase).index(END_ID) - 1


def phrase_rows(combo: Combination) -> list[tuple[str, int]]:
    """(phrase, first row) of each concept of a combination's prompt, then (END, its row): row 0 is the start
    token, and ', ' between phrases is one token."""
    rows, row = [], 1
    for phrase in combo:
        rows.append((phrase, row))
        row += token_count(phrase) + 1
    return rows + [(END, row - 1)]


def uncovered(train: list[Combination], test: list[Combination]) -> set[tuple[str, int]]:
    """The (phrase, row) of test prompts that no training prompt has."""
    seen = {r for c in train for r in phrase_rows(c)}
    return {r for c in test for r in phrase_rows(c)} - seen


def ssae_training_combinations(vocab: Vocabulary, pairs, prompts: int | None) -> list[Combination]:
    """The combinations the SSAE trains on: `prompts` sampled as SSAE Prompt Set samples them (seed 0; None:
    every combination), less those that hold a held-out pair."""
    combos = vocab.all_combinations() if prompts is None else vocab.sample_combinations(prompts, 0)
    return [c for c, s in zip(combos, split_heldout_pairs(combos, pairs)) if s == "train"]


def covering_pairs(vocab: Vocabulary, n: int, seed: int, prompts: int | None) -> list[tuple[str, str]]:
    """`n` held-out pairs, drawn until the SSAE's training prompts (`prompts` sampled, see
    `ssae_training_combinations`) cover every (phrase, row) of the test combinations."""
    combos = vocab.all_combinations()
    for draw in range(seed * MAX_DRAWS, (seed + 1) * MAX_DRAWS):
        pairs = vocab.random_pairs(n, draw)
        test = [c for c, s in zip(combos, split_heldout_pairs(combos, pairs)) if s == "test"]
        if not uncovered(ssae_training_combinations(vocab, pairs, prompts), test):
            return pairs
    raise SSAEError(f"no draw of {n} held-out pairs in {MAX_DRAWS} leaves every phrase of a test prompt on rows "
                    "the training prompts show it on: hold out fewer pairs or sample more prompts")
