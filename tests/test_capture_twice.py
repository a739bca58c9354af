"""A prompt set captured twice, then trained (issue 19, item 3): the set does not double, and SSAE Train starts a
fresh run on a changed set and resumes on an unchanged one.

The node tests call SSAESaveFeatures.execute and SSAETrain.execute against minimal stand-ins for the few
ComfyUI modules those two import, built here and removed afterwards.
"""
import json
import sys
import types
from pathlib import Path

import pytest
import torch
from builders import VOCAB, make_features

import ssae
from ssae.capture import CapturedSample
from ssae.promptset import prompt_set
from ssae.store import new_samples
from ssae.train import PRESETS, run_fingerprint, train, with_overrides

ROOT = Path(__file__).resolve().parents[1]


def conditioning(prompts) -> torch.Tensor:
    """A made-up 'conditioning' per prompt: additive concept vectors plus one interaction, deterministic."""
    g = torch.Generator().manual_seed(0)
    V, U = torch.randn(VOCAB.n_concepts, 24, generator=g), torch.randn(VOCAB.n_concepts, 24, generator=g)
    m = VOCAB.mask([p.concepts for p in prompts])
    return m @ V + torch.tanh(m @ U)


def captures(prompts) -> list[CapturedSample]:
    x = conditioning(prompts)
    return [CapturedSample(p, "conditioning", [24], values=x[i:i + 1]) for i, p in enumerate(prompts)]


# -- the library ----------------------------------------------------------------------------------

def test_new_samples_are_those_the_set_does_not_hold(tmp_path):
    folder = tmp_path / "set"
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    prompts = ["p0", "p1", "p2", "p3"]
    assert new_samples(folder, x, prompts) == [0, 1, 2, 3], "nothing is held in a folder that does not exist"
    ssae.append_features(folder, x[:2], VOCAB, [["blond"]] * 2, prompts=prompts[:2])
    assert new_samples(folder, x, prompts) == [2, 3]
    other_seed = x + 1e-3  # the same prompts sampled at another seed: other features, new samples
    assert new_samples(folder, other_seed, prompts) == [0, 1, 2, 3]
    assert new_samples(folder, x, ["q0", "q1", "p2", "p3"]) == [0, 1, 2, 3], "another prompt is another sample"
    assert new_samples(folder, torch.cat([x[2:3], x[2:3]]), ["p2", "p2"]) == [0], "a repeat within the batch too"
    assert new_samples(folder, x.half().float(), prompts) == new_samples(folder, x.half(), prompts), \
        "digests are of the values, whatever the dtype they come in"


def test_a_set_written_before_digests_were_recorded_is_read_for_them(tmp_path):
    folder = tmp_path / "set"
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    ssae.append_features(folder, x, VOCAB, [["blond"]] * 3, prompts=["a", "b", "c"])
    doc = json.loads((folder / "manifest.json").read_text())
    assert len(doc["shards"][0]["digests"]) == 3
    del doc["shards"][0]["digests"]
    (folder / "manifest.json").write_text(json.dumps(doc))
    assert new_samples(folder, x, ["a", "b", "z"]) == [2]
    doc["shards"][0]["digests"] = "abc"
    (folder / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ssae.FeatureFileError, match="manifest.json is damaged"):
        new_samples(folder, x, ["a", "b", "c"])


def test_the_run_fingerprint_follows_the_data(tmp_path):
    """A checkpoint named by it is another file once the set is appended to or rewritten, the same file otherwise."""
    path = make_features(tmp_path / "f.safetensors")
    recipe = with_overrides(PRESETS["default"], epochs=2)
    first = run_fingerprint(ssae.load_features(path), recipe)
    assert run_fingerprint(ssae.load_features(path), recipe) == first
    assert run_fingerprint(ssae.load_features(path), with_overrides(recipe, seed=1)) != first
    make_features(path, seed=1)  # the same prompts and labels, other features
    assert run_fingerprint(ssae.load_features(path), recipe) != first


# -- the nodes, against stand-ins for ComfyUI -------------------------------------------------------

class Interrupted(Exception):
    pass


@pytest.fixture
def comfy(tmp_path, monkeypatch):
    """nodes.save_features and nodes.train imported against stand-ins for comfy_api, folder_paths and comfy;
    `comfy.interrupt_after` makes the n-th progress call raise, as Cancel does."""
    ns = types.SimpleNamespace(interrupt_after=None, calls=0)

    class Output:
        def __init__(self, *args, ui=None):
            self.args, self.ui = args, ui

    class ComfyNode:
        hidden = None

    io = types.SimpleNamespace(ComfyNode=ComfyNode, NodeOutput=Output, Custom=lambda name: name)
    ui = types.SimpleNamespace(PreviewText=lambda text: text)

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total = total

        def update_absolute(self, value, total=None):
            pass

    def interrupted():
        ns.calls += 1
        if ns.interrupt_after is not None and ns.calls >= ns.interrupt_after:
            raise Interrupted

    modules = {"comfy_api": types.ModuleType("comfy_api"), "comfy_api.latest": types.ModuleType("comfy_api.latest"),
               "folder_paths": types.ModuleType("folder_paths"), "comfy": types.ModuleType("comfy"),
               "comfy.utils": types.ModuleType("comfy.utils"),
               "comfy.model_management": types.ModuleType("comfy.model_management")}
    modules["comfy_api.latest"].io, modules["comfy_api.latest"].ui = io, ui
    modules["folder_paths"].get_output_directory = lambda: str(tmp_path / "output")
    modules["comfy.utils"].ProgressBar = ProgressBar
    modules["comfy.model_management"].throw_exception_if_processing_interrupted = interrupted
    modules["comfy"].utils = modules["comfy.utils"]
    modules["comfy"].model_management = modules["comfy.model_management"]
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.syspath_prepend(str(ROOT))
    for name in [n for n in sys.modules if n == "nodes" or n.startswith("nodes.")]:
        monkeypatch.delitem(sys.modules, name)
    from nodes.save_features import SSAESaveFeatures
    from nodes.train import SSAETrain
    ns.save, ns.train, ns.root = SSAESaveFeatures, SSAETrain, tmp_path / "output" / "ssae_features"
    yield ns
    for name in [n for n in sys.modules if n == "nodes" or n.startswith("nodes.")]:
        del sys.modules[name]


