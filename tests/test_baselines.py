"""ssae.baselines: the mean, the additive closed form and the unsupervised SAEs on the same split."""
import math

import pytest
import torch

from ssae.baselines import UnsupervisedSAE, additive_fit, fit_unsupervised, mean_baseline, run_baselines


def test_additive_fit_recovers_exact_additive_data(make_set):
    data = make_set(interactions=0.0, noise=0.0)
    V, b = additive_fit(data, data.indices("train"), ridge=1e-9)
    assert V.shape == (data.vocabulary.n_concepts, 48) and b.shape == (48,)
    assert torch.allclose(data.mask() @ V + b, data.load(), atol=1e-3), "held-out pairs included"


def test_mean_baseline(make_set):
    data = make_set()
    train = data.indices("train")
    assert torch.allclose(mean_baseline(data, train), data.load(train).mean(0))


def test_topk_sae_keeps_k_latents():
    sae = UnsupervisedSAE(6, 10, k=3, generator=torch.Generator().manual_seed(0))
    z = sae.encode(torch.randn(5, 6, generator=torch.Generator().manual_seed(1)))
    assert z.shape == (5, 10) and ((z != 0).sum(1) <= 3).all() and (z >= 0).all()


def test_unsupervised_sae_learns_to_reconstruct():
    Y = torch.randn(64, 6, generator=torch.Generator().manual_seed(0))
    before = ((UnsupervisedSAE(6, 16, generator=torch.Generator().manual_seed(3))(Y)[0] - Y) ** 2).mean()
    sae = fit_unsupervised(Y, 16, None, l1=0.0, epochs=40, batch_size=16, lr=1e-2, seed=3)
    with torch.no_grad():
        assert ((sae(Y)[0] - Y) ** 2).mean() < 0.5 * before


def test_run_baselines_gives_four_sane_rows(make_set):
    data = make_set(interactions=0.3)
    rows = run_baselines(data, n_latents=16, topk=4, epochs=2)
    assert [r.name for r in rows] == ["train mean", "additive closed form (ridge)", "ReLU+L1 SAE (unsupervised)",
                                      "TopK SAE k=4 (unsupervised)"]
    n_test = len(data.indices("test"))
    for r in rows:
        assert set(r.metrics) == {"explained_variance", "cosine", "mse", "n"} and r.metrics["n"] == n_test
        assert all(math.isfinite(v) for v in r.metrics.values())
        assert r.uses_input == (r.alignment is not None)
        assert r.alignment is None or 0.0 <= r.alignment <= 1.0
    mean, additive = rows[0].metrics, rows[1].metrics
    assert mean["explained_variance"] < 0.1 < additive["explained_variance"]
    assert additive["mse"] < mean["mse"]


@pytest.mark.parametrize("k", [None, 4])
def test_fit_unsupervised_is_seeded(k):
    Y = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
    a, b = fit_unsupervised(Y, 8, k, epochs=2, seed=1), fit_unsupervised(Y, 8, k, epochs=2, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
