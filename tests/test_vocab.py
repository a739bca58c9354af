import pytest

from ssae import Vocabulary, VocabularyError, split_heldout_pairs

from builders import VOCAB


def test_portraits_vocabulary_is_the_papers():
    v = Vocabulary.portraits()
    assert len(v.categories) == 7 and v.n_concepts == 28 and len(v.all_combinations()) == 4224


def test_prompt_follows_category_order_whatever_the_input_order():
    assert VOCAB.prompt(["looking to the left", "A blond girl", "at the beach", "and a hat"]) == \
        "A blond girl, at the beach, and a hat, looking to the left"


def test_resolve_exact_fragment_ambiguous_unknown():
    assert VOCAB.resolve("and a hat") == "and a hat"
    assert VOCAB.resolve("Blond") == "A blond girl"
    with pytest.raises(VocabularyError, match="ambiguous.*full name"):
        VOCAB.resolve("looking")
    with pytest.raises(VocabularyError, match="unknown concept 'red hair'.*known concepts.*A blond girl"):
        VOCAB.resolve("red hair")


def test_mask_and_parse_prompt():
    m = VOCAB.mask([["blond", "boat"], []])
    assert m.shape == (2, VOCAB.n_concepts) and m[0].sum() == 2 and m[1].sum() == 0
    assert m[0, VOCAB.index("A blond girl")] == 1
    assert VOCAB.parse_prompt("A brunette girl, on a boat, and a baseball cap") == \
        ["A brunette girl", "on a boat", "and a baseball cap"]
    with pytest.raises(VocabularyError, match="list of concept names"):
        VOCAB.mask(["A blond girl"])


def test_invalid_vocabularies_are_refused():
    with pytest.raises(VocabularyError, match="unique"):
        Vocabulary({"a": ["x"], "b": ["x"]})
    with pytest.raises(VocabularyError, match="non-empty"):
        Vocabulary({"a": []})
    with pytest.raises(VocabularyError, match="JSON"):
        Vocabulary.from_json("{not json")


def test_sampling_is_seeded_and_heldout_pairs_never_meet_in_training():
    v = Vocabulary.portraits()
    assert v.sample_combinations(50, seed=3) == v.sample_combinations(50, seed=3)
    assert v.sample_combinations(50, seed=3) != v.sample_combinations(50, seed=4)
    combos = v.sample_combinations(1500, seed=0)
    pairs = v.random_pairs(4, seed=0)
    split = split_heldout_pairs(combos, pairs)
    assert "test" in split and "train" in split
    for c, s in zip(combos, split):
        has_pair = any(set(p) <= set(c) for p in pairs)
        assert has_pair == (s == "test")
