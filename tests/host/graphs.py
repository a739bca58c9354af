"""API-format graphs and synthetic SSAE files shared by the host tests (no ComfyUI import: plain data)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

import ssae
import ssae.shapes
from ssae.train import PRESETS

VOCAB = ssae.Vocabulary({"hair": ["A blond girl", "A brunette girl"], "hat": ["and a hat", "and a baseball cap"],
                         "pose": ["looking to the left", "looking to the right"]})
COMBOS = [list(c) for c in VOCAB.all_combinations()]
MODELS = ["tiny_sd3.safetensors", "tiny_sd35m.safetensors"]  # SD3 and SD3.5-medium (MMDiT-X) layouts
TE_MODEL = "tiny_sd3_te.safetensors"  # an SD3 MMDiT for real text-encoder conditioning (4096 wide, pooled 2048)
CLIP_L = "tiny_clip_l.safetensors"


def synthetic_ssae(path: Path, site: str, feature_shape) -> None:
    """An additive SSAE on random per-concept vectors, for a site of the tiny model."""
    g = torch.Generator().manual_seed(0)
    n = ssae.shapes.n_features_of(feature_shape)
    vectors = torch.randn(VOCAB.n_concepts, n, generator=g)
    x = VOCAB.mask(COMBOS) @ vectors + 0.01 * torch.randn(len(COMBOS), n, generator=g)
    data_path = path.with_suffix(".features.safetensors")
    ssae.save_features(data_path, x, VOCAB, COMBOS, site=site, feature_shape=feature_shape)
    ssae.train(ssae.load_features(data_path), PRESETS["additive"]).ssae.save(path)


def compose_graph(model: str, prefix: str, concepts: dict, edit: dict | None = None, patch: dict | None = None,
                  seed: int = 7, extra_sampler_on_input_model: str | None = None, steps: int = 4,
                  cond_ssae: str = "cond.safetensors") -> dict:
    """Compose a conditioning from concepts (no text encoder needed), optionally edit it or patch the model."""
    g = {
        "model": {"class_type": "UNETLoader", "inputs": {"unet_name": model, "weight_dtype": "default"}},
        "cond_ssae": {"class_type": "SSAELoader", "inputs": {"ssae_name": cond_ssae}},
        "mix": {"class_type": "SSAEConceptVector",
                "inputs": {"ssae": ["cond_ssae", 0], "mode": "compose", "concepts": json.dumps({"add": concepts})}},
        "pos": {"class_type": "SSAEApplyConditioning", "inputs": {"concepts": ["mix", 0], "strength": 1.0}},
        "neg": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["pos", 0]}},
        "latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }
    positive, sampler_model = ["pos", 0], ["model", 0]
    if edit is not None:
        g["swap"] = {"class_type": "SSAEConceptVector",
                     "inputs": {"ssae": ["cond_ssae", 0], "mode": "edit", "concepts": json.dumps(edit["concepts"])}}
        g["edited"] = {"class_type": "SSAEApplyConditioning",
                       "inputs": {"concepts": ["swap", 0], "strength": edit["strength"], "conditioning": ["pos", 0]}}
        positive = ["edited", 0]
    if patch is not None:
        g["block_ssae"] = {"class_type": "SSAELoader",
                           "inputs": {"ssae_name": patch.get("file", "block_img.safetensors")}}
        g["block_edit"] = {"class_type": "SSAEConceptVector", "inputs": {
            "ssae": ["block_ssae", 0], "mode": "edit", "concepts": json.dumps(patch["concepts"])}}
        g["patched"] = {"class_type": "SSAEPatchModel",
                        "inputs": {"model": ["model", 0], "concepts": ["block_edit", 0], "strength": patch["strength"],
                                   "start_percent": patch.get("start", 0.0), "end_percent": patch.get("end", 1.0),
                                   "apply_to": patch.get("apply_to", "positive"), "site": patch.get("site", ""),
                                   **{k: patch[k] for k in ("mode", "blocks", "scale") if k in patch}}}
        sampler_model = ["patched", 0]
    sampler = {"seed": seed, "steps": steps, "cfg": 2.0, "sampler_name": "euler", "scheduler": "simple",
               "denoise": 1.0, "positive": positive, "negative": ["neg", 0], "latent_image": ["latent", 0]}
    g["sample"] = {"class_type": "KSampler", "inputs": {"model": sampler_model, **sampler}}
    g["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": prefix}}
    if extra_sampler_on_input_model:
        g["sample_input"] = {"class_type": "KSampler", "inputs": {"model": ["model", 0], **sampler}}
        g["save_input"] = {"class_type": "SaveLatent",
                           "inputs": {"samples": ["sample_input", 0], "filename_prefix": extra_sampler_on_input_model}}
    return g


def capture_graph(model: str, name: str, combo: list[str], seed: int, split: str = "train", steps: int = 4,
                  site: str = "joint_blocks.0.img") -> dict:
    """compose_graph for `combo`, sampled through SSAECaptureFeatures on `site`; SSAESaveFeatures appends the
    captured row, labelled with `combo`, to the feature set `name` (its latent goes to cap/<name>/<seed>)."""
    g = compose_graph(model, f"cap/{name}/{seed}", {c: 1.0 for c in combo}, seed=seed, steps=steps)
    g["capture"] = {"class_type": "SSAECaptureFeatures",
                    "inputs": {"model": ["model", 0], "site": site, "labels": ", ".join(combo),
                               "vocabulary": VOCAB.to_json(), "start_percent": 0.0, "end_percent": 1.0,
                               "steps": "mean", "tokens": "auto"}}
    g["sample"]["inputs"]["model"] = ["capture", 0]
    g["store"] = {"class_type": "SSAESaveFeatures",
                  "inputs": {"features": ["capture", 1], "samples": ["sample", 0], "name": name, "split": split}}
    return g


def prompt_set_inputs(n: int, vocabulary: str = "", seed: int = 0, heldout_pairs: int = 4) -> dict:
    return {"vocabulary": vocabulary, "prompts": n, "seed": seed, "heldout_pairs": heldout_pairs, "heldout": ""}


def build_training_set_graph(name: str, n: int, t5: bool = False, **prompt_set) -> dict:
    """The paper's loop, first stage, in one queue press: SSAE Prompt Set -> CLIP Text Encode (a CLIP-L loaded
    as SD3's; with t5, 77 stand-in T5 rows appended) -> SSAE Capture Conditioning -> SSAE Save Features."""
    g = {
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": CLIP_L, "type": "sd3", "device": "default"}},
        "prompts": {"class_type": "SSAEPromptSet", "inputs": prompt_set_inputs(n, **prompt_set)},
        "encode": {"class_type": "CLIPTextEncode", "inputs": {"text": ["prompts", 0], "clip": ["clip", 0]}},
        "capture": {"class_type": "SSAECaptureConditioning",
                    "inputs": {"conditioning": ["encode", 0], "sample": ["prompts", 1]}},
        "store": {"class_type": "SSAESaveFeatures", "inputs": {"features": ["capture", 0], "name": name,
                                                                "split": "auto", "if_exists": "replace"}},
    }
    if t5:
        g["t5"] = {"class_type": "SSAETestAppendT5Rows", "inputs": {"conditioning": ["encode", 0]}}
        g["capture"]["inputs"]["conditioning"] = ["t5", 0]
    return g


