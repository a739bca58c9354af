"""ssae.model and ssae.ssae_file: the decoder, and the SSAE that composes, reconstructs, edits and is a file."""
import json
from dataclasses import replace

import pytest
import torch
from builders import VOCAB, make_features
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import ssae
from ssae import ModelFileError, ShapeMismatchError, SSAEError, VocabularyError
from ssae.model import DecoderConfig, ModelConfig, SupervisedSAE, member_readout_rows, merge_members
from ssae.preprocess import PreprocessConfig, Preprocessor
from ssae.presets import PRESETS, Recipe, TrainConfig, with_overrides

CTX = ["A blond girl", "at a market", "and a hat", "looking to the left"]
MIX = {"blond": 1.0, "beach": 1.0, "baseball": 0.5}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return ssae.load_features(make_features(tmp_path_factory.mktemp("d") / "f.safetensors"))


@pytest.fixture(scope="module")
def additive(data):
    return ssae.train(data, PRESETS["additive"]).ssae


@pytest.fixture(scope="module")
def mlp(data):
    return ssae.train(data, with_overrides(PRESETS["default"], epochs=5)).ssae


def trained(data, preset, **kw):
    return ssae.train(data, with_overrides(PRESETS[preset], **kw)).ssae


# -- ModelConfig / SupervisedSAE ----------------------------------------------------------------

def config(n_concepts=3, n_features=4, **kw) -> ModelConfig:
    return ModelConfig(n_concepts=n_concepts, n_features=n_features, **kw)


@pytest.mark.parametrize("kw, message", [
    (dict(decoder="transformer"), "ModelConfig.decoder must be one of 'linear', 'mlp', got 'transformer'"),
    (dict(code="token"), "ModelConfig.code must be one of 'concept', 'sample', got 'token'"),
    (dict(activation="tanh"), "ModelConfig.activation must be one of 'leaky_relu', 'relu', got 'tanh'"),
    (dict(n_concepts=0), "ModelConfig.n_concepts must be an integer >= 1, got 0"),
    (dict(n_features=0), "n_features must be an integer >= 1"),
    (dict(d=0), "ModelConfig.d must be an integer >= 1, got 0"),
    (dict(hidden=0), "ModelConfig.hidden must be an integer >= 1, got 0"),
    (dict(n_samples=-1), "n_samples must be an integer >= 0, got -1"),
    (dict(d=2.0), "d must be an integer >= 1, got 2.0"),
    (dict(hidden=True), "hidden must be an integer >= 1, got True"),
])
def test_model_config_validation(kw, message):
    with pytest.raises(SSAEError, match=message.replace("(", "\\(")):
        config(**kw)


def test_model_config_sizes_and_dict_round_trip():
    assert config(hidden=0, decoder="linear").basis_size == 30, "a linear decoder needs no hidden layer"
    cfg = config(d=2, hidden=5)
    assert cfg.code_size == 6 and cfg.basis_size == 11
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.of(DecoderConfig(d=2, hidden=5), 3, 4) == cfg


