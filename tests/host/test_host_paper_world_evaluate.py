"""A reduced evaluation of the paper world through a real ComfyUI (its quick build unless SSAE_PAPER_WORLD_FULL=1):
the loop runs end to end with every method at both sites, every edit kind, the strength sweep and the
compositions, and each measure that does not depend on the images' quality holds."""
from __future__ import annotations

import json
import os

import pytest

from ssae.world.comfy_client import ComfyClient
from ssae.world.evaluate import METHODS, SITES, EvaluateSettings, evaluate

REDUCED = EvaluateSettings(cases=4, double_cases=2, heldout_cases=2, sweep_cases=1, identity_cases=2, prompts=48,
                           block_seeds=1, compose_seeds=1, compose_cases=3)


@pytest.fixture(scope="module")
def report(paper_comfy, tmp_path_factory):
    out = tmp_path_factory.mktemp("paper_evaluate")
    return evaluate(ComfyClient(paper_comfy.url), paper_comfy.world, out, REDUCED), out


def test_every_method_edits_at_both_sites_in_every_kind(report):
    r, _ = report
    assert r["world_name"] == "paper" and r["prompts"] == 48
    for key, n in (("single_edits", 4), ("double_edits", 2), ("edit_into_heldout", 2)):
        assert r[key]["prompt"]["n"] == n
        for site in SITES:
            for m in METHODS:
                s = r[key][site][m]
                assert s["n"] == n and 0 <= s["success"] <= 1 and 0 <= s["preservation"] <= 1, (key, site, m)
    assert set(r["compose_accuracy"]) == {*METHODS, "prompt"} and r["compose_cases"] == 3


def test_strength_zero_gives_the_unedited_image_for_every_method(report):
    r, _ = report
    assert r["strength_zero_identical"] == {"conditioning": True, "block": True}
    sweep = r["strength_sweep"]
    assert sweep["n"] == 1 and sweep["strengths"][0] == 0.0
    assert all(sweep[m]["zero_identical"] for m in METHODS)


def test_ssae_train_reports_the_heldout_ev_of_each_method(report):
    r, _ = report
    for site in SITES:
        for m in METHODS:
            assert isinstance(r["heldout_ev"][site][m], float), (site, m)


def test_the_report_is_written(report):
    r, out = report
    written = json.loads((out / "evaluate.json").read_text())
    assert written["edit_into_heldout"] == r["edit_into_heldout"] and (out / "evaluate_grid.png").stat().st_size
    table = (out / "evaluate.md").read_text()
    assert "| SSAE edit at the conditioning |" in table and "| mean-difference | conditioning |" in table
    assert "Strength sweep" in table


@pytest.mark.skipif(os.environ.get("SSAE_PAPER_WORLD_FULL") != "1", reason="image quality needs the full build")
def test_the_full_paper_world_draws_its_prompts(report):
    r, _ = report
    assert r["base_accuracy"] >= 0.75 and r["compose_accuracy"]["prompt"] >= 2 / 3