def save(comfy, samples, if_exists="append") -> str:
    out = comfy.save.execute(captures(samples), name=["portraits"], split=["auto"], if_exists=[if_exists])
    return out.ui


def train_node(comfy, preset="default", epochs=3):
    return comfy.train.execute(features="portraits", preset=preset, epochs=epochs, seed=0, device="cpu")


def test_a_prompt_set_saved_twice_does_not_double(comfy):
    more, _ = prompt_set(VOCAB, 24, seed=0, heldout=[("A blond girl", "on a boat")])  # all 24 combinations
    prompts = more[:16]
    first = save(comfy, prompts)
    assert first.startswith("16 sample(s)") and "(16 in all)" in first
    again = save(comfy, prompts)
    assert ssae.count_samples(comfy.root / "portraits") == 16
    assert again.startswith("0 sample(s)") and "16 skipped: the set already holds them" in again
    grown = save(comfy, more)  # 8 new prompts with the 16 saved ones
    assert ssae.count_samples(comfy.root / "portraits") == 24
    assert grown.startswith("8 sample(s)") and "16 skipped" in grown and "(24 in all)" in grown
    data = ssae.load_features(comfy.root / "portraits")
    assert sorted(data.prompts) == sorted(p.prompt for p in more), "every prompt once"
    replaced = save(comfy, prompts, if_exists="replace")
    assert "(16 in all)" in replaced and "skipped" not in replaced


def test_training_again_after_capturing_more_starts_a_fresh_run(comfy):
    prompts, _ = prompt_set(VOCAB, 24, seed=0, heldout=[("A blond girl", "on a boat")])
    save(comfy, prompts[:18])
    model, _ = train_node(comfy).args
    save(comfy, prompts)  # the set changed: 6 more samples
    out = train_node(comfy)
    assert "trained default on 24 samples" in out.ui and "resumed" not in out.ui
    assert "a new run: the set or the settings changed" in out.ui
    assert out.args[0].info["training"]["n_train"] > model.info["training"]["n_train"]
    checkpoints = sorted(p.name for p in (comfy.root / "portraits").glob(".checkpoint-*"))
    assert len(checkpoints) == 2, "the first run's checkpoint is kept beside the new one"


def test_an_unchanged_set_resumes_after_cancel(comfy):
    prompts, _ = prompt_set(VOCAB, 24, seed=0, heldout=[("A blond girl", "on a boat")])
    save(comfy, prompts)
    comfy.interrupt_after = 4
    with pytest.raises(Interrupted):
        train_node(comfy, epochs=3)
    comfy.interrupt_after = None
    out = train_node(comfy, epochs=3)
    assert "(resumed after epoch 4)" in out.ui
    uninterrupted = train(ssae.load_features(comfy.root / "portraits"),
                          with_overrides(PRESETS["default"], epochs=3, seed=0, device="cpu"))
    assert out.args[0].info["history"][:4] == uninterrupted.history[:4], "the cancelled run's epochs are kept"


def test_a_capture_of_the_same_size_in_another_token_layout_is_not_appended(tmp_path):
    folder = tmp_path / "set"
    x = torch.randn(2, 12, generator=torch.Generator().manual_seed(2))
    ssae.append_features(folder, x, VOCAB, [["blond"]] * 2, prompts=["a", "b"],
                         feature_shape={"clip": [2, 3], "t5": [2, 3]})
    with pytest.raises(ssae.FeatureFileError, match="another token layout"):
        ssae.append_features(folder, x, VOCAB, [["blond"]] * 2, prompts=["c", "d"],
                             feature_shape={"clip": [4, 3], "t5": [0, 3]})
    ssae.append_features(folder, x + 1, VOCAB, [["blond"]] * 2, prompts=["c", "d"],
                         feature_shape={"clip": [2, 3], "t5": [2, 3]})
    assert len(ssae.load_features(folder)) == 4
    doc = json.loads((folder / "manifest.json").read_text())
    del doc["feature_shape"]  # a manifest of before the check: its shards are compared when the set is read
    (folder / "manifest.json").write_text(json.dumps(doc))
    ssae.append_features(folder, x + 2, VOCAB, [["blond"]] * 2, prompts=["e", "f"],
                         feature_shape={"clip": [4, 3], "t5": [0, 3]})
    with pytest.raises(ssae.FeatureFileError, match="disagrees with shard-00000.safetensors on site, size, feature"):
        ssae.load_features(folder)
