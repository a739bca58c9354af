"""Issue 19, bugs 1 and 2, on a real ComfyUI: block captures and text-stream patches when ComfyUI runs the positive
and negative prompts as separate model calls: on low memory (the test node SSAETestPasses makes the samplers see 0
bytes free) and for a prompt over 75 CLIP tokens beside a short negative, which SD3's conditioning never batches.
SSAETestPasses also logs every model call's CFG chunks, which proves the split."""
from __future__ import annotations

import json

import pytest
import torch
from graphs import CLIP_L, TE_MODEL, VOCAB, synthetic_ssae

import ssae

SHORT = "A blond girl and a hat looking to the left"
LONG = SHORT + ", " + ", ".join(["in a quiet garden full of red flowers under a bright summer sky"] * 6)  # 2 chunks


def graph(name: str, site: str, prompt: str = SHORT, negative: str | None = None, low_memory: bool = False,
          t5: bool = False, patch: dict | None = None) -> dict:
    """CLIP Text Encode (and stand-in T5 rows, as many as CLIP rows) -> [SSAE Patch Model, residual ->] SSAE Capture
    Features (every step) -> SSAETestPasses -> KSampler -> SSAE Save Features. The negative is the zeroed prompt, or
    a text."""
    g = {
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": CLIP_L, "type": "sd3", "device": "default"}},
        "encode": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["clip", 0]}},
        "model": {"class_type": "UNETLoader", "inputs": {"unet_name": TE_MODEL, "weight_dtype": "default"}},
        "capture": {"class_type": "SSAECaptureFeatures",
                    "inputs": {"model": ["model", 0], "site": site, "labels": "blond, hat, left",
                               "vocabulary": VOCAB.to_json(), "start_percent": 0.0, "end_percent": 1.0,
                               "steps": "each", "tokens": "auto"}},
        "passes": {"class_type": "SSAETestPasses",
                   "inputs": {"model": ["capture", 0], "log": f"{name}.jsonl", "low_memory": low_memory}},
        "latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {"model": ["passes", 0], "seed": 3, "steps": 3, "cfg": 2.0,
                                                        "sampler_name": "euler", "scheduler": "simple",
                                                        "denoise": 1.0, "positive": ["encode", 0],
                                                        "negative": ["neg", 0], "latent_image": ["latent", 0]}},
        "store": {"class_type": "SSAESaveFeatures", "inputs": {"features": ["capture", 1], "samples": ["sample", 0],
                                                                "name": name, "split": "train",
                                                                "if_exists": "replace"}},
    }
    positive = ["encode", 0]
    if negative is None:
        g["neg"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["encode", 0]}}
    else:
        g["neg"] = {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["clip", 0]}}
    if t5:
        g["t5"] = {"class_type": "SSAETestAppendT5Rows", "inputs": {"conditioning": ["encode", 0]}}
        g["t5_neg"] = {"class_type": "SSAETestAppendT5Rows", "inputs": {"conditioning": ["neg", 0]}}
        positive = ["t5", 0]
        g["sample"]["inputs"]["negative"] = ["t5_neg", 0]
    g["sample"]["inputs"]["positive"] = positive
    if patch is not None:
        g["block_ssae"] = {"class_type": "SSAELoader", "inputs": {"ssae_name": patch["file"]}}
        g["block_edit"] = {"class_type": "SSAEConceptVector", "inputs": {
            "ssae": ["block_ssae", 0], "mode": "edit", "concepts": json.dumps(patch["concepts"])}}
        g["patched"] = {"class_type": "SSAEPatchModel",
                        "inputs": {"model": ["model", 0], "concepts": ["block_edit", 0], "strength": patch["strength"],
                                   "start_percent": 0.0, "end_percent": 1.0, "apply_to": "positive", "site": "",
                                   "mode": "residual stream", "blocks": "this site"}}
        g["capture"]["inputs"]["model"] = ["patched", 0]
    return g