def test_every_config_read_from_a_file_ignores_unknown_keys_with_a_warning(caplog):
    """One rule for every stored config (issue #14): unknown keys ignored with a warning that names them,
    missing keys take their defaults, bad values are refused by the class, naming the field."""
    cases = [(ModelConfig, config(d=2).to_dict()), (PreprocessConfig, {"top_k": 7}), (TrainConfig, {"epochs": 3}),
             (DecoderConfig, {"hidden": 8}), (Recipe, {"train": {"epochs": 3}, "model": {"d": 2}})]
    for cls, stored in cases:
        caplog.clear()
        with caplog.at_level("WARNING"):
            got = cls.from_dict(stored | {"from_the_future": 1}, "m.safetensors")
        assert got == cls.from_dict(stored)
        assert "from_the_future" in caplog.text and cls.__name__ in caplog.text and "m.safetensors" in caplog.text
    with caplog.at_level("WARNING"):
        r = Recipe.from_dict({"train": {"epochs": 3, "new_knob": 1}})
    assert r.train == TrainConfig(epochs=3) and "new_knob" in caplog.text
    assert TrainConfig.from_dict({"ridge_grid": [1e-3, 0.1]}).ridge_grid == (1e-3, 0.1), "a JSON list comes back"
    for cls, bad, message in [(ModelConfig, {"n_concepts": 3}, "ModelConfig cannot be built"),
                              (PreprocessConfig, {"scale": "log"}, "PreprocessConfig.scale must be one of"),
                              (TrainConfig, {"checkpoint_every": 0}, "checkpoint_every must be an integer >= 1"),
                              (Recipe, {"train": []}, "TrainConfig must be a JSON object"),
                              (PreprocessConfig, [1], "PreprocessConfig must be a JSON object")]:
        with pytest.raises(SSAEError, match=message):
            cls.from_dict(bad)


def test_code_is_zero_for_absent_concepts():
    m = SupervisedSAE(config(4, 6, d=3, decoder="linear"), torch.Generator().manual_seed(0))
    code = m.code(torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 0]]))
    assert code.shape == (2, 12)
    assert not code[0, 3:6].any() and not code[0, 9:].any() and not code[1].any()
    assert (code[0, :3] != 0).all() and torch.equal(code[0, 6:9], m.slots()[2])
    assert torch.allclose(m.code(torch.tensor([[0.5, 0, 0, 0]]))[0, :3], 0.5 * m.slots()[0])


def test_sample_codes_use_each_samples_slots_and_finalize_to_concept_means():
    m = SupervisedSAE(config(3, 5, d=2, code="sample", activation="relu", decoder="linear", n_samples=4),
                      torch.Generator().manual_seed(0))
    mask = torch.tensor([[1.0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 0]])
    code = m.code(mask, torch.arange(4))
    assert torch.equal(code.reshape(4, 3, 2)[1, 2], torch.zeros(2)) and (code.reshape(4, 3, 2)[1, 0] > 0).all()
    m.finalize_sample_codes(mask[:3], torch.arange(3))  # the rows given, here without the last one
    expected = torch.relu(m.sample_code.detach())[[0, 1], 0].mean(0)
    assert torch.allclose(m.slots()[0], expected)


def test_linear_decoder_is_additive_and_mlp_is_not():
    g = torch.Generator().manual_seed(0)
    lin = SupervisedSAE(config(4, 6, d=3, decoder="linear"), g)
    mlp = SupervisedSAE(config(4, 6, d=3, decoder="mlp", hidden=16), g)
    a, b, zero = torch.tensor([[1.0, 0, 0, 0]]), torch.tensor([[0, 0, 1.0, 0]]), torch.zeros(1, 4)
    with torch.no_grad():  # away from the zero-bias init, so that nothing is additive by accident
        for w in [*lin.parameters(), *mlp.parameters()]:
            w.normal_(generator=g)
    assert torch.allclose(lin(a + b) - lin(b), lin(a) - lin(zero), atol=1e-5)
    assert not torch.allclose(mlp(a + b) - mlp(b), mlp(a) - mlp(zero), atol=1e-3)
    assert lin.concept_blocks().shape == (4, 3, 6) and torch.equal(lin.concept_blocks()[1], lin.W[3:6])


