"""ssae.metrics: explained variance, decoder decorrelation, probes, alignment and evaluate's size check."""
import pytest
import torch
from builders import VOCAB, make_features

import ssae
from ssae.errors import ShapeMismatchError
from ssae.metrics import (
    ReconstructionMeter,
    decoder_decorrelation,
    evaluate,
    evaluate_predictor,
    probe_accuracy,
    ssae_alignment,
)
from ssae.train import PRESETS, train

G = torch.Generator().manual_seed(0)


def test_explained_variance_perfect_mean_and_worse():
    x = torch.randn(50, 8, generator=G)
    perfect, mean, zero = ReconstructionMeter(), ReconstructionMeter(), ReconstructionMeter()
    perfect.update(x, x)
    mean.update(x, x.mean(0).expand_as(x))
    zero.update(x, -x)
    p = perfect.result()
    assert p["explained_variance"] == pytest.approx(1.0) and p["cosine"] == pytest.approx(1.0)
    assert p["mse"] == 0.0 and p["n"] == 50
    assert mean.result()["explained_variance"] == pytest.approx(0.0, abs=1e-9)
    assert zero.result()["cosine"] == pytest.approx(-1.0) and zero.result()["explained_variance"] < 0


def test_meter_over_batches_equals_one_pass():
    x, x_hat = torch.randn(30, 5, generator=G), torch.randn(30, 5, generator=G)
    whole, parts = ReconstructionMeter(), ReconstructionMeter()
    whole.update(x, x_hat)
    for a in range(0, 30, 7):
        parts.update(x[a:a + 7], x_hat[a:a + 7])
    w, p = whole.result(), parts.result()
    assert w.keys() == p.keys() and all(w[k] == pytest.approx(p[k]) for k in w)
    sse = float(((x - x_hat) ** 2).sum())
    assert w["mse"] == pytest.approx(sse / 150)
    assert w["explained_variance"] == pytest.approx(1 - sse / float(((x - x.mean(0)) ** 2).sum()))


def test_decorrelation_of_orthogonal_identical_and_opposite_blocks():
    assert decoder_decorrelation(torch.eye(6).reshape(3, 2, 6)) == pytest.approx(0.0)
    assert decoder_decorrelation(torch.ones(3, 2, 6)) == pytest.approx(1.0)
    assert decoder_decorrelation(torch.stack([torch.ones(2, 6), -torch.ones(2, 6)])) == pytest.approx(1.0)
    assert decoder_decorrelation(torch.ones(1, 2, 6)) == 0.0, "one concept has nothing to correlate with"


def test_probe_reads_separable_latents_and_not_noise():
    labels = [list(c) for c in VOCAB.all_combinations()] * 3
    z = VOCAB.mask(labels) @ torch.randn(VOCAB.n_concepts, 20, generator=G) + 0.01 * torch.randn(len(labels), 20,
                                                                                                  generator=G)
    assert probe_accuracy(z, labels, z, labels, VOCAB) == 1.0
    noise = torch.randn(len(labels), 3, generator=G)
    assert probe_accuracy(noise, labels, torch.randn(len(labels), 3, generator=G), labels, VOCAB) < 0.8


@pytest.fixture(scope="module")
def additive_set(tmp_path_factory):
    return ssae.load_features(make_features(tmp_path_factory.mktemp("m") / "f.safetensors", interactions=0.0))


def test_evaluate_on_splits(additive_set):
    s = train(additive_set, PRESETS["additive"]).ssae
    test, everything = evaluate(s, additive_set), evaluate(s, additive_set, None)
    assert test["n"] == len(additive_set.indices("test")) and everything["n"] == len(additive_set)
    assert test["explained_variance"] > 0.99 and everything["explained_variance"] > 0.99
    mean = additive_set.load(additive_set.indices("train")).mean(0)
    assert evaluate_predictor(lambda x, lab: mean.expand_as(x), additive_set, "test")["explained_variance"] < 0.1


def test_alignment_reads_concepts_back_by_decoding(additive_set):
    s = train(additive_set, PRESETS["additive"]).ssae
    test = additive_set.indices("test")
    labels = [additive_set.labels[i] for i in test.tolist()]
    assert ssae_alignment(s, additive_set.load(test), labels) == 1.0
    shuffled = labels[1:] + labels[:1]
    assert ssae_alignment(s, additive_set.load(test), shuffled) < 1.0


def test_evaluate_refuses_a_feature_set_of_another_size(additive_set, make_set):
    other = make_set("g", n_features=20, site="other.site")
    with pytest.raises(ShapeMismatchError, match="decodes 20 features \\(other.site.*has 48 \\(test.site.*"
                                                 "evaluate on features from the site"):
        evaluate(train(other, PRESETS["additive"]).ssae, additive_set)