def run(comfy, name: str, site: str, **kw) -> tuple[ssae.FeatureSet, list[dict]]:
    """The graph's saved capture, and the model calls it made (each with its CFG chunks)."""
    comfy.run(graph(name, site, **kw))
    log = comfy.base / "output" / f"{name}.jsonl"
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    log.unlink()
    return ssae.load_features(comfy.feature_folder(name)), calls


@pytest.mark.parametrize("site", ["joint_blocks.0.img", "joint_blocks.0.txt"])
def test_low_memory_split_passes_capture_what_batched_passes_do(comfy, site):
    tag = site.split(".")[-1]
    batched, calls = run(comfy, f"passes_batched_{tag}", site)
    assert [c["cond_or_uncond"] for c in calls] == [[1, 0]] * 3, "enough memory: one batched call per step"
    split, calls = run(comfy, f"passes_split_{tag}", site, low_memory=True)
    assert sorted(str(c["cond_or_uncond"]) for c in calls) == ["[0]"] * 3 + ["[1]"] * 3, "no memory: split calls"
    assert split.feature_shape == batched.feature_shape == ([128] if tag == "img" else
                                                            {"clip": [77, 128], "vec": [128]})
    assert len(split) == len(batched) == 3, "one row per step"
    torch.testing.assert_close(split.load(), batched.load(), rtol=1e-4, atol=1e-5)


def test_a_long_prompt_beside_a_short_negative_is_captured_whole(comfy):
    """Two CLIP chunks (154 rows) and 154 stand-in T5 rows beside an empty prompt's 77 + 77: never batched by SD3's
    conditioning; the capture is the prompt's 308 rows with their layout."""
    data, calls = run(comfy, "passes_long", "joint_blocks.0.txt", prompt=LONG, negative="", t5=True)
    assert sorted((str(c["cond_or_uncond"]), c["context_rows"]) for c in calls) == \
        [("[0]", 308)] * 3 + [("[1]", 154)] * 3, "split by length"
    assert data.feature_shape == {"clip": [154, 128], "t5": [154, 128], "vec": [128]} and len(data) == 3


def test_a_long_prompt_patched_at_a_txt_block_gets_the_edit_on_its_clip_and_t5_rows(comfy):
    """An SSAE of 77 CLIP + 77 T5 text-stream rows patched at joint_blocks.0.txt, sampled with a 154 CLIP + 154 T5
    prompt: the capture above the patch sees its first step moved by the edit's CLIP part on the first CLIP chunk
    and its T5 part on the first T5 rows, the second CLIP chunk and the T5 rows beyond the SSAE's untouched."""
    shape = {"clip": [77, 128], "t5": [77, 128]}
    synthetic_ssae(comfy.base / "models" / "ssae" / "txt_77_77.safetensors", "joint_blocks.0.txt", shape)
    swap = {"add": {"brunette": 1}, "remove": {"blond": 1}}
    kw = {"prompt": LONG, "negative": "", "t5": True}
    plain, _ = run(comfy, "long_plain", "joint_blocks.0.txt", **kw)
    patch = {"file": "txt_77_77.safetensors", "concepts": swap, "strength": 1.0}
    edited, calls = run(comfy, "long_patched", "joint_blocks.0.txt", patch=patch, **kw)
    assert {len(c["cond_or_uncond"]) for c in calls} == {1}, "split passes"
    model = ssae.SSAE.load(comfy.base / "models" / "ssae" / "txt_77_77.safetensors")
    delta = model.delta(add=["A brunette girl"], remove=["A blond girl"]).reshape(154, 128)
    want = torch.cat([delta[:77], torch.zeros(77, 128), delta[77:], torch.zeros(77, 128)])
    moved = edited.load()[0] - plain.load()[0]
    torch.testing.assert_close(moved[:308 * 128].reshape(308, 128), want, rtol=0, atol=1e-4)
    assert moved[308 * 128:].abs().max() < 1e-5, "an SSAE without a modulation-vector part leaves vec as it was"