def test_merged_members_output_the_members_mean_exactly():
    """An ensemble is one model of the same kind: slots of 1, the members' code rows folded in, hidden layers
    stacked; its readout rows come from the members' (here their own random W, b)."""
    g = torch.Generator().manual_seed(0)
    members = [SupervisedSAE(config(4, 6, d=3, hidden=h), g) for h in (5, 7, 2)]
    with torch.no_grad():
        for m in members:
            m.embed.normal_(generator=g)  # learned codes of either sign, folded into the merged rows
            m.b1.normal_(generator=g)
    merged = merge_members(members)
    assert merged.cfg == config(4, 6, d=3, hidden=14) and torch.equal(merged.slots(), torch.ones(4, 3))
    with torch.no_grad():
        merged.W.copy_(member_readout_rows(members, [m.W for m in members]))
        merged.b.copy_(sum(m.b for m in members) / 3)
    w = torch.tensor([[1.0, 0, 1, 0], [0.5, -1, 0, 2], [0, 0, 0, 0]])
    assert torch.allclose(merged(w), sum(m(w) for m in members) / 3, atol=1e-5)
    assert merge_members(members[:1]) is members[0]


# -- SSAE: files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["additive", "default", "paper-trainable"])
def test_save_load_round_trip_gives_identical_outputs(data, tmp_path, preset):
    s = trained(data, preset, epochs=4, patience=0)
    path = s.save(tmp_path / "m.safetensors")
    t = ssae.SSAE.load(path)
    assert torch.equal(s.compose(MIX), t.compose(MIX))
    assert torch.equal(s.reconstruct(data.labels[:5]), t.reconstruct(data.labels[:5]))
    assert torch.equal(s.delta(add=["brunette"], remove=["blond"]), t.delta(add=["brunette"], remove=["blond"]))
    assert t.site == "test.site" and t.vocabulary == data.vocabulary and t.feature_shape == [48]
    assert t.model.cfg == replace(s.model.cfg, n_samples=0) and t.pre.config == s.pre.config
    assert t.info["training"]["train"]["epochs"] == 4 and t.info["history"] == s.info["history"]
    tensors = load_file(str(path))
    assert "model.sample_code" not in tensors, "a sample model's free codes stay behind"
    mlp = {"model.W1", "model.b1"} if preset == "default" else set()
    assert set(tensors) == {"model.embed", "model.W", "model.b", "pre.shift", "pre.scale"} | mlp  # docs/FORMATS.md
    with safe_open(str(path), "pt") as f:
        assert {"ssae.format", "ssae.vocabulary", "ssae.site", "ssae.feature_shape", "ssae.model", "ssae.preprocess",
                "ssae.training", "ssae.history"} <= set(f.metadata())


def test_loaded_file_carries_named_parts_and_extra_info(tmp_path):
    shape = {"cond": [4, 6], "pooled": [8]}
    fs = ssae.load_features(make_features(tmp_path / "f.safetensors", n_features=32, feature_shape=shape))
    s = ssae.train(fs, PRESETS["additive"]).ssae
    s.info["base_model"] = {"name": "sd3.5-medium"}
    t = ssae.SSAE.load(s.save(tmp_path / "m.safetensors"))
    assert t.feature_shape == shape and t.info["base_model"] == {"name": "sd3.5-medium"}
    parts = t.unflatten(t.reconstruct(fs.labels[:3]))
    assert parts["cond"].shape == (3, 4, 6) and parts["pooled"].shape == (3, 8)
    assert torch.equal(parts["pooled"], t.reconstruct(fs.labels[:3])[:, 24:])


def rewrite(path, out, tensors=None, meta=None):
    with safe_open(str(path), "pt") as f:
        m = f.metadata()
    t = load_file(str(path))
    save_file(tensors(t) if tensors else t, str(out), metadata=meta(m) if meta else m)
    return out


def test_load_refuses_reshaped_missing_or_extra_tensors(additive, tmp_path):
    path = additive.save(tmp_path / "m.safetensors")

    def reshaped(t):
        t["model.W"] = t["model.W"][:, :10].contiguous()
        return t

    with pytest.raises(ModelFileError, match="edited.safetensors: tensors .* do not match the metadata"):
        ssae.SSAE.load(rewrite(path, tmp_path / "edited.safetensors", reshaped))
    with pytest.raises(ModelFileError, match="do not match the metadata"):
        ssae.SSAE.load(rewrite(path, tmp_path / "missing.safetensors", lambda t: {k: v for k, v in t.items()
                                                                                   if k != "model.b"}))
    with pytest.raises(ModelFileError, match="do not match the metadata"):
        ssae.SSAE.load(rewrite(path, tmp_path / "extra.safetensors", lambda t: t | {"model.evil": torch.zeros(1)}))


