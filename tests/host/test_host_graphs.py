"""The graphs a user runs, end to end through /prompt on a real ComfyUI with tiny random SD3 models."""
from __future__ import annotations

import pytest
import torch
from graphs import COMBOS, MODELS, VOCAB, capture_graph, compose_graph

import ssae
from ssae.world.graphs import train_graph

NODE_IDS = ["SSAELoader", "SSAESave", "SSAEConceptVector", "SSAEApplyConditioning", "SSAEPatchModel",
            "SSAEPromptSet", "SSAECaptureConditioning", "SSAECaptureFeatures", "SSAESaveFeatures", "SSAETrain"]


def test_every_node_is_registered_and_every_input_explained(comfy):
    info = comfy.get("/object_info")
    assert [n for n in NODE_IDS if n not in info] == []
    assert all(info[n]["category"] == "SSAE" and info[n]["description"] for n in NODE_IDS)
    untold = [(n, k) for n in NODE_IDS for kind in ("required", "optional")
              for k, spec in info[n]["input"].get(kind, {}).items() if not (spec[1:] or [{}])[0].get("tooltip")]
    assert untold == [], "inputs without a tooltip"


def test_concepts_route_reads_metadata_and_refuses_escapes(comfy, ssae_files):
    status, body = comfy.get_status("/ssae/concepts?name=cond.safetensors")
    assert status == 200 and body["categories"] == VOCAB.categories and body["site"] == "conditioning"
    assert comfy.get_status("/ssae/concepts?name=nope.safetensors")[0] == 404
    assert comfy.get_status("/ssae/concepts?name=../../extra_model_paths.yaml")[0] == 400
    (ssae_files / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    status, body = comfy.get_status("/ssae/concepts?name=broken.safetensors")
    assert status == 422 and "damaged" in body["error"]


@pytest.mark.parametrize("model", MODELS)
def test_conditioning_compose_and_edit(comfy, ssae_files, model):
    tag = model.split(".")[0]
    mix = {"blond": 1.0, "baseball cap": 1.0}
    comfy.run(compose_graph(model, f"cond/{tag}_compose", mix))
    base = comfy.latent(f"cond/{tag}_compose")
    swap = {"add": {"hat": 1}, "remove": {"cap": 1}}
    comfy.run(compose_graph(model, f"cond/{tag}_edit0", mix, edit={"concepts": swap, "strength": 0.0}))
    assert torch.equal(comfy.latent(f"cond/{tag}_edit0"), base), "strength 0 must leave the conditioning as it was"
    comfy.run(compose_graph(model, f"cond/{tag}_edit1", mix, edit={"concepts": swap, "strength": 1.0}))
    assert not torch.allclose(comfy.latent(f"cond/{tag}_edit1"), base, atol=1e-4)
    comfy.run(compose_graph(model, f"cond/{tag}_other", {"brunette": 1.0, "hat": 1.0}))
    assert not torch.allclose(comfy.latent(f"cond/{tag}_other"), base, atol=1e-4), "another mix, another image"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("file", ["block_img.safetensors", "block_txt.safetensors"])
def test_block_patch_strength_window_and_untouched_input(comfy, ssae_files, model, file):
    tag = f"{model.split('.')[0]}_{file.split('.')[0]}"
    mix = {"blond": 1.0, "hat": 1.0}
    swap = {"add": {"brunette": 1}, "remove": {"blond": 1}}
    comfy.run(compose_graph(model, f"blk/{tag}_base", mix))
    base = comfy.latent(f"blk/{tag}_base")
    comfy.run(compose_graph(model, f"blk/{tag}_s0", mix, patch={"file": file, "concepts": swap, "strength": 0.0}))
    assert torch.equal(comfy.latent(f"blk/{tag}_s0"), base)
    comfy.run(compose_graph(model, f"blk/{tag}_full", mix, patch={"file": file, "concepts": swap, "strength": 3.0},
                            extra_sampler_on_input_model=f"blk/{tag}_input"))
    full = comfy.latent(f"blk/{tag}_full")
    assert not torch.equal(full, base), "the patch changes the sample"
    assert torch.equal(comfy.latent(f"blk/{tag}_input"), base), "the input model is untouched by the patch"
    comfy.run(compose_graph(model, f"blk/{tag}_late", mix, patch={"file": file, "concepts": swap, "strength": 3.0,
                                                                  "start": 0.5, "end": 1.0}))
    late = comfy.latent(f"blk/{tag}_late")
    assert not torch.equal(late, base) and not torch.equal(late, full), \
        "a window over half the schedule edits those steps only"


@pytest.mark.parametrize("model", MODELS)
def test_default_block_patch_is_the_carried_key_value_edit(comfy, ssae_files, model):
    """SSAE Patch Model's default on a text-stream SSAE edits the attention keys and values of the blocks that read
    it: strength 0 is the unpatched sample, and the result is neither the residual edit nor the one-block edit."""
    tag = f"{model.split('.')[0]}_kv"
    mix = {"blond": 1.0, "hat": 1.0}
    swap = {"add": {"brunette": 1}, "remove": {"blond": 1}}
    txt_in = {"file": "block_txt.safetensors", "concepts": swap, "site": "joint_blocks.0.txt_in"}
    comfy.run(compose_graph(model, f"kv/{tag}_base", mix))
    base = comfy.latent(f"kv/{tag}_base")
    comfy.run(compose_graph(model, f"kv/{tag}_s0", mix, patch={**txt_in, "strength": 0.0}))
    assert torch.equal(comfy.latent(f"kv/{tag}_s0"), base)
    results = {}
    for name, extra in {"default": {}, "residual": {"mode": "residual stream", "blocks": "this site"},
                        "one": {"blocks": "this site"}}.items():
        comfy.run(compose_graph(model, f"kv/{tag}_{name}", mix, patch={**txt_in, "strength": 3.0, **extra}))
        results[name] = comfy.latent(f"kv/{tag}_{name}")
        assert not torch.allclose(results[name], base, atol=1e-4), name
    # in a 2-block model the carried key/value edit is close to the residual one, and the last block's key/value
    # edit moves a random model's sample by little (the unit tests check both exactly): they must differ at all
    assert not torch.equal(results["default"], results["residual"])
    assert not torch.equal(results["default"], results["one"])
    comfy.run(compose_graph(model, f"kv/{tag}_residual_default", mix, patch={**txt_in, "strength": 3.0,
                                                                              "mode": "residual stream"}))
    assert torch.equal(comfy.latent(f"kv/{tag}_residual_default"), results["residual"]), \
        "blocks applies to key/value edits only: a residual edit is added once"


def test_wrong_model_for_the_ssae_is_a_clear_node_error(comfy, ssae_files):
    bad = compose_graph(MODELS[0], "err/x", {"blond": 1.0},
                        patch={"concepts": {"add": {"hat": 1}}, "strength": 1.0, "site": "joint_blocks.1.txt"})
    with pytest.raises(RuntimeError, match="pre_only"):
        comfy.run(bad)
    bad = compose_graph(MODELS[0], "err/y", {"blond": 1.0},
                        patch={"concepts": {"add": {"hat": 1}}, "strength": 1.0, "site": "joint_blocks.5.img"})
    with pytest.raises(RuntimeError, match="0..1"):
        comfy.run(bad)


@pytest.mark.parametrize("model", MODELS[:1])
def test_capture_save_train_load_patch_sample(comfy, ssae_files, model):
    """The research loop inside ComfyUI: capture a block over several prompts, train, reload, steer."""
    name = "captured_img"
    for i, combo in enumerate(COMBOS):
        comfy.run(capture_graph(model, name, combo, seed=i, split="test" if i % 4 == 3 else "train"))
    data = ssae.load_features(comfy.feature_folder(name))
    assert len(data) == len(COMBOS) and data.site == "joint_blocks.0.img" and data.n_features == 128
    assert data.labels == [[VOCAB.resolve(c) for c in combo] for combo in COMBOS]

    comfy.run(train_graph(name, "additive", "trained_in_comfy"))
    trained = ssae.SSAE.load(ssae_files / "trained_in_comfy.safetensors")
    assert trained.site == "joint_blocks.0.img" and trained.vocabulary.categories == VOCAB.categories

    mix = {"blond": 1.0, "hat": 1.0}
    comfy.run(compose_graph(model, "loop/base", mix))
    swap = {"add": {"brunette": 1}, "remove": {"blond": 1}}
    comfy.run(compose_graph(model, "loop/patched", mix,
                            patch={"file": "trained_in_comfy.safetensors", "strength": 5.0, "concepts": swap}))
    assert not torch.allclose(comfy.latent("loop/patched"), comfy.latent("loop/base"), atol=1e-4)


def test_example_workflows_are_templates_of_known_nodes(comfy):
    """Every example workflow is listed as a template, and its nodes and links fit the host's schemas."""
    from pathlib import Path
    folder = Path(__file__).resolve().parents[2] / "example_workflows"
    names = sorted(p.stem for p in folder.glob("*.json"))
    assert names and sorted(comfy.get("/workflow_templates")["ComfyUI-SSAE"]) == names
    info = comfy.get("/object_info")
    for name in names:
        wf = comfy.get(f"/api/workflow_templates/ComfyUI-SSAE/{name}.json")
        nodes = {n["id"]: n for n in wf["nodes"]}
        assert all(n["type"] in info for n in nodes.values()), name
        for _, src, src_slot, dst, dst_slot, typ in wf["links"]:
            assert info[nodes[src]["type"]]["output"][src_slot] == typ, (name, src, typ)
            assert nodes[dst]["inputs"][dst_slot]["type"] == typ, (name, dst, typ)
