"""The worlds: vocabulary properties, held-out pairs, and the render -> measure round trip of each."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ssae.world.heldout import covering_pairs, phrase_rows, ssae_training_combinations, token_count, uncovered
from ssae.world.measure import measure, read_image
from ssae.world.render import OUTLINE_AREA, coverage, render
from ssae.world.scene import CONCEPT, IMAGE_SIZE, PAPER, WORLDS, Scene, make_world, random_scene, world_vocabulary
from ssae.world.text import END, tokenize

SPECS = pytest.mark.parametrize("spec", list(WORLDS.values()), ids=list(WORLDS))


@SPECS
def test_vocabulary_is_unambiguous(spec):
    vocab = world_vocabulary(spec)
    assert len(vocab.categories) >= 4 and all(2 <= len(cs) <= 6 for cs in vocab.categories.values())
    phrases = vocab.concepts
    assert len(set(phrases)) == len(phrases)
    assert not [(a, b) for a in phrases for b in phrases if a != b and a in b], "no phrase inside another"
    for combo in vocab.all_combinations():
        assert vocab.parse_prompt(vocab.prompt(combo)) == list(combo)


def test_the_first_world_is_as_it_was():
    assert world_vocabulary().prompt(("a circle", "red", "on black", "top left")) == "a circle, red, on black, top left"
    assert make_world().heldout_pairs == (("a triangle", "on black"), ("blue", "top left"), ("bottom left", "yellow"),
                                          ("on black", "top right"))


def test_the_paper_world_varies_phrase_lengths_within_every_category():
    assert len(PAPER.categories) >= 5 and PAPER.generator_sees_heldout
    for cat, phrases in PAPER.categories.items():
        assert len({token_count(p) for p in phrases}) >= 2, cat
    for cat, phrases in CONCEPT.categories.items():
        assert len({token_count(p) for p in phrases}) == 1, cat
    combos = world_vocabulary(PAPER).all_combinations()
    assert len(combos) > PAPER.ssae_prompts, "the SSAE samples a part of the combinations"


@pytest.mark.parametrize("combo", [("a circle", "a deep shade of blue", "on grey paper", "top left", "small"),
                                   ("a plus shaped cross", "red", "on a plain white background", "in the centre",
                                    "very large")])
def test_phrase_rows_are_the_prompts_token_rows(combo):
    """Each phrase's tokens sit where `phrase_rows` says in the tokenized prompt, and the end token after them."""
    ids = tokenize(world_vocabulary(PAPER).prompt(combo))
    for phrase, row in phrase_rows(combo):
        if phrase == "<end>":
            assert ids[row] == END and END not in ids[1:row]
        else:
            n = token_count(phrase)
            assert ids[row:row + n] == tokenize(phrase)[1:1 + n], phrase


def test_heldout_pairs_leave_every_test_phrase_on_rows_training_shows():
    world = make_world(4, 0, PAPER)
    train = ssae_training_combinations(world.vocabulary, world.heldout_pairs, PAPER.ssae_prompts)
    assert len(train) < PAPER.ssae_prompts and not uncovered(train, world.test_combinations)
    # the rule is what makes it so: the first draw of seed 0 leaves phrases on rows training never shows them on
    first = world.vocabulary.random_pairs(4, 0)
    test = [c for c in world.combinations if any(set(p) <= set(c) for p in first)]
    assert uncovered(ssae_training_combinations(world.vocabulary, first, PAPER.ssae_prompts), test)
    assert tuple(covering_pairs(world.vocabulary, 4, 0, PAPER.ssae_prompts)) == world.heldout_pairs != tuple(first)


