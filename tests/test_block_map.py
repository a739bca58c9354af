"""The block map's maths: which swaps a map makes, how far a sample moved, the table, the order of sites."""
import pytest
import torch
from builders import VOCAB

from ssae.block_map import Swap, category_swaps, movement_table, relative_distance, site_order
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


def test_movement_is_the_distance_over_the_reference_size_averaged_per_category():
    ref = torch.ones(1, 4, 2, 2)
    assert relative_distance(ref, ref) == 0.0
    assert relative_distance(ref, 3 * ref) == pytest.approx(2.0)
    swaps = [Swap("hair", "a", "b"), Swap("place", "c", "d"), Swap("place", "c", "e")]
    table = movement_table(swaps, {"joint_blocks.0.img": [0.3, 0.1, 0.5]})
    assert table["joint_blocks.0.img"] == {"movement": pytest.approx(0.3),
                                           "movement_per_category": {"hair": 0.3, "place": pytest.approx(0.3)}}
    with pytest.raises(ValueError, match="2 distances for 3 swaps"):
        movement_table(swaps, {"joint_blocks.0.img": [0.3, 0.1]})


def test_sites_sort_by_block_then_text_before_image():
    sites = ["joint_blocks.1.img", "joint_blocks.10.txt_in", "joint_blocks.1.txt", "joint_blocks.1.txt_in",
             "joint_blocks.2.img_in"]
    assert sorted(sites, key=site_order) == ["joint_blocks.1.txt_in", "joint_blocks.1.txt", "joint_blocks.1.img",
                                             "joint_blocks.2.img_in", "joint_blocks.10.txt_in"]
