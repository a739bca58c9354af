"""ssae.splits: validation and development rows by held-out concept pairs (issue 19, item 8), and a Gram factor
that validation rows never shape."""
import itertools

import pytest
import torch
from builders import make_features

import ssae
from ssae.objectives import GramFactor
from ssae.splits import development_split, draw_pairs, validation_rows

WIDE = ssae.Vocabulary({"a": [f"a{i}" for i in range(4)], "b": [f"b{i}" for i in range(3)],
                        "c": [f"c{i}" for i in range(5)], "d": ["d0", "d1"]})


def pairs_of(labels):
    return {p for row in labels for p in itertools.combinations(sorted(row), 2)}


def test_validation_rows_hold_pairs_the_fit_rows_never_show_together():
    labels = [list(c) for c in WIDE.all_combinations()] * 3  # every prompt sampled at three seeds
    fit, val = validation_rows(WIDE, labels, 0.1, seed=0)
    assert fit.numel() + val.numel() == len(labels) and set(fit.tolist()).isdisjoint(val.tolist())
    assert 0.05 * len(labels) <= val.numel() <= 0.2 * len(labels)
    fit_pairs = pairs_of(labels[i] for i in fit.tolist())
    assert all(not pairs_of([labels[i]]) <= fit_pairs for i in val.tolist()), \
        "every validation row holds a pair that no fit row holds"
    val_combos = {frozenset(labels[i]) for i in val.tolist()}
    assert all(frozenset(labels[i]) not in val_combos for i in fit.tolist()), "a prompt's seeds stay on one side"
    assert {c for i in fit.tolist() for c in labels[i]} == set(WIDE.concepts), "every concept keeps a fit row"
    again = validation_rows(WIDE, labels, 0.1, seed=0)
    assert torch.equal(again[1], val) and not torch.equal(validation_rows(WIDE, labels, 0.1, seed=1)[1], val)


def test_validation_falls_back_to_whole_combinations_and_can_be_off():
    small = ssae.Vocabulary({"a": ["a0", "a1"], "b": ["b0", "b1"], "c": ["c0", "c1"]})
    labels = [list(c) for c in small.all_combinations()] * 5  # a pair takes 10 rows: over twice the 10%
    fit, val = validation_rows(small, labels, 0.1, seed=0)
    assert val.numel() == 5 and len({frozenset(labels[i]) for i in val.tolist()}) == 1, "one whole combination"
    one = ssae.Vocabulary({"colour": ["red", "green"]})
    assert validation_rows(one, [["red"], ["green"]] * 4, 0.25, 0)[1].numel() == 0, "no row can go: 'red' needs one"
    assert validation_rows(WIDE, [list(c) for c in WIDE.all_combinations()], 0.0, 0)[1].numel() == 0


def test_a_drawn_pair_never_costs_a_concept_its_last_row():
    labels = [["a0", "b0"], ["a0", "b1"], ["a1", "b1"]]
    for seed in range(20):
        pairs, held = draw_pairs(WIDE, labels, seed, n=3)
        kept = [row for row, h in zip(labels, held) if not h]
        assert {c for row in labels for c in row} == {c for row in kept for c in row}
        assert len(kept) >= 2 and len(pairs) <= 1


def test_the_development_split_carves_its_own_pairs_out_of_the_training_rows(tmp_path):
    data = ssae.load_features(make_features(tmp_path / "f.safetensors", repeats=3))
    dev, pairs = development_split(data, 1, seed=0)
    train_rows, test_rows = set(data.indices("train").tolist()), set(data.indices("test").tolist())
    dev_fit, dev_test = set(dev.indices("train").tolist()), set(dev.indices("test").tolist())
    assert dev_fit | dev_test == train_rows and not dev_test & test_rows, "never a row of the test pairs"
    assert len(pairs) == 1 and all(set(pairs[0]) <= set(data.labels[i]) for i in dev_test)
    assert pairs[0] not in pairs_of(data.labels[i] for i in dev_fit)
    assert pairs[0] in pairs_of(data.labels[i] for i in train_rows), "a pair the training rows do show"
    with pytest.raises(ssae.VocabularyError, match="development pairs could not be held out"):
        development_split(data, 50)


def test_the_gram_factor_is_shaped_by_the_fit_rows_only():
    """Two sets that differ only in their validation rows give the same factor of the fit rows, and a validation
    row equal to a fit row is predicted by that row's coordinates."""
    g = torch.Generator().manual_seed(0)
    Y = torch.randn(30, 50, generator=g)
    fit, val = torch.arange(0, 24), torch.arange(24, 30)
    other = Y.clone()
    other[val] = 10 * torch.randn(6, 50, generator=g)
    a, b = GramFactor(Y, 50, fit, val, energy=1.0), GramFactor(other, 50, fit, val, energy=1.0)
    assert torch.allclose(a.L_fit, b.L_fit, atol=1e-5) and a.tr_fit == pytest.approx(b.tr_fit)
    Y[24] = Y[3]
    c = GramFactor(Y, 50, fit, val, energy=1.0)
    assert torch.allclose(c.L_val[0], c.L_fit[3], atol=1e-4)


def test_validation_by_whole_combinations_keeps_a_prompts_seeds_together():
    labels = [list(c) for c in WIDE.all_combinations()] * 3
    fit, val = validation_rows(WIDE, labels, 0.1, seed=0, by="combinations")
    assert 0.05 * len(labels) <= val.numel() <= 0.2 * len(labels)
    val_combos = {frozenset(labels[i]) for i in val.tolist()}
    assert all(frozenset(labels[i]) not in val_combos for i in fit.tolist())
    assert all(sum(frozenset(row) == c for row in labels) == sum(frozenset(labels[i]) == c for i in val.tolist())
               for c in val_combos), "all three seeds of a validation prompt"
    with pytest.raises(ssae.SSAEError, match="TrainConfig.validation must be one of 'pairs', 'combinations'"):
        ssae.TrainConfig(validation="rows")