@SPECS
def test_heldout_pairs_split_the_combinations(spec):
    world = make_world(4, seed=0, spec=spec)
    assert len(world.heldout_pairs) == 4
    vocab = world.vocabulary
    for a, b in world.heldout_pairs:
        assert vocab.category_of(a) != vocab.category_of(b)
    train, test = world.train_combinations, world.test_combinations
    assert len(train) + len(test) == len(vocab.all_combinations())
    assert not [c for c in train for a, b in world.heldout_pairs if a in c and b in c]
    assert all(any(a in c and b in c for a, b in world.heldout_pairs) for c in test)
    assert {x for c in train for x in c} == set(vocab.concepts), "every concept is still seen in training"
    assert make_world(4, seed=0, spec=spec) == world and make_world(4, seed=1, spec=spec) != world
    assert world.generator_combinations == (world.combinations if spec.generator_sees_heldout else train)


def test_render_is_deterministic_and_jittered():
    combo = ("a cross", "blue", "on grey", "bottom right")
    a, b = render(random_scene(combo, 3)), render(random_scene(combo, 3))
    assert a.dtype == np.uint8 and a.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render(random_scene(combo, 4)))


@SPECS
def test_measure_reads_back_every_combination(spec):
    world = make_world(spec=spec)
    step = max(1, len(world.combinations) // 200)  # every combination of the first world, 240 of the paper world's
    for i, combo in enumerate(world.combinations[::step]):
        for seed in (i, 10_000 + i):
            img = render(random_scene(combo, seed, spec), spec)
            assert measure(img, spec) == dict(zip(spec.categories, combo)), (combo, seed)


def test_sizes_are_drawn_and_read():
    small, large = (("a square", "red", "on black", "in the centre", size) for size in PAPER.sizes)
    a, b = (read_image(render(random_scene(c, 0, PAPER), PAPER), PAPER) for c in (small, large))
    assert a.area < 0.7 * b.area and a.concepts["size"] == small[-1] and b.concepts["size"] == large[-1]


def test_measure_accepts_floats_tensors_and_comfy_batches():
    combo = ("a triangle", "yellow", "on white", "top right")
    img = render(random_scene(combo, 1))
    expected = dict(zip(CONCEPT.categories, combo))
    assert measure(img.astype(np.float32) / 255) == expected
    assert measure(torch.from_numpy(img)[None].float() / 255) == expected  # ComfyUI IMAGE [1, H, W, 3]
    with pytest.raises(ValueError, match="RGB image"):
        measure(np.zeros((64, 64)))


@SPECS
def test_measure_is_robust_to_noise_and_blur(spec):
    rng = np.random.default_rng(0)
    world = make_world(spec=spec)
    for i, combo in enumerate(world.combinations[::7]):
        img = render(random_scene(combo, i, spec), spec).astype(np.float64) / 255
        blurred = (img + np.roll(img, 1, 0) + np.roll(img, -1, 0) + np.roll(img, 1, 1) + np.roll(img, -1, 1)) / 5
        noisy = np.clip(blurred + rng.normal(0, 0.05, img.shape), 0, 1)
        assert measure(noisy, spec) == dict(zip(spec.categories, combo)), combo


def test_an_empty_image_reads_only_its_background():
    reading = read_image(np.full((64, 64, 3), 128, np.uint8))
    assert reading.concepts == {"shape": None, "colour": None, "background": "on grey", "position": None}
    assert not reading.matches(("a circle", "red", "on grey", "top left"))["shape"]
    assert not reading.mask((64, 64)).any()


def test_outline_areas_match_coverage():
    for outline, area in OUTLINE_AREA.items():
        assert coverage(outline, 32.3, 31.6, 10).sum() == pytest.approx(area * 100, rel=0.03)


def test_every_concept_has_a_ground_truth():
    for spec in WORLDS.values():
        assert set(spec.shapes.values()) <= set(OUTLINE_AREA)
        assert list(spec.categories) == [c for c in ("shape", "colour", "background", "position", "size")
                                         if c in spec.categories]


def test_a_scene_holds_its_combination():
    scene = Scene(("a square", "green", "on black", "top left"))
    assert CONCEPT.concepts_of(scene.combo)["position"] == "top left"
