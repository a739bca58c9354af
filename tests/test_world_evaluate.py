"""ssae.world.evaluate's pure parts: the settings, the edit cases, the graphs it queues, and the scores."""
import json

import numpy as np
import pytest

from ssae.world.__main__ import main
from ssae.world.build import COMFY_NAMES
from ssae.world.cases import EditCase, compose_cases, edit_cases
from ssae.world.evaluate import EvaluateError, EvaluateSettings, edit_graph, graph_images, image_key
from ssae.world.graphs import capture_block_graph, capture_conditioning_graph
from ssae.world.heldout import ssae_training_combinations
from ssae.world.measure import Reading, read_image
from ssae.world.recipe import SamplingDefaults
from ssae.world.render import render
from ssae.world.scene import CONCEPT, PAPER, Scene, make_world, random_scene
from ssae.world.scores import edit_scores, mask_iou, pixel_preservation, shows, sweep_scores
from tests.world_stand_in import PerfectComfy

WORLD = make_world()
CATEGORIES = list(CONCEPT.categories)
METHOD_FILES = {(site, m): f"{site}_{m}.safetensors" for site in ("conditioning", "block")
                for m in ("default", "additive", "mean-difference")}


def reading(combo) -> Reading:
    return Reading(dict(zip(CATEGORIES, combo)))


def case(combo, edited, seed=11) -> EditCase:
    return EditCase(combo, edited, seed, tuple(k for k, a, b in zip(CATEGORIES, combo, edited) if a != b))


def test_single_edits_swap_each_category_in_turn_for_a_training_mix():
    cases = edit_cases(WORLD.train_combinations, WORLD.train_combinations, WORLD.vocabulary.categories, 40, seed=3)
    known = set(WORLD.train_combinations)
    assert len(cases) == 40 and len({c.seed for c in cases}) == 40
    assert {c.category for c in cases} == set(CATEGORIES)
    for c in cases:
        assert c.combo in known and c.edited in known and c.old != c.new
        assert [a != b for a, b in zip(c.combo, c.edited)] == [k == c.category for k in CATEGORIES]
    assert edit_cases(WORLD.train_combinations, WORLD.train_combinations, WORLD.vocabulary.categories, 40,
                      seed=3) == cases
    # the first world's cases are those its published figures were measured on (as the code before sampled them)
    first = edit_cases(WORLD.train_combinations, WORLD.train_combinations, WORLD.vocabulary.categories, 3)
    assert [(c.combo, c.new, c.seed) for c in first] == [
        (("a triangle", "yellow", "on white", "top left"), ("a circle",), 30_000),
        (("a cross", "red", "on white", "top left"), ("green",), 30_001),
        (("a circle", "red", "on grey", "bottom right"), ("on black",), 30_002)]


def test_double_edits_and_edits_into_heldout_mixes():
    world = make_world(4, 0, PAPER)
    seen = ssae_training_combinations(world.vocabulary, world.heldout_pairs, PAPER.ssae_prompts)
    double = edit_cases(seen, world.train_combinations, world.vocabulary.categories, 30, 2, kind="double")
    assert all(len(c.categories) == 2 and len(c.new) == 2 and c.combo in seen for c in double)
    assert len({c.categories for c in double}) == 10, "every pair of the 5 categories in turn"
    into = edit_cases(seen, world.test_combinations, world.vocabulary.categories, 30, 1, kind="into_heldout")
    held = set(world.test_combinations)
    assert all(c.combo in seen and c.edited in held and len(c.categories) == 1 for c in into)
    assert {c.seed for c in into}.isdisjoint({c.seed for c in double})
    with pytest.raises(ValueError, match="no seen combination"):
        edit_cases(seen[:1], [seen[0]], world.vocabulary.categories, 1)


def test_compose_cases_spread_a_limit_over_the_heldout_mixes():
    test = WORLD.test_combinations
    every = compose_cases(test, 2, None)
    assert len(every) == 2 * len(test) and len({s for _, s in every}) == len(every)
    few = compose_cases(test, 2, 8)
    assert len(few) == 8 and len({c for c, _ in few}) == 8 and set(few) != set(every[:8])


