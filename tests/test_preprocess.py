"""ssae.preprocess: streamed statistics, top-k selection, scaling and its exact inverse."""
import pytest
import torch

from ssae import SSAEError
from ssae.preprocess import FeatureStats, PreprocessConfig, Preprocessor

X = torch.randn(40, 7, generator=torch.Generator().manual_seed(0)) * torch.arange(1.0, 8.0) + 3.0


def test_config_validation():
    with pytest.raises(SSAEError, match="PreprocessConfig.scale must be one of 'standard', .* got 'log'"):
        PreprocessConfig(scale="log")
    for bad in (0, 2.5, True):
        with pytest.raises(SSAEError, match=f"PreprocessConfig.top_k must be an integer >= 1 or None, got {bad}"):
            PreprocessConfig(top_k=bad)


def test_stats_over_chunks_equal_stats_over_all_rows():
    s = FeatureStats.from_chunks([X[:3], X[3:20], X[20:]])
    assert s.n == 40
    assert torch.allclose(s.mean.float(), X.mean(0), atol=1e-5) and torch.allclose(s.std.float(), X.std(0), atol=1e-5)
    assert torch.equal(s.min.float(), X.min(0).values) and torch.equal(s.max.float(), X.max(0).values)
    with pytest.raises(SSAEError, match="split is empty"):
        FeatureStats.from_chunks([])


@pytest.mark.parametrize("scale", ["standard", "minmax", "center", "none"])
def test_transform_and_inverse_round_trip(scale):
    pre = Preprocessor.fit(FeatureStats.from_chunks([X]), PreprocessConfig(scale=scale))
    y = pre.transform(X)
    assert y.shape == X.shape and torch.allclose(pre.inverse(y), X, atol=1e-5)
    assert torch.allclose(pre.inverse_delta(y[:1] - y[1:2]), X[:1] - X[1:2], atol=1e-5)
    if scale == "standard":
        assert torch.allclose(y.mean(0), torch.zeros(7), atol=1e-5)
        assert torch.allclose(y.std(0), torch.ones(7), atol=1e-4)
    if scale == "minmax":
        assert torch.allclose(y.min(0).values, torch.zeros(7)) and torch.allclose(y.max(0).values, torch.ones(7))


def test_constant_dimensions_pass_through_without_dividing_by_zero():
    x = torch.cat([X, torch.full((40, 1), 5.0)], 1)
    pre = Preprocessor.fit(FeatureStats.from_chunks([x]), PreprocessConfig())
    y = pre.transform(x)
    assert torch.isfinite(y).all() and torch.allclose(y[:, -1], torch.zeros(40))
    assert torch.allclose(pre.inverse(y), x, atol=1e-5)


def test_top_k_keeps_the_widest_dimensions_and_fills_the_rest_with_means():
    pre = Preprocessor.fit(FeatureStats.from_chunks([X]), PreprocessConfig(top_k=3))
    span = X.max(0).values - X.min(0).values
    assert pre.index.tolist() == sorted(span.topk(3).indices.tolist()) and pre.n_kept == 3 and pre.n_features == 7
    y = pre.transform(X)
    back = pre.inverse(y)
    assert y.shape == (40, 3) and back.shape == (40, 7)
    assert torch.allclose(back[:, pre.index], X[:, pre.index], atol=1e-5)
    rest = [i for i in range(7) if i not in pre.index.tolist()]
    assert torch.allclose(back[:, rest], X.mean(0)[rest].expand(40, -1), atol=1e-5)
    assert not pre.inverse_delta(torch.ones(2, 3))[:, rest].any()
    again = Preprocessor.from_tensors(pre.tensors(), 7, pre.config)
    assert torch.equal(again.inverse(y), back)
    assert Preprocessor.fit(FeatureStats.from_chunks([X]), PreprocessConfig(top_k=7)).index is None
