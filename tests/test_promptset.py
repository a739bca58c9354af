"""ssae.promptset: sampled prompt sets with held-out pairs, their labels and splits, and typed pairs."""
import pytest
from builders import VOCAB

from ssae import Vocabulary, VocabularyError
from ssae.promptset import parse_pairs, prompt_set


def test_prompt_set_labels_every_prompt_with_its_concepts_and_holds_pairs_out_of_training():
    vocab = Vocabulary.portraits()
    samples, pairs = prompt_set(vocab, 200, seed=3, heldout=4)
    assert len(samples) == 200 and len({s.prompt for s in samples}) == 200 and len(pairs) == 4
    for s in samples:
        assert s.prompt == vocab.prompt(s.concepts) and vocab.parse_prompt(s.prompt) == list(s.concepts)
        holds_pair = any(set(p) <= set(s.concepts) for p in pairs)
        assert s.split == ("test" if holds_pair else "train")
    assert {s.split for s in samples} == {"train", "test"}
    again, same_pairs = prompt_set(vocab, 200, seed=3, heldout=4)
    assert again == samples and same_pairs == pairs, "a seed gives the same set"
    assert prompt_set(vocab, 200, seed=4)[0] != samples


def test_given_pairs_replace_drawn_ones_and_small_vocabularies_give_every_combination():
    samples, pairs = prompt_set(VOCAB, 1000, heldout=[("boat", "blond")])
    assert len(samples) == len(VOCAB.all_combinations()) and pairs == [("A blond girl", "on a boat")]
    assert [s.split for s in samples].count("test") == 2 * 2, "blond + boat with either hat and either pose"
    assert prompt_set(VOCAB, 10, heldout=0)[1] == [] and {s.split for s in prompt_set(VOCAB, 10, heldout=0)[0]} == {
        "train"}


def test_parse_pairs_resolves_fragments_and_refuses_what_cannot_be_held_out():
    assert parse_pairs("blond + boat; hat + left\n", VOCAB) == [("A blond girl", "on a boat"),
                                                                 ("and a hat", "looking to the left")]
    assert parse_pairs("  ", VOCAB) == []
    with pytest.raises(VocabularyError, match="two concepts joined by '\\+'"):
        parse_pairs("blond, boat", VOCAB)
    with pytest.raises(VocabularyError, match="both 'hair'"):
        parse_pairs("blond + brunette", VOCAB)
    with pytest.raises(VocabularyError, match="unknown concept 'purple'"):
        parse_pairs("purple + boat", VOCAB)


def test_a_set_with_nothing_left_to_train_on_is_refused():
    v = Vocabulary({"a": ["a0"], "b": ["b0", "b1"]})
    with pytest.raises(VocabularyError, match="nothing is left to train on"):
        prompt_set(v, 2, heldout=[("a0", "b0"), ("a0", "b1")])
    with pytest.raises(VocabularyError, match="at least one prompt"):
        prompt_set(v, 0)
