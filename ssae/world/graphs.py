"""ComfyUI API-format graphs that sample the built world with ComfyUI's own loaders and SD3 path (plain data)."""
from __future__ import annotations

from .recipe import SamplingDefaults
from .scene import IMAGE_SIZE


def loaders(names: dict[str, str], which: tuple[str, ...] = ("model", "clip", "vae")) -> dict:
    """The world's loaders under the node ids `model`, `clip` and `vae` (those in `which`); `names` as
    `BuiltWorld.comfy_names`."""
    every = {
        "model": {"class_type": "UNETLoader", "inputs": {"unet_name": names["unet_name"], "weight_dtype": "default"}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": names["clip_name"], "type": "sd3"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": names["vae_name"]}},
    }
    return {k: every[k] for k in which}


def canvas(negative: str = "") -> dict:
    """What every sampler of a world graph shares: the negative prompt (id `negative`) and the empty latent
    (id `latent`)."""
    return {
        "negative": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["clip", 0]}},
        "latent": {"class_type": "EmptySD3LatentImage",
                   "inputs": {"width": IMAGE_SIZE, "height": IMAGE_SIZE, "batch_size": 1}},
    }


def ksampler(model: list, positive: list, seed: int, sampling: SamplingDefaults) -> dict:
    """A KSampler node over `canvas()`, with the world's sampling settings."""
    return {"class_type": "KSampler",
            "inputs": {"model": model, "seed": seed, "steps": sampling.steps, "cfg": sampling.cfg,
                       "sampler_name": sampling.sampler, "scheduler": sampling.scheduler, "denoise": 1.0,
                       "positive": positive, "negative": ["negative", 0], "latent_image": ["latent", 0]}}


def text_to_image_graph(names: dict[str, str], prompt: str, seed: int, sampling: SamplingDefaults,
                        prefix: str = "world/sample", negative: str = "", save_latent: bool = False) -> dict:
    """UNETLoader + CLIPLoader(sd3) -> CLIPTextEncode (prompt, negative) -> EmptySD3LatentImage -> KSampler ->
    VAELoader(taesd3) -> VAEDecode -> SaveImage (and SaveLatent); `names` as `BuiltWorld.comfy_names`."""
    g = loaders(names) | {
        "positive": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["clip", 0]}},
    } | canvas(negative) | {
        "sample": ksampler(["model", 0], ["positive", 0], seed, sampling),
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["vae", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}},
    }
    if save_latent:
        g["save_latent"] = {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": prefix}}
    return g


def prompt_set_nodes(vocabulary: str, n: int, heldout: str) -> dict:
    """SSAE Prompt Set (id `prompts`) -> CLIP Text Encode (id `encode`): every prompt of a vocabulary, labelled,
    with the given held-out pairs in 'test'."""
    return {
        "prompts": {"class_type": "SSAEPromptSet", "inputs": {"vocabulary": vocabulary, "prompts": n, "seed": 0,
                                                              "heldout_pairs": 0, "heldout": heldout}},
        "encode": {"class_type": "CLIPTextEncode", "inputs": {"text": ["prompts", 0], "clip": ["clip", 0]}},
    }


def capture_conditioning_graph(names: dict[str, str], vocabulary: str, n: int, heldout: str, name: str) -> dict:
    """One press: every prompt's conditioning, captured by the pack's nodes into the feature set `name`."""
    return loaders(names, ("clip",)) | prompt_set_nodes(vocabulary, n, heldout) | {
        "capture": {"class_type": "SSAECaptureConditioning",
                    "inputs": {"conditioning": ["encode", 0], "sample": ["prompts", 1]}},
        "store": {"class_type": "SSAESaveFeatures", "inputs": {"features": ["capture", 0], "name": name,
                                                                "split": "auto", "if_exists": "replace"}},
    }


def capture_block_graph(names: dict[str, str], vocabulary: str, n: int, heldout: str, name: str, site: str,
                        seed: int, sampling: SamplingDefaults, if_exists: str = "replace") -> dict:
    """One press: every prompt sampled once (at `seed`) through SSAE Capture Features on `site`, saved to `name`."""
    return loaders(names, ("model", "clip")) | prompt_set_nodes(vocabulary, n, heldout) | canvas() | {
        "capture": {"class_type": "SSAECaptureFeatures",
                    "inputs": {"model": ["model", 0], "site": site, "labels": "", "vocabulary": "",
                               "start_percent": 0.0, "end_percent": 1.0, "steps": "mean", "tokens": "auto",
                               "sample": ["prompts", 1]}},
        "sample": ksampler(["capture", 0], ["encode", 0], seed, sampling),
        "store": {"class_type": "SSAESaveFeatures", "inputs": {"features": ["capture", 1], "samples": ["sample", 0],
                                                                "name": name, "split": "auto", "if_exists": if_exists}},
    }


def train_graph(features: str, preset: str, filename: str) -> dict:
    """SSAE Train (the preset's own epochs, seed 0) on a feature set, saved as `filename` in models/ssae, its
    loss curve previewed."""
    return {
        "train": {"class_type": "SSAETrain", "inputs": {"features": features, "preset": preset, "epochs": 0,
                                                        "seed": 0, "device": "auto"}},
        "save": {"class_type": "SSAESave", "inputs": {"ssae": ["train", 0], "filename": filename}},
        "curve": {"class_type": "PreviewImage", "inputs": {"images": ["train", 1]}},
    }