def test_a_file_with_unknown_config_keys_loads_with_a_warning(additive, tmp_path, caplog):
    """Written by a newer ssae: extra keys in its stored configs are named in a warning, not an error."""
    path = additive.save(tmp_path / "m.safetensors")
    t = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    meta["ssae.preprocess"] = json.dumps(json.loads(meta["ssae.preprocess"]) | {"dither": 2})
    meta["ssae.model"] = json.dumps(json.loads(meta["ssae.model"]) | {"experts": 4})
    save_file(t, str(tmp_path / "newer.safetensors"), metadata=meta)
    with caplog.at_level("WARNING"):
        newer = ssae.SSAE.load(tmp_path / "newer.safetensors")
    assert "dither" in caplog.text and "experts" in caplog.text and "newer.safetensors" in caplog.text
    assert torch.equal(newer.compose(MIX), additive.compose(MIX))


@pytest.mark.parametrize("change, message", [
    (lambda m: m | {"ssae.format": "ssae/2"}, "not an SSAE file of format 'ssae/1' \\(found 'ssae/2'\\).*upgrade"),
    (lambda m: {k: v for k, v in m.items() if k != "ssae.format"}, "found None"),
    (lambda m: {k: v for k, v in m.items() if k != "ssae.model"}, "no 'ssae.model' metadata"),
    (lambda m: m | {"ssae.vocabulary": '{"a": ["x", "y"]}'}, "model has 9 concepts, vocabulary 2"),
    (lambda m: m | {"ssae.feature_shape": "[50]"}, "decoder writes 48 features, preprocessing keeps 50"),
    (lambda m: m | {"ssae.preprocess": '{"scale": "log"}'},
     "inconsistent metadata.*PreprocessConfig.scale must be one of .*got 'log'"),
    (lambda m: m | {"ssae.model": '{"n_concepts": 9}'}, "inconsistent metadata"),
])
def test_load_refuses_bad_metadata(additive, tmp_path, change, message):
    path = additive.save(tmp_path / "m.safetensors")
    with pytest.raises(ModelFileError, match=message):
        ssae.SSAE.load(rewrite(path, tmp_path / "bad.safetensors", meta=change))


def test_a_feature_file_is_not_an_ssae(tmp_path):
    with pytest.raises(ModelFileError, match="not an SSAE file"):
        ssae.SSAE.load(make_features(tmp_path / "f.safetensors"))


def test_inconsistent_parts_are_refused():
    pre = Preprocessor(6, torch.zeros(6), torch.ones(6))
    with pytest.raises(ModelFileError, match="sizes disagree"):
        ssae.SSAE(SupervisedSAE(config(3, 6)), pre, ssae.Vocabulary({"a": ["x", "y"]}), "s", [6])
    with pytest.raises(ModelFileError, match="sizes disagree"):
        ssae.SSAE(SupervisedSAE(config(2, 6)), pre, ssae.Vocabulary({"a": ["x", "y"]}), "s", [7])


# -- SSAE: compose, reconstruct, edit -------------------------------------------------------------

def test_weights_accept_names_fragments_and_mappings(additive):
    w = additive.weights({"blond": 1.0, "cap": 0.5})
    assert w[VOCAB.index("A blond girl")] == 1.0 and w[VOCAB.index("and a baseball cap")] == 0.5 and w.sum() == 1.5
    assert torch.equal(additive.weights(["beach", "left"]), VOCAB.mask([["beach", "left"]])[0])
    with pytest.raises(VocabularyError, match="unknown concept 'purple'"):
        additive.compose({"purple": 1.0})