def block_capture_list_graph(name: str, n: int, site: str = "joint_blocks.0.img", **prompt_set) -> dict:
    """Block capture over a whole prompt set in one press, with ModelSamplingSD3 cloning the model between the
    capture and the sampler (as most SD3.5 workflows have it)."""
    return {
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": CLIP_L, "type": "sd3", "device": "default"}},
        "prompts": {"class_type": "SSAEPromptSet", "inputs": prompt_set_inputs(n, **prompt_set)},
        "encode": {"class_type": "CLIPTextEncode", "inputs": {"text": ["prompts", 0], "clip": ["clip", 0]}},
        "neg": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["encode", 0]}},
        "model": {"class_type": "UNETLoader", "inputs": {"unet_name": TE_MODEL, "weight_dtype": "default"}},
        "capture": {"class_type": "SSAECaptureFeatures",
                    "inputs": {"model": ["model", 0], "site": site, "labels": "", "vocabulary": "",
                               "start_percent": 0.0, "end_percent": 1.0, "steps": "mean", "tokens": "auto",
                               "sample": ["prompts", 1]}},
        "shift": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["capture", 0], "shift": 3.0}},
        "latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {"model": ["shift", 0], "seed": 3, "steps": 3, "cfg": 2.0,
                                                        "sampler_name": "euler", "scheduler": "simple",
                                                        "denoise": 1.0, "positive": ["encode", 0],
                                                        "negative": ["neg", 0], "latent_image": ["latent", 0]}},
        "store": {"class_type": "SSAESaveFeatures", "inputs": {"features": ["capture", 1], "samples": ["sample", 0],
                                                                "name": name, "split": "auto", "if_exists": "replace"}},
    }
