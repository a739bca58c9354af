"""ssae.train: presets, determinism, the product's accuracy claims, progress, early stopping, checkpoints."""
import json
import math

import pytest
import torch
from builders import make_features

import ssae
from ssae import SSAEError
from ssae.metrics import evaluate
from ssae.model import DecoderConfig, SupervisedSAE
from ssae.presets import PRESETS, Recipe, TrainConfig, with_overrides
from ssae.safefile import read_header
from ssae.splits import validation_rows
from ssae.train import pick_device, train


@pytest.fixture(scope="module")
def additive_data(tmp_path_factory):
    return ssae.load_features(make_features(tmp_path_factory.mktemp("a") / "f.safetensors", interactions=0.0))


@pytest.fixture(scope="module")
def interacting_data(tmp_path_factory):
    return ssae.load_features(make_features(tmp_path_factory.mktemp("i") / "f.safetensors", interactions=0.7,
                                            repeats=3))


def weights(result):
    return {k: v.clone() for k, v in result.ssae.model.state_dict().items()}


def same_weights(a, b, atol=1e-6):
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol) for k in a)


class Stop(Exception):
    pass


@pytest.mark.parametrize("bad, message", [
    (dict(solver="lbfgs"), "TrainConfig.solver must be one of 'gram', 'adam', 'mean', got 'lbfgs'"),
    (dict(optimizer="sgd"), "TrainConfig.optimizer must be one of 'lbfgs', 'adam', got 'sgd'"),
    (dict(epochs=-1), "TrainConfig.epochs must be an integer >= 0, got -1"),
    (dict(epochs=2.0), "TrainConfig.epochs must be an integer >= 0, got 2.0"),
    (dict(batch_size=0), "TrainConfig.batch_size must be an integer >= 1 or None, got 0"),
    (dict(checkpoint_every=0), "TrainConfig.checkpoint_every must be an integer >= 1, got 0"),
    (dict(members=0), "TrainConfig.members must be an integer >= 1, got 0"),
    (dict(lbfgs_steps=0), "TrainConfig.lbfgs_steps must be an integer >= 1, got 0"),
    (dict(val_fraction=1.0), "TrainConfig.val_fraction must be a finite number in \\[0, 1\\), got 1.0"),
    (dict(lr=0.0), "TrainConfig.lr must be a finite number in \\(0, inf\\), got 0.0"),
    (dict(lr_end=float("nan")), "TrainConfig.lr_end must be a finite number"),
    (dict(ridge=-1.0), "TrainConfig.ridge must be a finite number in \\[0, inf\\), got -1.0"),
    (dict(ridge_grid=()), "TrainConfig.ridge_grid must be a non-empty list"),
    (dict(ridge_grid=(0.1, -1.0)), "TrainConfig.ridge_grid\\[\\] must be a finite number"),
    (dict(energy=0.0), "TrainConfig.energy must be a finite number in \\(0, 1\\]"),
    (dict(min_delta=1.0), "TrainConfig.min_delta must be a finite number in \\[0, 1\\)"),
    (dict(patience=-1), "TrainConfig.patience must be an integer >= 0"),
    (dict(stream="yes"), "TrainConfig.stream must be true or false or None, got 'yes'"),
    (dict(device="gpu"), "TrainConfig.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
])
def test_train_config_validates_every_field(bad, message):
    with pytest.raises(SSAEError, match=message):
        TrainConfig(**bad)


def test_recipe_validation_and_overrides():
    with pytest.raises(SSAEError, match="members=4 needs the gram solver.*use members=1"):
        with_overrides(PRESETS["paper"], members=4)
    with pytest.raises(SSAEError, match="ridge_grid picks the penalty of one model's readout"):
        with_overrides(PRESETS["default"], ridge_grid=(0.1,))
    with pytest.raises(SSAEError, match="Recipe.train must be a TrainConfig, got dict"):
        Recipe(train={"epochs": 3})
    r = with_overrides(PRESETS["default"], epochs=3, seed=None, device="cpu")
    assert r.train.epochs == 3 and r.train.seed == 0 and r.train.device == "cpu" and r.model.decoder == "mlp"
    assert with_overrides(PRESETS["paper"], epochs=None) is PRESETS["paper"]
    assert PRESETS["paper"].train.batch_size == 16 and PRESETS["additive"].train.epochs == 0
    assert set(PRESETS) >= {"default", "additive", "paper", "paper-trainable", "paper-ils"}
    assert all(Recipe.from_dict(r.to_dict()) == r for r in PRESETS.values()), "a stored recipe reads back"


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(SSAEError, match="no CUDA GPU"):
            pick_device("cuda")


def test_same_seed_same_model(interacting_data):
    r = with_overrides(PRESETS["default"], epochs=6)
    a, b = train(interacting_data, r), train(interacting_data, r)
    assert all(torch.equal(weights(a)[k], weights(b)[k]) for k in weights(a)) and a.history == b.history
    c = weights(train(interacting_data, with_overrides(r, seed=1)))
    assert not all(torch.equal(weights(a)[k], c[k]) for k in c)


def test_only_the_merged_model_holds_a_full_readout(interacting_data, monkeypatch):
    """Members are fitted without a readout of their own (at SD3.5 size each would hold gigabytes of zeros):
    only the merged model, whose readout is solved, is built with every feature column."""
    built = []
    init = SupervisedSAE.__init__
    monkeypatch.setattr(SupervisedSAE, "__init__", lambda self, cfg, *a, **k: built.append(cfg.n_features) or
                        init(self, cfg, *a, **k))
    r = train(interacting_data, with_overrides(PRESETS["default"], epochs=2))
    assert built.count(interacting_data.n_features) == 1 and set(built) == {1, interacting_data.n_features}
    assert r.ssae.model.W.shape == (interacting_data.vocabulary.n_concepts + 4 * 128, interacting_data.n_features)


def test_result_records_what_was_trained(interacting_data):
    r = train(interacting_data, with_overrides(PRESETS["default"], epochs=3))
    info = r.ssae.info
    assert info["training"]["split"] == "train"
    assert info["training"]["n_train"] == len(interacting_data.indices("train"))
    assert info["training"]["model"]["decoder"] == "mlp" and info["history"] == r.history
    assert info["best_epoch"] == r.best_epoch and len(info["best_epochs"]) == PRESETS["default"].train.members
    assert r.ssae.site == "test.site" and r.ssae.vocabulary == interacting_data.vocabulary and r.seconds > 0
    on_test = train(interacting_data, with_overrides(PRESETS["additive"]), split="test")
    assert on_test.ssae.info["training"]["n_train"] == len(interacting_data.indices("test"))


def test_additive_preset_recovers_additive_data_on_heldout_pairs(additive_data):
    m = evaluate(train(additive_data, PRESETS["additive"]).ssae, additive_data, "test")
    assert m["explained_variance"] > 0.99 and m["cosine"] > 0.99 and m["n"] == len(additive_data.indices("test"))


def test_gram_solver_fits_additive_data_on_heldout_pairs(additive_data):
    r = train(additive_data, with_overrides(PRESETS["default"], epochs=15))
    for member in range(PRESETS["default"].train.members):
        own = [h["loss"] for h in r.history if h["member"] == member]
        assert all(b <= a for a, b in zip(own, own[1:])), "L-BFGS never goes up"
        assert own[-1] < 1e-3, "down to the noise"
    assert all(h["lr"] is None for h in r.history), "L-BFGS has no learning rate to record"
    assert evaluate(r.ssae, additive_data, "test")["explained_variance"] > 0.95


def test_default_decoder_beats_additive_when_concepts_interact(interacting_data):
    """The product's claim: the mlp decoder models pairwise interactions the additive decoder cannot."""
    add = evaluate(train(interacting_data, PRESETS["additive"]).ssae, interacting_data, "test")
    mlp = evaluate(train(interacting_data, with_overrides(PRESETS["default"], epochs=20)).ssae, interacting_data,
                   "test")
    assert mlp["explained_variance"] > add["explained_variance"] + 0.05, (mlp, add)


def test_progress_is_reported_once_per_epoch_with_the_loss(interacting_data):
    seen = []
    r = train(interacting_data, with_overrides(PRESETS["default"], epochs=7, members=3, patience=0),
              progress=lambda e, total, info: seen.append((e, total, info)))
    assert [e for e, _, _ in seen] == list(range(1, 22)) and all(t == 21 for _, t, _ in seen)
    assert [info for _, _, info in seen] == r.history
    assert [info["member"] for _, _, info in seen] == [0] * 7 + [1] * 7 + [2] * 7
    assert all(math.isfinite(info["loss"]) and info["val"] is not None for _, _, info in seen)
    first = [info for _, _, info in seen if info["member"] == 0]
    assert all(h["ensemble"] == h["val"] for h in first), "one member: the ensemble is that member"
    assert all(0 < h["ensemble"] < 1 for h in r.history)


def test_early_stopping_ends_each_member_when_validation_stops_improving(interacting_data):
    r = train(interacting_data, with_overrides(PRESETS["default"], epochs=40, min_delta=0.5, patience=2))
    for member in range(PRESETS["default"].train.members):
        vals = [h["val"] for h in r.history if h["member"] == member]
        assert 3 <= len(vals) < 40, "stopped once two epochs did not halve the loss"
        assert not any(v < 0.5 * min(vals[:-2]) for v in vals[-2:])
    assert r.best_epoch == min((h for h in r.history if h["member"] == 3), key=lambda h: h["val"])["epoch"]


def test_no_validation_rows_means_no_early_stopping(interacting_data):
    r = train(interacting_data, with_overrides(PRESETS["default"], epochs=4, members=1, val_fraction=0.0,
                                               patience=1))
    assert len(r.history) == 4 and all(h["val"] is None for h in r.history) and r.best_epoch == 4


def test_early_stopping_stops_before_the_last_epoch(interacting_data):
    # an explicit readout with a far too large step: validation stops improving, training stops
    r = train(interacting_data, with_overrides(PRESETS["paper"], epochs=200, patience=3, lr=0.5, lr_end=0.5))
    assert len(r.history) < 200 and r.best_epoch == len(r.history) - 4
    vals = [h["val"] for h in r.history]
    assert min(vals) == vals[r.best_epoch] and all(v >= vals[r.best_epoch] for v in vals[-3:])


def test_paper_loop_runs_in_batches_of_16(additive_data, monkeypatch):
    calls = []
    forward = SupervisedSAE.forward
    monkeypatch.setattr(SupervisedSAE, "forward", lambda self, mask, ids=None: calls.append(len(mask)) or
                        forward(self, mask, ids))
    r = train(additive_data, with_overrides(PRESETS["paper"], epochs=3))
    assert len(r.history) == 3
    assert r.history[0]["lr"] == pytest.approx(1e-3) and r.history[-1]["lr"] == pytest.approx(1e-4)
    labels = [additive_data.labels[i] for i in additive_data.indices("train").tolist()]
    n_fit = len(validation_rows(additive_data.vocabulary, labels, 0.1, 0, PRESETS["paper"].train.validation)[0])
    per_epoch = [16] * (n_fit // 16) + ([n_fit % 16] if n_fit % 16 else [])
    assert calls == per_epoch * 3, "minibatches of 16 in order (validation decodes the concept codes)"


@pytest.mark.parametrize("preset", ["paper", "paper-trainable", "paper-ils"])
def test_paper_presets_run(interacting_data, preset):
    r = train(interacting_data, with_overrides(PRESETS[preset], epochs=3))
    assert len(r.history) == 3 and all(math.isfinite(h["loss"]) for h in r.history)
    assert torch.isfinite(r.ssae.compose({"blond": 1.0})).all()
    assert r.ssae.pre.config.scale == "minmax" and r.ssae.model.cfg.decoder == "linear"


@pytest.mark.parametrize("preset", ["paper-trainable", "paper-ils"])
def test_sample_codes_never_use_the_validation_rows_codes(interacting_data, preset, monkeypatch):
    """Issue #11 item 8: the validation rows' own codes are never trained, so neither the stored concept codes
    (means over the fit rows), nor the readout, nor the validation loss that picks the best epoch may use them.
    Two runs whose validation rows start from different codes must give the same model."""
    recipe = with_overrides(PRESETS[preset], epochs=4)
    labels = [interacting_data.labels[i] for i in interacting_data.indices("train").tolist()]
    _, val = validation_rows(interacting_data.vocabulary, labels, recipe.train.val_fraction, recipe.train.seed,
                             recipe.train.validation)
    init = SupervisedSAE.__init__

    def run(value):
        def patched(self, cfg, generator=None, random_readout=True):
            init(self, cfg, generator, random_readout)
            if cfg.n_samples:
                with torch.no_grad():
                    self.sample_code[val] = value
        monkeypatch.setattr(SupervisedSAE, "__init__", patched)
        return train(interacting_data, recipe)

    a, b = run(0.05), run(5.0)
    assert len(val) > 0 and a.history == b.history
    stored = lambda r: {k: v for k, v in weights(r).items() if k != "sample_code"}  # noqa: E731 (what a file holds)
    assert same_weights(stored(a), stored(b), atol=0), "the stored model depends on the validation rows' codes"


def test_additive_picks_its_ridge_on_the_validation_rows(interacting_data):
    """The penalty the additive preset picks is the one whose readout, fitted on the fit rows, predicts the
    validation rows best: checked here against plain ridge fits, one per penalty."""
    from ssae.ridge import ridge_fit
    r = train(interacting_data, PRESETS["additive"])
    grid = PRESETS["additive"].train.ridge_grid
    assert r.ssae.info["training"]["chosen_ridge"] in grid and r.history == []
    Y = r.ssae.pre.transform(interacting_data.load(interacting_data.indices("train"))).double()
    M = interacting_data.mask(interacting_data.indices("train")).double()
    labels = [interacting_data.labels[i] for i in interacting_data.indices("train").tolist()]
    fit, val = validation_rows(interacting_data.vocabulary, labels, 0.1, 0)
    errors = []
    for ridge in grid:
        W, b = ridge_fit(M[fit], Y[fit], ridge)
        errors.append(float(((M[val] @ W + b - Y[val]) ** 2).sum()))
    assert r.ssae.info["training"]["chosen_ridge"] == grid[errors.index(min(errors))]
    W, b = ridge_fit(M, Y, r.ssae.info["training"]["chosen_ridge"])  # then refitted on every training row
    assert torch.allclose(r.ssae.model.W.double(), W, atol=1e-4) and torch.allclose(r.ssae.model.b.double(), b,
                                                                                      atol=1e-4)


def test_divergence_is_reported(interacting_data):
    with pytest.raises(SSAEError, match="diverged at epoch 0.*lower the learning rate"):
        train(interacting_data, with_overrides(PRESETS["paper"], epochs=3, lr=1e30, lr_end=1e30))


# -- checkpoints ----------------------------------------------------------------------------------

def crash_at(k):
    def progress(epoch, total, info):
        if epoch == k:
            raise Stop
    return progress


@pytest.mark.parametrize("preset", ["default", "paper"])
def test_interrupted_run_resumes_to_the_same_model(interacting_data, tmp_path, preset):
    recipe = with_overrides(PRESETS[preset], epochs=8, checkpoint_every=1, patience=0)
    full = train(interacting_data, recipe)
    ckpt = tmp_path / "ckpt.safetensors"
    with pytest.raises(Stop):
        train(interacting_data, recipe, progress=crash_at(5), checkpoint=ckpt)
    names, meta = read_header(ckpt)
    assert {"epoch", "history", "best", "fingerprint"} <= set(meta)  # docs/FORMATS.md
    assert {n.split(".")[0] for n in names} == {"model", "best", "optim"}
    assert meta["epoch"] == "5"
    assert json.loads(meta["history"]) == full.history[:5], "the loss history survives the crash"
    resumed = train(interacting_data, recipe, checkpoint=ckpt)
    assert same_weights(weights(full), weights(resumed)) and resumed.history == full.history
    assert resumed.best_epoch == full.best_epoch


def test_a_run_interrupted_in_a_later_member_resumes_to_the_same_model(interacting_data, tmp_path):
    recipe = with_overrides(PRESETS["default"], epochs=5, members=3, checkpoint_every=3, patience=0)
    full = train(interacting_data, recipe)
    ckpt = tmp_path / "ckpt.safetensors"
    with pytest.raises(Stop):
        train(interacting_data, recipe, progress=crash_at(12), checkpoint=ckpt)  # member 2, its second epoch
    names, meta = read_header(ckpt)
    assert meta["epoch"] == "12" and meta["member"] == "2" and meta["n_members"] == "2"
    assert {n.split(".")[0] for n in names} == {"member", "model", "best", "optim"}
    resumed = train(interacting_data, recipe, checkpoint=ckpt)
    assert same_weights(weights(full), weights(resumed)) and resumed.history == full.history


def test_checkpoint_every_writes_periodically(interacting_data, tmp_path):
    recipe = with_overrides(PRESETS["default"], epochs=6, members=1, checkpoint_every=4, patience=0)
    ckpt = tmp_path / "ckpt.safetensors"
    epochs_on_disk = []
    train(interacting_data, recipe, checkpoint=ckpt,
          progress=lambda e, t, i: epochs_on_disk.append(read_header(ckpt)[1]["epoch"] if ckpt.exists() else None))
    # written after epoch 4 (seen by progress at epoch 4 or 5, whichever runs first) and at the end only
    assert epochs_on_disk[:3] == [None] * 3 and epochs_on_disk[3] in (None, "4") and epochs_on_disk[4:] == ["4", "4"]
    assert read_header(ckpt)[1]["epoch"] == "6"


def test_a_finished_checkpoint_gives_the_same_model_without_training(interacting_data, tmp_path):
    recipe = with_overrides(PRESETS["default"], epochs=5)
    ckpt = tmp_path / "ckpt.safetensors"
    first = train(interacting_data, recipe, checkpoint=ckpt)
    seen = []
    again = train(interacting_data, recipe, checkpoint=ckpt, progress=lambda *a: seen.append(a))
    assert seen == [] and again.history == first.history and same_weights(weights(first), weights(again))


def test_a_checkpoint_of_another_run_is_refused(interacting_data, tmp_path):
    ckpt = tmp_path / "ckpt.safetensors"
    train(interacting_data, with_overrides(PRESETS["default"], epochs=2), checkpoint=ckpt)
    with pytest.raises(SSAEError, match="belongs to another run.*new checkpoint path"):
        train(interacting_data, with_overrides(PRESETS["default"], epochs=2, seed=5), checkpoint=ckpt)
    with pytest.raises(SSAEError, match="another run"):
        train(interacting_data, with_overrides(PRESETS["default"], epochs=2), split="test", checkpoint=ckpt)


def test_resume_after_the_best_epoch_stops_when_the_uninterrupted_run_stops(interacting_data, tmp_path):
    """Early stopping counts epochs since the best; a resumed run must count the same way."""
    recipe = with_overrides(PRESETS["paper"], epochs=200, patience=3, lr=0.5, lr_end=0.5, checkpoint_every=1)
    full = train(interacting_data, recipe)
    assert len(full.history) < 200
    crash = full.best_epoch + 1  # crash right after the best epoch was reported
    ckpt = tmp_path / "ckpt.safetensors"
    with pytest.raises(Stop):
        train(interacting_data, recipe, progress=crash_at(crash), checkpoint=ckpt)
    resumed = train(interacting_data, recipe, checkpoint=ckpt)
    assert len(resumed.history) == len(full.history), (
        f"uninterrupted: {len(full.history)} epochs; resumed after epoch {crash}: {len(resumed.history)}")


def test_interrupt_inside_an_epoch_resumes_to_the_same_model(interacting_data, tmp_path, monkeypatch):
    """Ctrl-C in the middle of an adam epoch (between minibatches) must not change the resumed result."""
    recipe = with_overrides(PRESETS["paper"], epochs=6, checkpoint_every=1)
    assert len(interacting_data.indices("train")) * 0.9 > 16, "the test needs two minibatches per epoch"
    full = train(interacting_data, recipe)
    ckpt = tmp_path / "ckpt.safetensors"
    state = {"reported": 0, "calls": 0}
    forward = SupervisedSAE.forward

    def counting_forward(self, mask, ids=None):
        if state["reported"] == 3:  # in epoch 4, after its first minibatch step
            state["calls"] += 1
            if state["calls"] == 2:
                raise Stop
        return forward(self, mask, ids)

    monkeypatch.setattr(SupervisedSAE, "forward", counting_forward)
    with pytest.raises(Stop):
        train(interacting_data, recipe, checkpoint=ckpt,
              progress=lambda e, t, i: state.__setitem__("reported", e))
    monkeypatch.setattr(SupervisedSAE, "forward", forward)
    resumed = train(interacting_data, recipe, checkpoint=ckpt)
    assert resumed.history == full.history
    assert same_weights(weights(full), weights(resumed))


@pytest.mark.parametrize("stream", [False, True], ids=["held", "streamed"])
def test_mean_difference_preset_edits_by_the_difference_of_class_means(interacting_data, stream):
    """The steering baseline fits nothing: an edit adds mean(x | new) - mean(x | old) over the training rows,
    whatever the context, and composing gives the mean plus each concept's offset from it."""
    r = train(interacting_data, with_overrides(PRESETS["mean-difference"], stream=stream))
    rows = interacting_data.indices("train")
    x = interacting_data.load(rows).double()
    labels = [interacting_data.labels[i] for i in rows.tolist()]

    def mean_of(concept):
        return x[[concept in ls for ls in labels]].mean(0)

    old, new = "A blond girl", "A brunette girl"
    expected = mean_of(new) - mean_of(old)
    for context in (None, ["A blond girl", "at a market", "and a hat", "looking to the left"]):
        got = r.ssae.delta({new: 1.0}, {old: 1.0}, context=context).double()
        assert torch.allclose(got, expected, atol=1e-4), context
    combo = ["A brunette girl", "on a boat", "and a hat", "looking to the right"]
    composed = r.ssae.compose(combo).double()
    assert torch.allclose(composed, x.mean(0) + sum(mean_of(c) - x.mean(0) for c in combo), atol=1e-4)
    assert r.history == [] and r.ssae.info["training"]["train"]["solver"] == "mean"


def test_mean_solver_refuses_a_decoder_it_cannot_set():
    with pytest.raises(SSAEError, match="mean solver"):
        Recipe(train=TrainConfig(solver="mean", members=1))


def test_lbfgs_state_follows_the_parameters_device():
    """Checkpoints load on the CPU; a resumed L-BFGS must hold its history where its parameters are (on a GPU a
    CPU direction would fail the first line search). Checked with the meta device standing in for the GPU."""
    from ssae.lbfgs import LBFGS
    w = torch.nn.Parameter(torch.tensor([-1.2, 1.0]))
    opt = LBFGS([w], max_iter=3)

    def rosenbrock():
        w.grad = None
        loss = (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2
        loss.backward()
        return loss

    opt.step(rosenbrock)
    state = opt.state_dict()
    assert state["state"][0]["s"], "the step recorded curvature pairs"
    on_meta = LBFGS([torch.nn.Parameter(torch.zeros(2, device="meta"))], max_iter=3)
    on_meta.load_state_dict(state)
    tensors = [v for v in on_meta.state.values() if torch.is_tensor(v)] + on_meta.state["s"] + on_meta.state["y"]
    assert tensors and all(t.device.type == "meta" for t in tensors)


def test_one_trained_member_of_several_gives_the_one_member_model(interacting_data):
    """members > 1 with no epochs merges a single member: the merged readout must fold its code (slots not 1
    when the code is trained) and predict what the member alone predicts."""
    base = Recipe(model=DecoderConfig(d=2, hidden=8), train=TrainConfig(epochs=0, train_code=True, members=1))
    one = train(interacting_data, base).ssae
    two = train(interacting_data, with_overrides(base, members=2)).ssae
    labels = interacting_data.labels[:20]
    assert torch.allclose(one.reconstruct(labels), two.reconstruct(labels), atol=1e-4)


@pytest.mark.parametrize("train_cfg, message", [
    (dict(solver="mean", epochs=0, members=1, train_code=True), "train_code=False"),
    (dict(solver="adam", members=1, ridge_grid=(0.1, 1.0)), "ridge_grid"),
])
def test_recipes_whose_settings_would_be_ignored_are_refused(train_cfg, message):
    with pytest.raises(SSAEError, match=message):
        Recipe(model=DecoderConfig(d=1, decoder="linear"), train=TrainConfig(**train_cfg))


def test_constant_training_rows_are_a_clear_error(tmp_path):
    vocab = ssae.Vocabulary({"a": ["a0", "a1"], "b": ["b0", "b1"]})
    combos = [list(c) for c in vocab.all_combinations()] * 3
    data = ssae.load_features(ssae.save_features(tmp_path / "f.safetensors", torch.ones(len(combos), 8), vocab,
                                                 combos))
    with pytest.raises(SSAEError, match="do not vary"):
        train(data, with_overrides(PRESETS["default"], epochs=2))
