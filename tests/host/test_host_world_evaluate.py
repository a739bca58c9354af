"""A reduced evaluation of the concept world through a real ComfyUI: the pack's own nodes capture a prompt set at
the conditioning and at a joint block, SSAE Train fits the SSAEs, and edits made by SSAE Apply to Conditioning
and SSAE Patch Model are read back in pixels."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ssae.world.comfy_client import ComfyClient
from ssae.world.evaluate import EvaluateSettings, evaluate
from ssae.world.measure import read_image

REDUCED = EvaluateSettings(cases=6, identity_cases=2, prompts=96, block_seeds=1, compose_seeds=1, compose_cases=4,
                           double_cases=2, heldout_cases=2, sweep_cases=1)


@pytest.fixture(scope="module")
def report(comfy, tmp_path_factory):
    if comfy.world is None:
        pytest.skip("the world tests need the `world` extra (diffusers, transformers, instant-clip-tokenizer)")
    out = tmp_path_factory.mktemp("evaluate")
    return evaluate(ComfyClient(comfy.url), comfy.world, out, REDUCED), out


def test_strength_zero_edits_give_the_unedited_image(report):
    r, _ = report
    assert r["strength_zero_identical"] == {"conditioning": True, "block": True}


def test_base_images_show_their_prompts_attributes(report, comfy):
    """Each base image, read back by the measurement, shows every concept of its prompt; checked here on the
    saved files themselves, not only the report's figure."""
    r, out = report
    assert r["cases"] == 6 and r["base_accuracy"] >= 5 / 6
    entries = list(comfy.get("/history").values())
    bases = [e for e in entries if "save_base" in e.get("outputs", {})]
    assert len(bases) >= 6
    client = ComfyClient(comfy.url)
    prompts = [e["prompt"][2]["positive"]["inputs"]["text"] for e in bases[-6:]]
    readings = [read_image(client.images(e, node="save_base")[0]) for e in bases[-6:]]
    shown = [all(r.matches(tuple(p.split(", "))).values()) for r, p in zip(readings, prompts)]
    assert np.mean(shown) >= 5 / 6, list(zip(prompts, shown))


def test_an_edit_changes_its_target_attribute_in_most_cases(report):
    r, out = report
    for site in ("conditioning", "block"):
        assert r["edit_success"][site] > 0.5, (site, r["edits"][site])
    written = json.loads((out / "evaluate.json").read_text())
    assert written["edit_success"] == r["edit_success"] and (out / "evaluate_grid.png").stat().st_size > 0
    assert "| SSAE edit at the conditioning |" in (out / "evaluate.md").read_text()
    assert (r["settings"]["block_site"], r["settings"]["block_mode"]) == ("joint_blocks.0.txt_in",
                                                                         "attention keys/values")
