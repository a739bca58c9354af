"""Numerics with a defined outcome: half-precision models, overflowing captures, constant dimensions,
and concepts that are in every training sample or in none."""
import logging

import pytest
import torch
from builders import VOCAB, make_features

import ssae
from ssae.capture import CaptureBuffer
from ssae.errors import FeatureFileError, VocabularyError
from ssae.hooks import BlockHook
from ssae.steer import StreamEdit
from ssae.train import PRESETS

HALF = [torch.float16, torch.bfloat16]


def run_block(hook: BlockHook, img: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    """One call of a patched joint block (ComfyUI's replace-patch protocol) on a positive-only batch."""
    args = {"img": img, "txt": None, "vec": None,
            "transformer_options": {"sigmas": torch.tensor([sigma]), "cond_or_uncond": [0]}}
    return hook(args, {"original_block": lambda a: {"img": a["img"] * 1.5, "txt": None}})["img"]


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_model_capture_train_and_patch(tmp_path, dtype):
    """A model running in fp16/bf16: capture pools in float32, the trained SSAE's delta is added in the
    stream's dtype, and the patched output is the float32 result rounded once."""
    g = torch.Generator().manual_seed(0)
    concept_vec = torch.randn(VOCAB.n_concepts, 64, generator=g)
    combos = [list(c) for c in VOCAB.all_combinations()]
    folder = tmp_path / "set"
    for combo in combos:  # one "sampling run" per prompt: 3 steps of a [1, 32 tokens, 64] image stream
        buf = CaptureBuffer()
        hook = BlockHook("img", capture=buf)
        base = VOCAB.mask([combo]) @ concept_vec
        expected = torch.zeros(1, 64)
        for step in range(3):
            img = (base[:, None, :] + 0.1 * torch.randn(1, 32, 64, generator=g)).to(dtype)
            run_block(hook, img, sigma=1.0 - step / 3)
            expected += (img * 1.5).float().mean(1)  # the block's output, in its dtype, pooled in float32
        features, shape = buf.take()
        assert shape == [64]
        assert features.dtype == torch.float32
        assert torch.allclose(features, expected / 3, rtol=1e-6, atol=1e-6), \
            "pooled in float32, not rounded to the model's dtype first"
        ssae.append_features(folder, features, VOCAB, [combo], site="joint_blocks.1.img")
    s = ssae.train(ssae.load_features(folder), PRESETS["additive"]).ssae
    delta = s.delta(add=["brunette"], remove=["blond"])
    img = torch.randn(1, 32, 64, generator=g).to(dtype)
    out = run_block(BlockHook("img", StreamEdit(delta, 0.75)), img)
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert torch.equal(out, (img * 1.5) + 0.75 * delta.to(dtype)), "the delta is cached in the stream's dtype"
    assert (out.float() - (img.float() * 1.5 + 0.75 * delta)).abs().max() < 0.05 * delta.abs().max() + 1e-2
    # the swap moves the stream along the learned blond -> brunette direction
    moved = (out.float() - (img * 1.5).float()).mean((0, 1))
    want = concept_vec[VOCAB.index("brunette")] - concept_vec[VOCAB.index("blond")]
    assert torch.cosine_similarity(moved, want, dim=0) > 0.95


def test_an_fp16_overflow_in_a_capture_is_refused_at_save_naming_the_sample(tmp_path):
    """fp16 saturates to inf above 65504; the capture records it and the save names the sample."""
    buf = CaptureBuffer()
    hook = BlockHook("img", capture=buf)
    img = torch.ones(1, 4, 8, dtype=torch.float16)
    img[0, 2, 5] = 60000.0  # * 1.5 in the block: inf in fp16
    run_block(hook, img)
    ok = torch.zeros(2, 8)
    features = torch.cat([ok, buf.take()[0]])
    assert torch.isinf(features[2]).any()
    with pytest.raises(FeatureFileError, match="sample 2 has NaN or inf"):
        ssae.append_features(tmp_path / "set", features, VOCAB, [["blond"], ["brunette"], ["blond"]])
    assert not (tmp_path / "set").exists() or not any((tmp_path / "set").iterdir()), "nothing was written"


@pytest.mark.parametrize("preset", ["default", "additive", "paper"])
def test_a_constant_dimension_is_reproduced_exactly(tmp_path, preset):
    fs = ssae.load_features(make_features(tmp_path / "f.safetensors", n_features=20))
    x = fs.load()
    x[:, 7] = 3.25  # zero variance: no division by zero, and the constant comes back
    x[:, 11] = 0.0
    const = ssae.save_features(tmp_path / "c.safetensors", x, VOCAB, fs.labels, fs.split)
    s = ssae.train(ssae.load_features(const), PRESETS[preset]).ssae
    out = s.compose(["blond", "boat", "hat", "left"])
    assert torch.isfinite(out).all()
    assert out[7] == pytest.approx(3.25, abs=1e-5) and out[11] == pytest.approx(0.0, abs=1e-5)
    assert s.delta(add=["brunette"], remove=["blond"])[[7, 11]].abs().max() < 1e-5


def test_a_concept_in_no_training_sample_is_refused_by_compose_and_edit(tmp_path, caplog):
    fs = ssae.load_features(make_features(tmp_path / "f.safetensors", n_features=16))
    keep = [i for i, c in enumerate(fs.labels) if VOCAB.resolve("cap") not in c]
    x = fs.load()[keep]
    path = ssae.save_features(tmp_path / "nocap.safetensors", x, VOCAB, [fs.labels[i] for i in keep])
    with caplog.at_level(logging.WARNING, logger="ssae.train"):
        s = ssae.train(ssae.load_features(path), PRESETS["default"]).ssae
    assert "in no training sample" in caplog.text and "baseball cap" in caplog.text
    s.save(tmp_path / "m.safetensors")
    s = ssae.SSAE.load(tmp_path / "m.safetensors")  # the counts travel with the file
    assert s.untrained == {VOCAB.resolve("cap")}
    with pytest.raises(VocabularyError, match="in no training sample.*untrained"):
        s.compose(["blond", "cap"])
    with pytest.raises(VocabularyError, match="untrained"):
        s.delta(add=["cap"], remove=["hat"])
    assert torch.isfinite(s.compose({"blond": 1, "cap": 0})).all(), "a weight of 0 is allowed"
    assert torch.isfinite(s.delta(add=["brunette"], remove=["blond"])).all(), \
        "random edit contexts draw only trained concepts"


def test_a_concept_in_every_training_sample_trains_with_a_warning(tmp_path, caplog):
    """Its effect cannot be separated from the bias: training works, the mix with it is reproduced, and the
    run says so."""
    fs = ssae.load_features(make_features(tmp_path / "f.safetensors", n_features=16, heldout=None))
    keep = [i for i, c in enumerate(fs.labels) if VOCAB.resolve("hat") in c]
    x = fs.load()[keep]
    labels = [fs.labels[i] for i in keep]
    path = ssae.save_features(tmp_path / "hat.safetensors", x, VOCAB, labels)
    with caplog.at_level(logging.WARNING, logger="ssae.train"):
        s = ssae.train(ssae.load_features(path), PRESETS["default"]).ssae
    assert "in every training sample" in caplog.text and "and a hat" in caplog.text
    assert s.info["concept_counts"][VOCAB.resolve("hat")] == len(keep)
    err = (s.reconstruct(labels) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert err < 0.05