def test_reconstruct_is_compose_of_the_labels(mlp, data):
    labels = data.labels[:3]
    assert torch.allclose(mlp.reconstruct(labels), torch.stack([mlp.compose(lab) for lab in labels]), atol=1e-5)
    assert mlp.reconstruct(labels).shape == (3, 48) and mlp.compose([]).shape == (48,)


def test_additive_compose_is_linear_in_the_weights(additive):
    empty = additive.compose({})
    for c in ("blond", "boat", "cap"):
        full = additive.compose({c: 1.0}) - empty
        assert torch.allclose(additive.compose({c: 0.5}) - empty, 0.5 * full, atol=1e-5)
        assert torch.allclose(additive.compose({c: -1.0}) - empty, -full, atol=1e-5)
    both = additive.compose(["blond", "boat"]) - additive.compose(["boat"])
    assert torch.allclose(both, additive.compose(["blond"]) - empty, atol=1e-5)


def vector(s, concept):
    """W·slot(concept) in raw space: what one concept adds to the additive decoder's output."""
    m, k = s.model, s.vocabulary.index(concept)
    return s.pre.inverse_delta((m.slots()[k] @ m.concept_blocks()[k])[None])[0]


@pytest.mark.parametrize("context", [None, CTX, ["A blond girl", "on a boat"], ["A blond girl"]])
def test_additive_edit_is_the_papers_slot_swap_for_any_context(additive, data, context):
    x = data.load()[:4]
    with torch.no_grad():
        swap = vector(additive, "A brunette girl") - vector(additive, "A blond girl")
    edited = additive.edit(x, add=["brunette"], remove=["blond"], context=context)
    assert torch.allclose(edited, x + swap, atol=1e-5)
    before = context or CTX
    after = ["A brunette girl"] + [c for c in before if c != "A blond girl"]
    assert torch.allclose(edited, x + additive.reconstruct([after]) - additive.reconstruct([before]), atol=1e-5)


def test_mlp_edit_with_a_context_is_exactly_the_change_in_reconstruction(mlp, data):
    x = data.load()[:2]
    after = ["A brunette girl"] + CTX[1:]
    edited = mlp.edit(x, add=["brunette"], remove=["blond"], context=CTX)
    assert torch.allclose(edited, x + mlp.reconstruct([after]) - mlp.reconstruct([CTX]), atol=1e-5)
    other = ["A blond girl", "on a boat", "and a baseball cap", "looking to the right"]
    assert not torch.allclose(mlp.delta(["brunette"], ["blond"], context=CTX),
                              mlp.delta(["brunette"], ["blond"], context=other), atol=1e-3), \
        "mlp edits depend on context"


def test_edit_strength_scales_and_zero_is_identity(mlp, data):
    x = data.load()[:3]
    assert torch.equal(mlp.edit(x, add=["brunette"], remove=["blond"], strength=0.0), x)
    d = mlp.delta(add=["brunette"], remove=["blond"])
    assert torch.allclose(mlp.edit(x, add=["brunette"], remove=["blond"], strength=2.5), x + 2.5 * d, atol=1e-5)
    assert torch.equal(mlp.edit(x), x), "no concepts, no change"


def test_edit_keeps_the_shape_and_dtype_of_its_input(tmp_path):
    fs = ssae.load_features(make_features(tmp_path / "f.safetensors", n_features=12, feature_shape=[3, 4]))
    s = ssae.train(fs, PRESETS["additive"]).ssae
    x = torch.randn(2, 3, 4, dtype=torch.float16)
    out = s.edit(x, add=["hat"], remove=["cap"])
    assert out.shape == (2, 3, 4) and out.dtype == torch.float16
    assert torch.allclose(out.float(), x.float() + s.unflatten(s.delta(["hat"], ["cap"])), atol=1e-2)