def test_edit_graph_samples_every_method_and_site_from_one_seed():
    c = case(("a circle", "red", "on grey", "top left"), ("a circle", "blue", "on grey", "top left"))
    settings = EvaluateSettings(block_strength=2.0, block_end=0.5)
    g = edit_graph(COMFY_NAMES, METHOD_FILES, WORLD.prompt(c.combo), c, SamplingDefaults(), "p", settings,
                   WORLD.prompt(c.edited), identity=True, sweep=True)
    saved = {k.removeprefix("save_") for k in g if k.startswith("save_")}
    sweeps = {image_key("conditioning", m, s) for m in ("default", "additive", "mean-difference")
              for s in settings.sweep_strengths}
    assert saved == {"base", "prompt_edit", *(image_key(*k) for k in METHOD_FILES), "conditioning_default_s0",
                     "block_default_s0", *sweeps}
    assert {g[k]["inputs"]["seed"] for k in g if k.startswith("sample_")} == {11}
    patches = [n for n in g.values() if n["class_type"] == "SSAEPatchModel"]
    assert len(patches) == 4 and {p["inputs"]["end_percent"] for p in patches} == {0.5}
    assert g["patch_block_default"]["inputs"]["strength"] == 2.0
    assert g["patch_block_default_s0"]["inputs"]["strength"] == 0
    assert g["apply_conditioning_additive_s1.5"]["inputs"]["strength"] == 1.5
    swap = json.loads(g["concepts_block_mean-difference"]["inputs"]["concepts"])
    assert swap == {"add": {"blue": 1.0}, "remove": {"red": 1.0}}
    assert g["edited"]["inputs"]["text"] == "a circle, blue, on grey, top left"
    plain = edit_graph(COMFY_NAMES, {("conditioning", "default"): "c.safetensors"}, WORLD.prompt(c.combo), c,
                       SamplingDefaults(), "p", settings)
    assert sorted(k for k in plain if k.startswith("save_")) == ["save_base", "save_conditioning_default"]


def test_capture_graphs_are_one_press_over_the_prompt_set():
    cond = capture_conditioning_graph(COMFY_NAMES, "{}", 192, "red + top left", "set")
    assert [n["class_type"] for n in cond.values()] == ["CLIPLoader", "SSAEPromptSet", "CLIPTextEncode",
                                                        "SSAECaptureConditioning", "SSAESaveFeatures"]
    block = capture_block_graph(COMFY_NAMES, "{}", 192, "", "set", "joint_blocks.0.txt", 1, SamplingDefaults(),
                                "append")
    assert block["capture"]["inputs"]["sample"] == ["prompts", 1] and block["sample"]["inputs"]["seed"] == 1
    assert block["store"]["inputs"]["if_exists"] == "append" and "vae" not in block


def test_edit_scores_and_shows():
    cases = [case(("a circle", "red", "on grey", "top left"), ("a circle", "blue", "on grey", "top left")),
             case(("a square", "green", "on black", "top right"), ("a cross", "green", "on black", "top right")),
             case(("a square", "green", "on black", "top right"), ("a square", "red", "on white", "top right"))]
    base = [reading(c.combo) for c in cases]
    edited = [reading(("a circle", "blue", "on grey", "top left")),  # swapped, rest kept
              reading(("a square", "green", "on white", "top right")),  # not swapped, background lost
              reading(("a square", "red", "on grey", "top right"))]  # one of two swapped: not a success
    s = edit_scores(base, edited, cases)
    assert (s["success"], s["preservation"], s["both"], s["n"]) == (1 / 3, 2 / 3, 1 / 3, 3)
    assert s["success_per_category"] == {"shape": 0.0, "colour": 0.5, "background": 0.0}
    assert shows(base, [c.combo for c in cases]) == [True, True, True]
    assert shows(edited, [c.combo for c in cases]) == [False, False, False]


def test_pixel_preservation_reads_masks_and_background():
    combo = ("a square", "red", "on black", "top left")
    base_img = render(Scene(combo))
    recoloured = render(Scene(("a square", "blue", "on black", "top left")))
    moved = render(Scene(("a square", "red", "on black", "bottom right")))
    base, rec, mov = (read_image(i) for i in (base_img, recoloured, moved))
    assert mask_iou(base.mask((64, 64)), rec.mask((64, 64))) == pytest.approx(1.0, abs=0.02)
    assert mask_iou(base.mask((64, 64)), mov.mask((64, 64))) == 0.0
    colour = case(combo, ("a square", "blue", "on black", "top left"))
    p = pixel_preservation([base_img], [recoloured], [base], [rec], [colour])
    assert p["mask_iou"] == pytest.approx(1.0, abs=0.02) and (p["mask_iou_n"], p["background_error_n"]) == (1, 1)
    assert p["background_error"] == 0.0
    # an edit that keeps the shape but shifts the background and drifts the object is seen in pixels
    drift = render(Scene(("a square", "blue", "on black", "top left"), dx=4.0, background_jitter=(0.1, 0.1, 0.1)))
    p = pixel_preservation([base_img], [drift], [base], [read_image(drift)], [colour])
    assert p["mask_iou"] < 0.8 and p["background_error"] == pytest.approx(0.1 * 255, abs=1)
    # a background edit counts in the mask IoU only, a position edit in the background error only
    background = case(combo, ("a square", "red", "on white", "top left"))
    p = pixel_preservation([base_img], [moved], [base], [mov], [background])
    assert p["mask_iou"] == 0.0 and p["background_error"] is None
    position = case(combo, ("a square", "red", "on black", "bottom right"))
    p = pixel_preservation([base_img], [moved], [base], [mov], [position])
    assert p["mask_iou"] is None and p["background_error"] == 0.0


def test_sweep_scores_rise_with_strength():
    cases = [case(("a circle", "red", "on grey", "top left"), ("a circle", "blue", "on grey", "top left"))] * 2
    r = lambda colour: reading(("a circle", colour, "on grey", "top left"))  # noqa: E731
    s = sweep_scores({0.0: [r("red"), r("red")], 1.0: [r("blue"), r("red")], 1.5: [r("blue"), r("blue")]}, cases)
    assert s["success"] == [0.0, 0.5, 1.0] and s["monotonic"]
    assert not sweep_scores({0.0: [r("blue")] * 2, 1.0: [r("red")] * 2}, cases)["monotonic"]


