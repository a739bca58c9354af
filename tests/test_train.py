import pytest
import torch

import ssae
from ssae import SSAEError
from ssae.metrics import evaluate
from ssae.train import PRESETS, train, with_overrides

from builders import make_features


@pytest.fixture(scope="module")
def additive_data(tmp_path_factory):
    return ssae.load_features(make_features(tmp_path_factory.mktemp("a") / "f.safetensors", interactions=0.0))


@pytest.fixture(scope="module")
def interacting_data(tmp_path_factory):
    return ssae.load_features(make_features(tmp_path_factory.mktemp("i") / "f.safetensors", interactions=0.7,
                                            repeats=3))


def weights(result):
    return {k: v.clone() for k, v in result.ssae.model.state_dict().items()}


def test_same_seed_same_model(interacting_data):
    r = with_overrides(PRESETS["default"], epochs=10)
    a, b = weights(train(interacting_data, r)), weights(train(interacting_data, r))
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = weights(train(interacting_data, with_overrides(r, seed=1)))
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_additive_closed_form_recovers_additive_data_on_heldout_pairs(additive_data):
    m = evaluate(train(additive_data, PRESETS["additive"]).ssae, additive_data, "test")
    assert m["explained_variance"] > 0.99 and m["n"] == len(additive_data.indices("test"))


def test_default_decoder_beats_additive_when_concepts_interact(interacting_data):
    add = evaluate(train(interacting_data, PRESETS["additive"]).ssae, interacting_data, "test")
    mlp = evaluate(train(interacting_data, with_overrides(PRESETS["default"], epochs=150)).ssae, interacting_data,
                   "test")
    assert mlp["explained_variance"] > add["explained_variance"] + 0.05, (mlp, add)


def test_progress_is_reported_every_epoch_and_early_stopping_stops(interacting_data):
    seen = []
    r = train(interacting_data, with_overrides(PRESETS["default"], epochs=30),
              progress=lambda e, total, info: seen.append((e, total, info["loss"])))
    assert [e for e, _, _ in seen] == list(range(1, 31)) and all(t == 30 for _, t, _ in seen)
    # an explicit readout with a far too large step: validation stops improving, training stops
    r = train(interacting_data, with_overrides(PRESETS["paper"], epochs=200, patience=3, lr=0.5, lr_end=0.5))
    assert len(r.history) < 200 and r.best_epoch == len(r.history) - 4


def test_paper_loop_runs_in_batches_of_16(additive_data):
    r = train(additive_data, with_overrides(PRESETS["paper"], epochs=3))
    assert len(r.history) == 3 and r.history[0]["lr"] == pytest.approx(1e-3) and r.history[-1]["lr"] == pytest.approx(1e-4)


class Stop(Exception):
    pass


@pytest.mark.parametrize("preset", ["default", "paper"])
def test_interrupted_run_resumes_to_the_same_model(interacting_data, tmp_path, preset):
    recipe = with_overrides(PRESETS[preset], epochs=12, checkpoint_every=1, patience=0)
    full = weights(train(interacting_data, recipe))
    ckpt = tmp_path / "ckpt.safetensors"

    def crash(epoch, total, info):
        if epoch == 5:
            raise Stop

    with pytest.raises(Stop):
        train(interacting_data, recipe, progress=crash, checkpoint=ckpt)
    from ssae.safefile import read_header
    import json
    assert len(json.loads(read_header(ckpt)[1]["history"])) == 5, "the loss history survives the crash"
    resumed = weights(train(interacting_data, recipe, checkpoint=ckpt))
    assert all(torch.allclose(full[k], resumed[k], atol=1e-6) for k in full)


def test_a_checkpoint_of_another_run_is_refused(interacting_data, tmp_path):
    ckpt = tmp_path / "ckpt.safetensors"
    train(interacting_data, with_overrides(PRESETS["default"], epochs=2), checkpoint=ckpt)
    with pytest.raises(SSAEError, match="another run"):
        train(interacting_data, with_overrides(PRESETS["default"], epochs=2, seed=5), checkpoint=ckpt)
