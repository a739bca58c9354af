"""The one builder of tiny labelled feature sets with known structure, shared by the core tests.

Features are additive per-concept vectors, plus (optionally) a pairwise interaction term, plus small
seeded noise; every combination of the vocabulary appears `repeats` times, and the HELDOUT pairs are
split off into 'test' with `ssae.vocab.split_heldout_pairs`, so they never meet in training.
"""
from __future__ import annotations

import torch

import ssae
from ssae.vocab import split_heldout_pairs

VOCAB = ssae.Vocabulary({"hair": ["A blond girl", "A brunette girl"],
                         "place": ["at a market", "at the beach", "on a boat"],
                         "hat": ["and a hat", "and a baseball cap"],
                         "pose": ["looking to the left", "looking to the right"]})
HELDOUT = [("A blond girl", "on a boat"), ("and a hat", "looking to the right")]


def make_features(path, n_features: int = 48, interactions: float = 1.0, noise: float = 0.01, seed: int = 0,
                  dtype=torch.float32, repeats: int = 2, site: str = "test.site", heldout=HELDOUT,
                  feature_shape=None):
    """Additive per-concept vectors plus pairwise interactions (scaled by `interactions`; 0 turns them off),
    every combination `repeats` times, split so that the `heldout` pairs never meet in training
    (heldout=None: no split stored). Returns the saved path."""
    g = torch.Generator().manual_seed(seed)
    combos = [list(c) for c in VOCAB.all_combinations()] * repeats
    m = VOCAB.mask(combos)
    x = m @ torch.randn(VOCAB.n_concepts, n_features, generator=g)
    if interactions:
        pair = torch.randn(VOCAB.n_concepts, VOCAB.n_concepts, n_features, generator=g) * interactions
        x = x + torch.einsum("ni,nj,ijf->nf", m, m, pair) / 2
    x = x + noise * torch.randn(x.shape, generator=g)
    split = split_heldout_pairs(combos, heldout) if heldout is not None else None
    prompts = [VOCAB.prompt(c) for c in combos]
    return ssae.save_features(path, x.to(dtype), VOCAB, combos, split, prompts, site=site, feature_shape=feature_shape)