class StubClient:
    """What `graph_images` asks of a ComfyClient: the images an entry's node saved."""

    def images(self, entry, node=None):
        return [np.zeros((2, 2, 3), np.uint8)] * len(entry["outputs"].get(node, {}).get("images", []))


def test_a_case_missing_an_image_is_an_error_naming_it():
    graphs = [{"save_base": {}, "save_block_default": {}}] * 2
    full = {"outputs": {"save_base": {"images": [1]}, "save_block_default": {"images": [1]}}}
    lacking = {"outputs": {"save_base": {"images": [1]}}}
    assert [sorted(x) for x in graph_images(StubClient(), graphs, [full, full], ["a", "b"])] == \
           [["base", "block_default"]] * 2
    with pytest.raises(EvaluateError, match="case single_0001: ComfyUI returned 0 images for save_block_default"):
        graph_images(StubClient(), graphs, [full, lacking], ["single_0000", "single_0001"])


@pytest.mark.parametrize("field", ["cases", "compose_cases", "prompts", "compose_seeds", "block_seeds"])
def test_settings_that_give_no_measure_are_refused(field):
    with pytest.raises(EvaluateError, match=field):
        EvaluateSettings(**{field: 0})
    with pytest.raises(EvaluateError, match="sweep_strengths"):
        EvaluateSettings(sweep_strengths=(0.5, 1.0))


@pytest.mark.parametrize("flag", ["--cases", "--compose-cases", "--prompts", "--compose-seeds"])
def test_cli_evaluate_refuses_zero_counts_before_sampling(flag, capsys):
    """Before: --cases 0 and --compose-cases 0 failed with ZeroDivisionError after all the sampling, and
    --prompts 0 meant every combination; now each is refused before the server is asked anything."""
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "/nonexistent", "--url", "http://127.0.0.1:9", flag, "0"])
    assert e.value.code == 2 and ">= 1, got '0'" in capsys.readouterr().err


def test_cli_evaluate_names_a_missing_world(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "none"), "--url", "http://127.0.0.1:9"]) == 2
    assert "holds no built world" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--block-strength", "--strength", "--double-cases", "--heldout-cases",
                                  "--sweep-cases"])
def test_cli_evaluate_documents_its_options(flag, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert flag in capsys.readouterr().out


def test_paper_world_scenes_round_trip_through_the_grid_reader():
    combo = ("a triangle pointing up", "magenta", "on grey paper", "in the centre", "small")
    img = render(random_scene(combo, 5, PAPER), PAPER)
    assert shows([read_image(img, PAPER)], [combo]) == [True]


@pytest.mark.parametrize("spec", [CONCEPT, PAPER], ids=["concept", "paper"])
def test_evaluate_scores_a_perfect_server_perfectly(spec, tmp_path):
    """The whole evaluation against a server that edits and composes exactly: every measure reads 1 (or 0 for the
    background error), the sweep rises from 0, and the report, table and grid are written."""
    from ssae.world.build import BuiltWorld
    from ssae.world.evaluate import evaluate
    from ssae.world.recipe import recipe_for
    recipe = recipe_for(spec.name)
    built = BuiltWorld(tmp_path, make_world(4, 0, spec), recipe, recipe.hashes(), (0.5,) * 3, (0.2,) * 3)
    settings = EvaluateSettings(cases=8, double_cases=4, heldout_cases=4, sweep_cases=2, identity_cases=2,
                                compose_seeds=1, compose_cases=4)
    r = evaluate(PerfectComfy(spec), built, tmp_path / "out", settings)
    assert r["base_accuracy"] == 1.0 and r["strength_zero_identical"] == {"conditioning": True, "block": True}
    for key in ("single_edits", "double_edits", "edit_into_heldout"):
        for s in [r[key]["prompt"], *(r[key][site][m] for site in ("conditioning", "block")
                                      for m in ("default", "additive", "mean-difference"))]:
            assert (s["success"], s["preservation"], s["agrees_with_prompt"]) == (1.0, 1.0, 1.0), key
    pixel = r["pixel_preservation"]["single"]["conditioning"]["default"]
    assert pixel["mask_iou"] > 0.98 and pixel["background_error"] < 0.01, "the measure's own floor on exact renders"
    assert r["compose_accuracy"] == dict.fromkeys(["default", "additive", "mean-difference", "prompt"], 1.0)
    sweep = r["strength_sweep"]["default"]
    assert sweep["success"][0] == 0.0 and sweep["success"][-1] == 1.0 and sweep["monotonic"] and sweep["zero_identical"]
    assert r["heldout_ev"]["block"]["additive"] == 0.9 and r["world_name"] == spec.name
    assert (tmp_path / "out" / "evaluate_grid.png").stat().st_size and "| prompt | – |" in r["markdown"]
