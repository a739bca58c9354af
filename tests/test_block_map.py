"""The block map's maths: which swaps a map makes, how far a sample moved, the table, the order of sites."""
import pytest
import torch
from builders import VOCAB

from ssae.block_map import (
    Swap,
    best_sites,
    category_swaps,
    relative_distance,
    site_order,
    site_readings,
    swapped_prompt,
    toward_target,
)
from ssae.errors import SSAEError


def test_swaps_take_the_next_concepts_of_each_named_category_and_skip_untrained_ones():
    prompt = ["A brunette girl", "on a boat", "and a hat"]  # names no pose
    swaps, notes = category_swaps(VOCAB, prompt, 2)
    assert swaps == [Swap("hair", "A brunette girl", "A blond girl"), Swap("place", "on a boat", "at a market"),
                     Swap("place", "on a boat", "at the beach"), Swap("hat", "and a hat", "and a baseball cap")]
    assert notes == []
    swaps, notes = category_swaps(VOCAB, prompt, 1, untrained={"at a market", "and a baseball cap"})
    assert swaps == [Swap("hair", "A brunette girl", "A blond girl"), Swap("place", "on a boat", "at the beach")]
    assert notes == ["hat: no swap (every other concept is untrained in an SSAE of the map)"]
    _, notes = category_swaps(VOCAB, prompt, 1, untrained={"on a boat"})
    assert notes == ["place: no swap (on a boat is untrained in an SSAE of the map)"]
    with pytest.raises(SSAEError, match="names no concept"):
        category_swaps(VOCAB, [], 1)
    with pytest.raises(SSAEError, match="1 or more"):
        category_swaps(VOCAB, prompt, 0)


def test_readings_of_a_site_movement_and_how_far_toward_the_edited_prompt():
    ref = torch.ones(1, 4, 2, 2)
    assert relative_distance(ref, ref) == 0.0
    assert relative_distance(ref, 3 * ref) == pytest.approx(2.0)
    target = 3 * ref
    assert toward_target(ref, target, target) == 1.0 and toward_target(ref, ref, target) == 0.0
    assert toward_target(ref, 2 * ref, target) == pytest.approx(0.5)
    assert toward_target(ref, -ref, target) == pytest.approx(-1.0), "moved away from the target"
    swaps = [Swap("hair", "a", "b"), Swap("place", "c", "d"), Swap("place", "c", "e")]
    row = site_readings(swaps, ref, [2 * ref, 1.5 * ref, 3 * ref], [target, None, target])
    assert row["movement"] == pytest.approx(3.5 / 3)
    assert row["movement_per_category"] == {"hair": 1.0, "place": pytest.approx(1.25)}
    assert row["toward_prompt_per_category"] == {"hair": pytest.approx(0.5), "place": 1.0}, "the swap with no target"
    assert "toward_prompt" not in site_readings(swaps, ref, [ref] * 3, [None] * 3)
    with pytest.raises(ValueError, match="2 values for 3 swaps"):
        site_readings(swaps, ref, [ref] * 2, [None] * 2)


def test_the_edited_prompt_and_the_best_site_per_category():
    swap = Swap("place", "at a market", "on a boat")
    assert swapped_prompt("A blond girl at a market, and a hat", swap) == "A blond girl on a boat, and a hat"
    assert swapped_prompt("blond, market, hat", swap) is None, "concept names are no prompt"
    assert swapped_prompt("at a market, at a market", swap) is None
    report = {"sites": {"joint_blocks.0.img": {"m": {"hair": 0.1, "place": 0.9}},
                        "joint_blocks.1.img": {"m": {"hair": 0.4}}, "joint_blocks.2.img": {}}}
    assert best_sites(report, "m") == {"hair": "joint_blocks.1.img", "place": "joint_blocks.0.img"}


def test_sites_sort_by_block_then_text_before_image():
    sites = ["joint_blocks.1.img", "joint_blocks.10.txt_in", "joint_blocks.1.txt", "joint_blocks.1.txt_in",
             "joint_blocks.2.img_in"]
    assert sorted(sites, key=site_order) == ["joint_blocks.1.txt_in", "joint_blocks.1.txt", "joint_blocks.1.img",
                                             "joint_blocks.2.img_in", "joint_blocks.10.txt_in"]
