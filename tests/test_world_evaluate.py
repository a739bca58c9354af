"""ssae.world.evaluate's pure parts: the edit cases, the graphs it queues, and the scores."""
import json

import pytest

from ssae.world.__main__ import main
from ssae.world.build import COMFY_NAMES
from ssae.world.evaluate import EditCase, edit_cases, edit_graph, edit_scores, shows
from ssae.world.graphs import capture_block_graph, capture_conditioning_graph
from ssae.world.measure import Reading
from ssae.world.recipe import SamplingDefaults
from ssae.world.scene import VOCABULARY, make_world

WORLD = make_world()
CATEGORIES = list(VOCABULARY)


def reading(combo) -> Reading:
    return Reading(dict(zip(CATEGORIES, combo)))


def test_edit_cases_swap_each_category_in_turn_for_a_known_mix():
    cases = edit_cases(WORLD.train_combinations, 40, seed=3)
    known = set(WORLD.train_combinations)
    assert len(cases) == 40 and len({c.seed for c in cases}) == 40
    assert {c.category for c in cases} == set(CATEGORIES)
    for c in cases:
        assert c.combo in known and c.edited in known and c.old != c.new
        assert [a != b for a, b in zip(c.combo, c.edited)] == [k == c.category for k in CATEGORIES]
    assert edit_cases(WORLD.train_combinations, 40, seed=3) == cases


def test_edit_graph_samples_every_variant_from_one_seed():
    case = EditCase(("a circle", "red", "on grey", "top left"), 11, "colour", "blue")
    files = {"conditioning": "c.safetensors", "block": "b.safetensors", "meandiff_conditioning": "mc.safetensors",
             "meandiff_block": "mb.safetensors"}
    g = edit_graph(COMFY_NAMES, files, WORLD.prompt(case.combo), case, SamplingDefaults(), "p",
                   WORLD.prompt(case.edited), strength=1.0, block_strength=2.0, identity=True)
    saved = sorted(k.removeprefix("save_") for k in g if k.startswith("save_"))
    assert saved == sorted(["base", "prompt_edit", *files, "conditioning_0", "block_0"])
    assert {g[k]["inputs"]["seed"] for k in g if k.startswith("sample_")} == {11}
    assert g["patch_block"]["inputs"]["strength"] == 2.0 and g["patch_block_0"]["inputs"]["strength"] == 0.0
    assert g["apply_conditioning"]["inputs"]["strength"] == 1.0 and g["apply_conditioning_0"]["inputs"]["strength"] == 0
    swap = json.loads(g["concepts_block"]["inputs"]["concepts"])
    assert swap == {"add": {"blue": 1.0}, "remove": {"red": 1.0}}
    assert g["edited"]["inputs"]["text"] == "a circle, blue, on grey, top left"
    plain = edit_graph(COMFY_NAMES, {"conditioning": "c.safetensors"}, WORLD.prompt(case.combo), case,
                       SamplingDefaults(), "p")
    assert sorted(k for k in plain if k.startswith("save_")) == ["save_base", "save_conditioning"]


def test_capture_graphs_are_one_press_over_the_prompt_set():
    cond = capture_conditioning_graph(COMFY_NAMES, "{}", 192, "red + top left", "set")
    assert [n["class_type"] for n in cond.values()] == ["CLIPLoader", "SSAEPromptSet", "CLIPTextEncode",
                                                        "SSAECaptureConditioning", "SSAESaveFeatures"]
    block = capture_block_graph(COMFY_NAMES, "{}", 192, "", "set", "joint_blocks.0.txt", 1, SamplingDefaults(),
                                "append")
    assert block["capture"]["inputs"]["sample"] == ["prompts", 1] and block["sample"]["inputs"]["seed"] == 1
    assert block["store"]["inputs"]["if_exists"] == "append" and "vae" not in block


def test_edit_scores_and_shows():
    cases = [EditCase(("a circle", "red", "on grey", "top left"), 0, "colour", "blue"),
             EditCase(("a square", "green", "on black", "top right"), 1, "shape", "a cross")]
    base = [reading(c.combo) for c in cases]
    edited = [reading(("a circle", "blue", "on grey", "top left")),  # swapped, rest kept
              reading(("a square", "green", "on white", "top right"))]  # not swapped, background lost
    s = edit_scores(base, edited, cases)
    assert (s["success"], s["preservation"], s["both"], s["n"]) == (0.5, 0.5, 0.5, 2)
    assert s["success_per_category"] == {"shape": 0.0, "colour": 1.0}
    assert shows(base, [c.combo for c in cases]) == [True, True]
    assert shows(edited, [c.combo for c in cases]) == [False, False]


def test_cli_evaluate_names_a_missing_world(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "none"), "--url", "http://127.0.0.1:9"]) == 2
    assert "holds no built world" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--block-strength", "--strength"])
def test_cli_evaluate_documents_its_options(flag, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert flag in capsys.readouterr().out
