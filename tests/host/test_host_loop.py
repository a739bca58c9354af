"""The paper's loop inside ComfyUI, one queue press per stage: prompt set -> text encoder -> capture (the
conditioning, or a joint block while sampling) -> feature set -> train -> compose and edit -> sample. The text
encoder is a random CLIP-L that ComfyUI's own CLIPLoader (type sd3) and CLIPTextEncode run."""
from __future__ import annotations

import json

import pytest
import torch
from graphs import TE_MODEL, VOCAB, block_capture_list_graph, build_training_set_graph, compose_graph

import ssae
from ssae.promptset import prompt_set
from ssae.world.graphs import train_graph

PORTRAITS = ssae.Vocabulary.portraits()
LOOP_VOCAB = ssae.Vocabulary({"hair": ["A blond girl", "A brunette girl", "A redhead girl"],
                              "place": ["at a market", "at the beach", "on a boat"],
                              "hat": ["and a hat", "and a baseball cap"],
                              "pose": ["looking to the left", "looking to the right"]})  # 36 combinations


def assert_labelled_like_the_prompt_set(data: ssae.FeatureSet, vocabulary: ssae.Vocabulary, n: int, **kw) -> None:
    """Every sample carries the concepts its prompt was made of, and only held-out pairs are in 'test'."""
    samples, pairs = prompt_set(vocabulary, n, **kw)
    assert len(data) == n and data.prompts == [s.prompt for s in samples]
    assert data.labels == [list(s.concepts) for s in samples]
    assert data.labels == [vocabulary.parse_prompt(p) for p in data.prompts], "labels are the prompts' concepts"
    for labels, split in zip(data.labels, data.split):
        assert (split == "test") == any(set(p) <= set(labels) for p in pairs)
    assert {"train", "test"} <= set(data.split)


def test_one_press_builds_a_conditioning_set_of_the_portraits(comfy):
    """build_training_set with the default vocabulary and 200 prompts: 200 samples in ComfyUI's CLIP layout,
    labelled, split on the held-out pairs; queueing it again rewrites the set instead of doubling it."""
    for _ in range(2):
        comfy.run(build_training_set_graph("portraits_cond", 200), timeout=600)
        data = ssae.load_features(comfy.feature_folder("portraits_cond"))
        assert data.site == "conditioning" and data.vocabulary == PORTRAITS
        assert data.feature_shape == {"clip": [77, 4096], "pooled_output": [2048]}
        assert_labelled_like_the_prompt_set(data, PORTRAITS, 200, seed=0, heldout=4)
    x = data.load(torch.arange(3))
    tokens = x[:, :77 * 4096].reshape(3, 77, 4096)
    assert tokens[:, :, :768].abs().sum() > 0 and not tokens[:, :, 768:].any(), "CLIP-L rows, zero beyond 768"
    assert not torch.equal(x[0], x[1]), "different prompts, different conditioning"


@pytest.mark.parametrize("t5", [False, True], ids=["clip", "clip+t5"])
def test_train_on_the_set_then_compose_and_edit_a_prompt(comfy, t5):
    """SSAETrain on a captured conditioning set, then compose an unseen mix -> SSAEApplyConditioning -> KSampler,
    and edit a prompt's conditioning with it; with T5 rows (154) the edit also lands on the CLIP rows of a
    CLIP-only prompt (77 rows)."""
    name = f"loop_{'t5' if t5 else 'clip'}"
    comfy.run(build_training_set_graph(name, 36, t5=t5, vocabulary=LOOP_VOCAB.to_json(), heldout_pairs=1),
              timeout=600)
    data = ssae.load_features(comfy.feature_folder(name))
    rows = {"clip": [77, 4096]} | ({"t5": [77, 4096]} if t5 else {})
    assert data.feature_shape == rows | {"pooled_output": [2048]}
    assert_labelled_like_the_prompt_set(data, LOOP_VOCAB, 36, seed=0, heldout=1)
    comfy.run(train_graph(name, "additive", name))
    trained = ssae.SSAE.load(comfy.base / "models" / "ssae" / f"{name}.safetensors")
    assert trained.info["metrics"]["test"]["explained_variance"] > 0.5, "held-out prompts decode from their labels"
    mix = {"blond": 1.0, "boat": 1.0, "baseball cap": 1.0, "left": 1.0}
    comfy.run(compose_graph(TE_MODEL, f"{name}/mix", mix, cond_ssae=f"{name}.safetensors"))
    assert torch.isfinite(comfy.latent(f"{name}/mix")).all()
    prompt = LOOP_VOCAB.prompt(["blond", "beach", "hat", "left"])
    for strength in (0.0, 1.0):
        comfy.run(edit_prompt_graph(prompt, f"{name}.safetensors", strength, f"{name}/edit{strength:g}"))
    comfy.run(edit_prompt_graph(prompt, None, 0.0, f"{name}/prompt"))
    base = comfy.latent(f"{name}/prompt")
    assert torch.equal(comfy.latent(f"{name}/edit0"), base), "strength 0 leaves the prompt's conditioning as it was"
    assert not torch.allclose(comfy.latent(f"{name}/edit1"), base, atol=1e-4)


def test_block_capture_over_a_prompt_list_through_model_sampling_sd3(comfy):
    """One press captures joint block 0 for every prompt of a list, although ModelSamplingSD3 clones the model
    (and its capture hook) between the capture node and the sampler."""
    for site, width in (("joint_blocks.0.img", [128]), ("joint_blocks.0.txt", {"clip": [77, 128], "vec": [128]})):
        name = f"loop_block_{site.split('.')[-1]}"
        comfy.run(block_capture_list_graph(name, 8, site=site, vocabulary=VOCAB.to_json(), heldout_pairs=1))
        data = ssae.load_features(comfy.feature_folder(name))
        assert data.site == site and data.feature_shape == width
        assert_labelled_like_the_prompt_set(data, VOCAB, 8, seed=0, heldout=1)
        x = data.load()
        assert torch.isfinite(x).all() and len({tuple(r.tolist()) for r in x}) == 8, "a row per prompt"


def edit_prompt_graph(prompt: str, ssae_file: str | None, strength: float, prefix: str) -> dict:
    """CLIP Text Encode a prompt, swap blond for brunette in its conditioning (none without an SSAE), sample."""
    g = {
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": "tiny_clip_l.safetensors", "type": "sd3"}},
        "encode": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["clip", 0]}},
        "neg": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["encode", 0]}},
        "model": {"class_type": "UNETLoader", "inputs": {"unet_name": TE_MODEL, "weight_dtype": "default"}},
        "latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {"model": ["model", 0], "seed": 5, "steps": 3, "cfg": 2.0,
                                                        "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0,
                                                        "positive": ["encode", 0], "negative": ["neg", 0],
                                                        "latent_image": ["latent", 0]}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": prefix}},
    }
    if ssae_file:
        g["ssae"] = {"class_type": "SSAELoader", "inputs": {"ssae_name": ssae_file}}
        g["swap"] = {"class_type": "SSAEConceptVector", "inputs": {
            "ssae": ["ssae", 0], "mode": "edit",
            "concepts": json.dumps({"add": {"brunette": 1.0}, "remove": {"blond": 1.0}})}}
        g["edit"] = {"class_type": "SSAEApplyConditioning", "inputs": {
            "concepts": ["swap", 0], "strength": strength, "conditioning": ["encode", 0]}}
        g["sample"]["inputs"]["positive"] = ["edit", 0]
    return g
