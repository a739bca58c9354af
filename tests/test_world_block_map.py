"""The block map's graphs, table and heat map, and the pixel measures of block edits (object mask, IoU, pieces)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ssae.block_map import heat_map, site_grid
from ssae.world.block_map import capture_sites_graph, map_edit_graph, map_sites, reading_agreement
from ssae.world.build import COMFY_NAMES
from ssae.world.evaluate import EditCase
from ssae.world.measure import fragments, object_mask
from ssae.world.recipe import SamplingDefaults
from ssae.world.render import render
from ssae.world.scene import CONCEPT, PAPER, Scene, make_world
from ssae.world.scores import mask_iou
from tests.world_stand_in import PerfectComfy


def test_object_mask_iou_and_fragments():
    a = object_mask(render(Scene(("a circle", "red", "on grey", "top left"))))
    moved = object_mask(render(Scene(("a circle", "red", "on grey", "bottom right"))))
    recoloured = object_mask(render(Scene(("a circle", "blue", "on white", "top left"))))
    assert 150 < a.sum() < 700 and a[:32, :32].sum() == a.sum()
    assert mask_iou(a, moved) == 0.0 and mask_iou(a, recoloured) > 0.9 and mask_iou(a, a) == 1.0
    assert fragments(a) == 1 and fragments(np.zeros_like(a)) == 0
    split = a.copy()
    split[:, int(np.nonzero(a.any(0))[0].mean())] = False  # a one-pixel cut through the middle
    assert fragments(split) == 2
    assert fragments(split | moved) == 3
    assert object_mask(np.full((64, 64, 3), 128, np.uint8)).sum() == 0


def test_capture_graph_chains_one_capture_per_site_on_one_sampler():
    sites = map_sites(2)
    assert sites == ["joint_blocks.0.txt_in", "joint_blocks.0.img", "joint_blocks.1.txt_in", "joint_blocks.1.img"]
    g = capture_sites_graph(COMFY_NAMES, "{}", 192, "", {s: f"set_{k}" for k, s in enumerate(sites)}, 3,
                            SamplingDefaults())
    assert [k for k in g if k.startswith("sample")] == ["sample"] and g["sample"]["inputs"]["seed"] == 3
    assert g["sample"]["inputs"]["model"] == ["capture_3", 0] and g["capture_0"]["inputs"]["model"] == ["model", 0]
    assert [g[f"capture_{k}"]["inputs"]["site"] for k in range(4)] == sites
    assert {g[f"store_{k}"]["inputs"]["name"] for k in range(4)} == {f"set_{k}" for k in range(4)}
    combo = ("a circle", "red", "on grey", "top left")
    case = EditCase(combo, ("a cross", *combo[1:]), 7, ("shape",))
    e = map_edit_graph(COMFY_NAMES, {s: f"{s}.safetensors" for s in sites}, "p", case, SamplingDefaults(), "x", 1.0)
    assert sorted(k for k in e if k.startswith("save_")) == ["save_base"] + [f"save_site_{k}" for k in range(4)]
    assert [e[f"patch_site_{k}"]["inputs"]["site"] for k in range(4)] == sites
    assert json.loads(e["concepts_site_0"]["inputs"]["concepts"]) == {"add": {"a cross": 1.0},
                                                                     "remove": {"a circle": 1.0}}
    assert {e[k]["inputs"]["seed"] for k in e if k.startswith("sample_")} == {7}


def test_agreement_of_the_movement_reading_with_the_pixels():
    sites = {"a": ([1.0, 1.0], [0.9, 0.2]), "b": ([0.0, 1.0], [0.1, 0.4]), "c": ([0.0, 0.0], [0.3, 0.1])}
    report = {"categories": ["shape", "colour"], "sites": {
        f"joint_blocks.0.{k}": {"success_per_category": dict(zip(["shape", "colour"], s)),
                                "movement_per_category": dict(zip(["shape", "colour"], m))}
        for k, (s, m) in sites.items()}}
    r = reading_agreement(report, "movement_per_category")
    assert r["first_is_best_site"] == {"shape": True, "colour": True}  # colour: b moves most, b succeeds
    assert r["rank_correlation"] == pytest.approx(0.6931, abs=1e-4)  # scipy.stats.spearmanr gives the same
    report["sites"]["joint_blocks.0.c"]["movement_per_category"]["shape"] = 2.0
    assert reading_agreement(report, "movement_per_category")["first_is_best_site"]["shape"] is False


def test_heat_map_is_blocks_by_categories_per_stream():
    cats = list(CONCEPT.categories)
    report = {"depth": 2, "streams": ["txt_in", "img"], "categories": cats, "cases": 8, "sites": {
        "joint_blocks.0.txt_in": {"success_per_category": dict(zip(cats, [1.0, 0.5, 0.0, 1.0]))},
        "joint_blocks.1.img": {"success_per_category": dict(zip(cats, [0.0, 0.0, 0.25, 0.0]))}}}
    grid = site_grid(report, "txt_in")
    assert grid.shape == (2, 4) and grid[0].tolist() == [1.0, 0.5, 0.0, 1.0] and np.isnan(grid[1]).all()
    assert site_grid(report, "img")[1, 2] == 0.25
    img = heat_map(report)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.std() > 10


@pytest.mark.parametrize("spec", [CONCEPT, PAPER], ids=["concept", "paper"])
def test_block_map_of_a_server_that_edits_exactly(spec, tmp_path):
    """The whole map against a stand-in that edits exactly: every site swaps every category and keeps the rest,
    each category has its cases, and the table and heat map are written."""
    from ssae.world.block_map import MapSettings, block_map
    from ssae.world.build import BuiltWorld
    from ssae.world.recipe import recipe_for
    recipe = recipe_for(spec.name)
    built = BuiltWorld(tmp_path, make_world(4, 0, spec), recipe, recipe.hashes(), (0.5,) * 3, (0.2,) * 3)
    r = block_map(PerfectComfy(spec), built, tmp_path / "map", MapSettings(prompts=48, cases_per_category=2))
    assert r["categories"] == list(spec.categories) and r["cases"] == 2 * len(spec.categories)
    assert list(r["sites"]) == map_sites(recipe.dit.depth)
    for site in r["sites"].values():
        assert site["success"] == site["preservation"] == 1.0
        assert site["success_per_category"] == dict.fromkeys(spec.categories, 1.0)
        assert site["movement_per_category"] == site["toward_prompt_per_category"] == dict.fromkeys(spec.categories,
                                                                                                  1.0)
    for key in ("movement_per_category", "toward_prompt_per_category"):
        assert r["agreement"][key] == {"first_is_best_site": dict.fromkeys(spec.categories, True),
                                       "rank_correlation": None}, "one reading is the same everywhere: no correlation"
    assert r["node_swaps"] == 4 * sum(len(v) - 1 for v in spec.categories.values())
    assert json.loads((tmp_path / "map" / "block_map.json").read_text())["sites"] == r["sites"]
    assert (tmp_path / "map" / "block_map.png").stat().st_size
    assert (tmp_path / "map" / "block_map_movement.png").stat().st_size
    assert (tmp_path / "map" / "block_map_toward.png").stat().st_size
