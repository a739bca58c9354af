"""ssae.vocab: categories, prompts, concept lookup, masks, seeded sampling and the held-out-pair split."""
import signal

import pytest
from builders import HELDOUT, VOCAB

from ssae import SSAEError, Vocabulary, VocabularyError, split_heldout_pairs


def test_portraits_vocabulary_is_the_papers():
    v = Vocabulary.portraits()
    assert len(v.categories) == 7 and v.n_concepts == 28 and len(v.all_combinations()) == 4224
    assert Vocabulary.from_json(v.to_json()) == v


def test_concepts_are_indexed_in_category_order():
    assert VOCAB.concepts[:3] == ["A blond girl", "A brunette girl", "at a market"]
    assert VOCAB.index("on a boat") == 4 and VOCAB.category_of("boat") == "place"
    assert len(VOCAB.all_combinations()) == 2 * 3 * 2 * 2


def test_prompt_follows_category_order_whatever_the_input_order():
    assert VOCAB.prompt(["looking to the left", "A blond girl", "at the beach", "and a hat"]) == \
        "A blond girl, at the beach, and a hat, looking to the left"
    assert VOCAB.prompt(["cap", "brunette"]) == "A brunette girl, and a baseball cap", "fragments resolve"


def test_resolve_exact_fragment_ambiguous_unknown():
    assert VOCAB.resolve("and a hat") == "and a hat"
    assert VOCAB.resolve("Blond") == "A blond girl"
    assert VOCAB.resolve("  BOAT ") == "on a boat"
    with pytest.raises(VocabularyError, match="ambiguous.*looking to the left.*looking to the right.*full name"):
        VOCAB.resolve("looking")
    with pytest.raises(VocabularyError, match="unknown concept 'red hair'.*known concepts.*A blond girl.*on a boat"):
        VOCAB.resolve("red hair")
    with pytest.raises(VocabularyError, match="unknown concept ''"):
        VOCAB.resolve("")
    assert issubclass(VocabularyError, SSAEError) and issubclass(SSAEError, ValueError)


def test_mask_marks_exactly_the_named_concepts():
    m = VOCAB.mask([["blond", "boat"], [], ["A brunette girl", "and a hat", "looking to the right"]])
    assert m.shape == (3, VOCAB.n_concepts)
    assert m[0].nonzero().flatten().tolist() == [VOCAB.index("A blond girl"), VOCAB.index("on a boat")]
    assert m[1].sum() == 0 and m[2].sum() == 3 and set(m.unique().tolist()) == {0.0, 1.0}
    with pytest.raises(VocabularyError, match="list of concept names"):
        VOCAB.mask(["A blond girl"])
    with pytest.raises(VocabularyError, match="unknown concept"):
        VOCAB.mask([["purple"]])


def test_parse_prompt_finds_one_concept_per_category_longest_first():
    assert VOCAB.parse_prompt("A brunette girl, on a boat, and a baseball cap") == \
        ["A brunette girl", "on a boat", "and a baseball cap"]
    v = Vocabulary({"hat": ["a hat", "a hat with feathers"], "eyes": ["blue eyes", "brown eyes"]})
    assert v.parse_prompt("A girl with BROWN EYES wearing a hat with feathers") == ["a hat with feathers", "brown eyes"]
    assert v.parse_prompt("nothing here") == []
    for combo in VOCAB.all_combinations():
        assert VOCAB.parse_prompt(VOCAB.prompt(combo)) == list(combo)


def test_invalid_vocabularies_are_refused():
    with pytest.raises(VocabularyError, match="'x' appears in both 'a' and 'b'.*unique"):
        Vocabulary({"a": ["x"], "b": ["x"]})
    with pytest.raises(VocabularyError, match="unique"):
        Vocabulary({"a": ["x", "x"]})
    with pytest.raises(VocabularyError, match="non-empty"):
        Vocabulary({"a": []})
    with pytest.raises(VocabularyError, match="non-empty"):
        Vocabulary({"a": ["x", ""]})
    with pytest.raises(VocabularyError, match="at least one category"):
        Vocabulary({})
    with pytest.raises(VocabularyError, match="JSON"):
        Vocabulary.from_json("{not json")
    with pytest.raises(VocabularyError, match="JSON object"):
        Vocabulary.from_json('["a", "b"]')


def test_load_reads_a_json_file(tmp_path):
    (tmp_path / "v.json").write_text(VOCAB.to_json(), encoding="utf-8")
    assert Vocabulary.load(tmp_path / "v.json") == VOCAB


def test_sampling_is_seeded_and_distinct():
    v = Vocabulary.portraits()
    a = v.sample_combinations(50, seed=3)
    assert a == v.sample_combinations(50, seed=3) and a != v.sample_combinations(50, seed=4)
    assert len(set(a)) == 50 and all(len(c) == 7 for c in a)
    assert VOCAB.sample_combinations(1000) == VOCAB.all_combinations(), "asking for more gives all of them"
    assert v.random_pairs(4, seed=1) == v.random_pairs(4, seed=1)
    for a, b in v.random_pairs(10, seed=2):
        assert v.category_of(a) != v.category_of(b), "a held-out pair joins two categories"


def test_heldout_pairs_never_meet_in_training():
    v = Vocabulary.portraits()
    combos = v.sample_combinations(1500, seed=0)
    pairs = v.random_pairs(4, seed=0)
    split = split_heldout_pairs(combos, pairs)
    assert "test" in split and "train" in split
    for c, s in zip(combos, split):
        assert any(set(p) <= set(c) for p in pairs) == (s == "test")
    train_combos = [set(c) for c, s in zip(combos, split) if s == "train"]
    for a, b in pairs:  # each concept of a pair is still seen in training, just never together
        assert any(a in c for c in train_combos) and any(b in c for c in train_combos)
        assert not any(a in c and b in c for c in train_combos)
    small = split_heldout_pairs(VOCAB.all_combinations(), HELDOUT)
    assert small.count("test") == 4 + 6 - 1  # 4 combos hold the first pair, 6 the second, 1 both


def test_random_pairs_asking_for_more_pairs_than_exist_is_an_error_not_a_hang():
    """Two one-concept categories have a single cross-category pair; asking for two must fail fast."""
    v = Vocabulary({"a": ["x"], "b": ["y"]})

    def timeout(*_):
        raise TimeoutError("random_pairs(2) still running after 2 s: it loops forever")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(2)
    try:
        with pytest.raises(SSAEError):
            v.random_pairs(2)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_a_typed_vocabulary_defaults_to_the_portraits_and_typed_labels_resolve():
    assert Vocabulary.parse("  ") == Vocabulary.portraits()
    assert Vocabulary.parse(VOCAB.to_json()) == VOCAB
    assert VOCAB.parse_labels("blond, boat ,hat") == ["A blond girl", "on a boat", "and a hat"]
    assert VOCAB.parse_labels("A brunette girl, on a boat, and a baseball cap, looking to the left") == \
        ["A brunette girl", "on a boat", "and a baseball cap", "looking to the left"], "a whole prompt"
    with pytest.raises(VocabularyError, match="no concept of the vocabulary found in 'a red car'.*A blond girl"):
        VOCAB.parse_labels("a red car")