def test_edit_refuses_features_of_another_size(additive):
    with pytest.raises(ShapeMismatchError, match="shape \\[2, 50\\].*48 values.*trained on test.site \\[48\\]"):
        additive.edit(torch.zeros(2, 50), add=["hat"])


def test_unflatten_named_parts_and_plain_shapes():
    s = SupervisedSAE(config(2, 17, d=2, decoder="linear"))
    pre = Preprocessor(17, torch.zeros(17), torch.ones(17))
    m = ssae.SSAE(s, pre, ssae.Vocabulary({"a": ["x", "y"]}), "conditioning", {"cond": [3, 4], "pooled_output": [5]})
    parts = m.unflatten(torch.arange(17.0))
    assert list(parts) == ["cond", "pooled_output"] and parts["cond"].shape == (3, 4)
    assert torch.equal(parts["cond"].flatten(), torch.arange(12.0))
    assert parts["pooled_output"].tolist() == [12, 13, 14, 15, 16]
    batch = m.unflatten(torch.zeros(2, 5, 17))
    assert batch["cond"].shape == (2, 5, 3, 4) and batch["pooled_output"].shape == (2, 5, 5)
    plain = ssae.SSAE(SupervisedSAE(config(2, 12, decoder="linear")),
                      Preprocessor(12, torch.zeros(12), torch.ones(12)), ssae.Vocabulary({"a": ["x", "y"]}),
                      "block", [3, 4])
    assert plain.unflatten(torch.zeros(7, 12)).shape == (7, 3, 4)


def test_top_k_preprocessing_returns_the_full_size_with_training_means(data, tmp_path):
    recipe = PRESETS["paper"]  # top 1000 of 48 dimensions: all kept, no selection
    assert ssae.train(data, with_overrides(recipe, epochs=1)).ssae.pre.index is None
    s = ssae.train(data, replace(recipe, preprocess=PreprocessConfig(top_k=10, scale="minmax"),
                                 train=replace(recipe.train, epochs=2))).ssae
    assert s.model.cfg.n_features == 10 and s.pre.index.numel() == 10
    train_x = data.load(data.indices("train"))
    span = train_x.max(0).values - train_x.min(0).values
    assert set(s.pre.index.tolist()) == set(span.topk(10).indices.tolist()), "the 10 widest dimensions are kept"
    dropped = torch.ones(48, dtype=torch.bool)
    dropped[s.pre.index] = False
    for out in (s.compose({"blond": 1.0}), s.reconstruct(data.labels[:3])[2], s.compose({})):
        assert out.shape == (48,) and torch.allclose(out[dropped], train_x.mean(0)[dropped], atol=1e-5)
    assert not s.delta(add=["hat"], remove=["cap"])[dropped].any(), "an edit leaves unselected dimensions alone"
    t = ssae.SSAE.load(s.save(tmp_path / "k.safetensors"))
    assert torch.equal(t.compose({"blond": 1.0}), s.compose({"blond": 1.0}))
    tensors = load_file(str(tmp_path / "k.safetensors"))
    assert tensors["pre.index"].dtype == torch.int64 and tensors["pre.index"].shape == (10,)
    assert tensors["pre.fill"].shape == (48,) and tensors["model.W"].shape[1] == 10


def test_a_concept_choice_edits_exactly_for_the_prompt_it_is_given(mlp):
    """The `context` of the apply nodes: the prompt being edited, or its concepts, gives the exact edit."""
    from ssae.concepts import ConceptChoice
    choice = ConceptChoice.parse({"add": {"brunette": 1}, "remove": {"blond": 1}})
    exact = mlp.delta(["brunette"], ["blond"], context=CTX)
    assert torch.equal(choice.delta(mlp, VOCAB.prompt(CTX)).features, exact)
    assert torch.equal(choice.delta(mlp, "blond, market, hat, left").features, exact)
    assert torch.equal(choice.delta(mlp, " ").features, mlp.delta(["brunette"], ["blond"]))
