"""The concept world: vocabulary properties, held-out pairs, and the render -> measure round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ssae.world.measure import measure, read_image
from ssae.world.render import SHAPE_AREA, coverage, render
from ssae.world.scene import (
    BACKGROUND_RGB,
    IMAGE_SIZE,
    OBJECT_RGB,
    QUADRANT_CENTRE,
    VOCABULARY,
    Scene,
    make_world,
    random_scene,
    world_vocabulary,
)


def test_vocabulary_is_unambiguous():
    vocab = world_vocabulary()
    assert len(vocab.categories) >= 4 and all(3 <= len(cs) <= 4 for cs in vocab.categories.values())
    phrases = vocab.concepts
    assert len(set(phrases)) == len(phrases)
    assert not [(a, b) for a in phrases for b in phrases if a != b and a in b], "no phrase inside another"
    for combo in vocab.all_combinations():
        assert vocab.parse_prompt(vocab.prompt(combo)) == list(combo)
    assert vocab.prompt(("a circle", "red", "on black", "top left")) == "a circle, red, on black, top left"


def test_every_concept_has_a_ground_truth():
    assert set(VOCABULARY["colour"]) == set(OBJECT_RGB)
    assert set(VOCABULARY["background"]) == set(BACKGROUND_RGB)
    assert set(VOCABULARY["position"]) == set(QUADRANT_CENTRE)
    assert set(VOCABULARY["shape"]) == set(SHAPE_AREA)


def test_heldout_pairs_split_the_combinations():
    world = make_world(4, seed=0)
    assert len(world.heldout_pairs) == 4
    vocab = world.vocabulary
    for a, b in world.heldout_pairs:
        assert vocab.category_of(a) != vocab.category_of(b)
    train, test = world.train_combinations, world.test_combinations
    assert len(train) + len(test) == len(vocab.all_combinations())
    assert not [c for c in train for a, b in world.heldout_pairs if a in c and b in c]
    assert all(any(a in c and b in c for a, b in world.heldout_pairs) for c in test)
    assert {x for c in train for x in c} == set(vocab.concepts), "every concept is still seen in training"
    assert make_world(4, seed=0) == world and make_world(4, seed=1) != world


def test_render_is_deterministic_and_jittered():
    combo = ("a cross", "blue", "on grey", "bottom right")
    a, b = render(random_scene(combo, 3)), render(random_scene(combo, 3))
    assert a.dtype == np.uint8 and a.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render(random_scene(combo, 4)))


def test_measure_reads_back_every_combination():
    world = make_world()
    for i, combo in enumerate(world.combinations):
        for seed in (i, 10_000 + i):
            img = render(random_scene(combo, seed))
            assert measure(img) == dict(zip(VOCABULARY, combo)), (combo, seed)


def test_measure_accepts_floats_tensors_and_comfy_batches():
    combo = ("a triangle", "yellow", "on white", "top right")
    img = render(random_scene(combo, 1))
    expected = dict(zip(VOCABULARY, combo))
    assert measure(img.astype(np.float32) / 255) == expected
    assert measure(torch.from_numpy(img)[None].float() / 255) == expected  # ComfyUI IMAGE [1, H, W, 3]
    with pytest.raises(ValueError, match="RGB image"):
        measure(np.zeros((64, 64)))


def test_measure_is_robust_to_noise_and_blur():
    rng = np.random.default_rng(0)
    world = make_world()
    for i, combo in enumerate(world.combinations[::7]):
        img = render(random_scene(combo, i)).astype(np.float64) / 255
        blurred = (img + np.roll(img, 1, 0) + np.roll(img, -1, 0) + np.roll(img, 1, 1) + np.roll(img, -1, 1)) / 5
        noisy = np.clip(blurred + rng.normal(0, 0.05, img.shape), 0, 1)
        assert measure(noisy) == dict(zip(VOCABULARY, combo)), combo


def test_an_empty_image_reads_only_its_background():
    reading = read_image(np.full((64, 64, 3), 128, np.uint8))
    assert reading.concepts == {"shape": None, "colour": None, "background": "on grey", "position": None}
    assert not reading.matches(("a circle", "red", "on grey", "top left"))["shape"]


def test_shape_areas_match_coverage():
    for shape, area in SHAPE_AREA.items():
        assert coverage(shape, 32.3, 31.6, 10).sum() == pytest.approx(area * 100, rel=0.03)


def test_scene_concepts_by_category():
    scene = Scene(("a square", "green", "on black", "top left"))
    assert scene.concept("colour") == "green" and scene.concept("position") == "top left"
