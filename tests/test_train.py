"""ssae.train: presets, determinism, the product's accuracy claims, progress, early stopping, checkpoints."""
import json
import math

import pytest
import torch
from builders import make_features

import ssae
from ssae import SSAEError
from ssae.metrics import evaluate
from ssae.model import SupervisedSAE
from ssae.safefile import read_header
from ssae.train import PRESETS, TrainConfig, pick_device, train, with_overrides


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


def test_config_validation_and_overrides():
    with pytest.raises(SSAEError, match="unknown solver 'lbfgs'"):
        TrainConfig(solver="lbfgs")
    for bad in (dict(epochs=-1), dict(batch_size=0), dict(val_fraction=1.0)):
        with pytest.raises(SSAEError, match="invalid training settings"):
            TrainConfig(**bad)
    r = with_overrides(PRESETS["default"], epochs=3, seed=None, device="cpu")
    assert r.train.epochs == 3 and r.train.seed == 0 and r.train.device == "cpu" and r.decoder == "mlp"
    assert with_overrides(PRESETS["paper"], epochs=None) is PRESETS["paper"]
    assert PRESETS["paper"].train.batch_size == 16 and PRESETS["additive"].train.epochs == 0
    assert set(PRESETS) >= {"default", "additive", "paper", "paper-trainable", "paper-ils"}


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


def test_result_records_what_was_trained(interacting_data):
    r = train(interacting_data, with_overrides(PRESETS["default"], epochs=3))
    info = r.ssae.info
    assert info["training"]["split"] == "train"
    assert info["training"]["n_train"] == len(interacting_data.indices("train"))
    assert info["training"]["decoder"] == "mlp" and info["history"] == r.history and info["best_epoch"] == r.best_epoch
    assert r.ssae.site == "test.site" and r.ssae.vocabulary == interacting_data.vocabulary and r.seconds > 0
    on_test = train(interacting_data, with_overrides(PRESETS["additive"]), split="test")
    assert on_test.ssae.info["training"]["n_train"] == len(interacting_data.indices("test"))


def test_additive_preset_recovers_additive_data_on_heldout_pairs(additive_data):
    m = evaluate(train(additive_data, PRESETS["additive"]).ssae, additive_data, "test")
    assert m["explained_variance"] > 0.99 and m["cosine"] > 0.99 and m["n"] == len(additive_data.indices("test"))


def test_gram_solver_fits_additive_data_on_heldout_pairs(additive_data):
    r = train(additive_data, with_overrides(PRESETS["default"], epochs=15))
    assert r.history[-1]["loss"] < r.history[0]["loss"], "the gram objective goes down"
    assert evaluate(r.ssae, additive_data, "test")["explained_variance"] > 0.95


def test_default_decoder_beats_additive_when_concepts_interact(interacting_data):
    """The product's claim: the mlp decoder models pairwise interactions the additive decoder cannot."""
    add = evaluate(train(interacting_data, PRESETS["additive"]).ssae, interacting_data, "test")
    mlp = evaluate(train(interacting_data, with_overrides(PRESETS["default"], epochs=20)).ssae, interacting_data,
                   "test")
    assert mlp["explained_variance"] > add["explained_variance"] + 0.05, (mlp, add)


def test_progress_is_reported_once_per_epoch_with_the_loss(interacting_data):
    seen = []
    r = train(interacting_data, with_overrides(PRESETS["default"], epochs=7),
              progress=lambda e, total, info: seen.append((e, total, info)))
    assert [e for e, _, _ in seen] == list(range(1, 8)) and all(t == 7 for _, t, _ in seen)
    assert [info for _, _, info in seen] == r.history
    assert all(math.isfinite(info["loss"]) and info["val"] is not None for _, _, info in seen)


def test_no_validation_rows_means_no_early_stopping(interacting_data):
    r = train(interacting_data, with_overrides(PRESETS["default"], epochs=4, val_fraction=0.0, patience=1))
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
    n_train = len(additive_data.indices("train"))
    n_val = int(n_train * 0.1)
    n_fit = n_train - n_val
    per_epoch = [16] * (n_fit // 16) + ([n_fit % 16] if n_fit % 16 else []) + [n_val]
    assert calls == per_epoch * 3, "minibatches of 16 in order, then one validation pass"


@pytest.mark.parametrize("preset", ["paper", "paper-trainable", "paper-ils"])
def test_paper_presets_run(interacting_data, preset):
    r = train(interacting_data, with_overrides(PRESETS[preset], epochs=3))
    assert len(r.history) == 3 and all(math.isfinite(h["loss"]) for h in r.history)
    assert torch.isfinite(r.ssae.compose({"blond": 1.0})).all()
    assert r.ssae.pre.config.scale == "minmax" and r.ssae.model.cfg.decoder == "linear"


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


def test_checkpoint_every_writes_periodically(interacting_data, tmp_path):
    recipe = with_overrides(PRESETS["default"], epochs=6, checkpoint_every=4)
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
