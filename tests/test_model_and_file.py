from dataclasses import replace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import ssae
from ssae import ModelFileError, ShapeMismatchError, SSAEError
from ssae.model import ModelConfig, SupervisedSAE
from ssae.preprocess import PreprocessConfig, Preprocessor
from ssae.train import PRESETS, with_overrides

from builders import make_features

FAST = {"epochs": 20}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return ssae.load_features(make_features(tmp_path_factory.mktemp("d") / "f.safetensors"))


def trained(data, preset="additive", **kw):
    return ssae.train(data, with_overrides(PRESETS[preset], **(FAST | kw))).ssae


def test_model_config_validation():
    with pytest.raises(SSAEError, match="unknown decoder"):
        ModelConfig(3, 4, decoder="transformer")
    with pytest.raises(SSAEError, match="positive"):
        ModelConfig(0, 4)


def test_code_is_zero_for_absent_concepts_and_linear_decoder_is_additive():
    m = SupervisedSAE(ModelConfig(4, 6, d=3, decoder="linear"), torch.Generator().manual_seed(0))
    code = m.code(torch.tensor([[1.0, 0, 1, 0]]))
    assert code.shape == (1, 12) and not code[0, 3:6].any() and not code[0, 9:].any() and code[0, :3].abs().sum() > 0
    a, b = torch.tensor([[1.0, 0, 0, 0]]), torch.tensor([[0, 0, 1.0, 0]])
    dec = lambda w: m.decode(m.code(w))
    assert torch.allclose(dec(a + b) - dec(b), dec(a) - dec(torch.zeros(1, 4)), atol=1e-6)


@pytest.mark.parametrize("preset", ["additive", "default", "paper-trainable"])
def test_save_load_round_trip_gives_identical_outputs(data, tmp_path, preset):
    s = trained(data, preset, epochs=5, patience=0)
    path = s.save(tmp_path / "m.safetensors")
    t = ssae.SSAE.load(path)
    mix = {"blond": 1.0, "beach": 1.0, "baseball": 0.5}
    assert torch.equal(s.compose(mix), t.compose(mix))
    assert torch.equal(s.reconstruct(data.labels[:4]), t.reconstruct(data.labels[:4]))
    assert t.site == "test.site" and t.vocabulary == data.vocabulary and t.info["training"]["train"]["epochs"] == 5


def test_edit_with_the_additive_decoder_is_the_papers_slot_swap(data):
    s = trained(data, "additive")
    x = data.load()[:3]
    edited = s.edit(x, add=["brunette"], remove=["blond"])
    ctx = ["A blond girl", "at a market", "and a hat", "looking to the left"]
    after = ["A brunette girl", "at a market", "and a hat", "looking to the left"]
    expected = x + (s.reconstruct([after]) - s.reconstruct([ctx]))
    assert torch.allclose(edited, expected, atol=1e-4)
    assert torch.equal(s.edit(x, add=["brunette"], remove=["blond"], strength=0.0), x)
    half = s.compose({"blond": 0.5}) - s.compose({})
    assert torch.allclose(half * 2, s.compose({"blond": 1.0}) - s.compose({}), atol=1e-4)


def test_edit_refuses_features_of_another_size(data):
    with pytest.raises(ShapeMismatchError, match="trained on test.site"):
        trained(data).edit(torch.zeros(2, 50), add=["hat"])


def test_unflatten_named_parts():
    s = SupervisedSAE(ModelConfig(2, 17, d=2, decoder="linear"))
    pre = Preprocessor(17, torch.zeros(17), torch.ones(17))
    m = ssae.SSAE(s, pre, ssae.Vocabulary({"a": ["x", "y"]}), "conditioning", {"cond": [3, 4], "pooled_output": [5]})
    parts = m.unflatten(torch.arange(17.0))
    assert parts["cond"].shape == (3, 4) and parts["pooled_output"].tolist() == [12, 13, 14, 15, 16]


def test_top_k_preprocessing_returns_the_full_size_with_training_means(data):
    recipe = PRESETS["paper"]  # top 1000 of 48 dimensions: all kept, no selection
    assert ssae.train(data, with_overrides(recipe, epochs=2)).ssae.pre.index is None
    s = ssae.train(data, replace(recipe, preprocess=PreprocessConfig(top_k=10, scale="minmax"),
                                 train=replace(recipe.train, epochs=2))).ssae
    out = s.compose({"blond": 1.0})
    dropped = torch.ones(48, dtype=torch.bool)
    dropped[s.pre.index] = False
    train_mean = data.load(data.indices("train")).mean(0)
    assert out.shape == (48,) and torch.allclose(out[dropped], train_mean[dropped], atol=1e-5)
    assert not s.delta(add=["hat"], remove=["cap"])[dropped].any(), "an edit leaves unselected dimensions alone"


def test_load_refuses_edited_tensors_and_foreign_formats(data, tmp_path):
    path = trained(data).save(tmp_path / "m.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    t = load_file(str(path))
    t["model.W"] = t["model.W"][:, :10].contiguous()
    save_file(t, str(tmp_path / "edited.safetensors"), metadata=meta)
    with pytest.raises(ModelFileError, match="do not match the metadata"):
        ssae.SSAE.load(tmp_path / "edited.safetensors")
    save_file(load_file(str(path)), str(tmp_path / "v2.safetensors"), metadata=meta | {"ssae.format": "ssae/2"})
    with pytest.raises(ModelFileError, match="format 'ssae/1'.*upgrade"):
        ssae.SSAE.load(tmp_path / "v2.safetensors")
