"""ComfyUI API-format graphs that sample the built world with ComfyUI's own loaders and SD3 path (plain data)."""
from __future__ import annotations

from .recipe import SamplingDefaults
from .scene import IMAGE_SIZE


def text_to_image_graph(names: dict[str, str], prompt: str, seed: int, sampling: SamplingDefaults,
                        prefix: str = "world/sample", negative: str = "", save_latent: bool = False) -> dict:
    """UNETLoader + CLIPLoader(sd3) -> CLIPTextEncode (prompt, negative) -> EmptySD3LatentImage -> KSampler ->
    VAELoader(taesd3) -> VAEDecode -> SaveImage (and SaveLatent); `names` as `BuiltWorld.comfy_names`."""
    g = {
        "model": {"class_type": "UNETLoader", "inputs": {"unet_name": names["unet_name"], "weight_dtype": "default"}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": names["clip_name"], "type": "sd3"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": names["vae_name"]}},
        "positive": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["clip", 0]}},
        "negative": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["clip", 0]}},
        "latent": {"class_type": "EmptySD3LatentImage",
                   "inputs": {"width": IMAGE_SIZE, "height": IMAGE_SIZE, "batch_size": 1}},
        "sample": {"class_type": "KSampler",
                   "inputs": {"model": ["model", 0], "seed": seed, "steps": sampling.steps, "cfg": sampling.cfg,
                              "sampler_name": sampling.sampler, "scheduler": sampling.scheduler, "denoise": 1.0,
                              "positive": ["positive", 0], "negative": ["negative", 0],
                              "latent_image": ["latent", 0]}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["vae", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}},
    }
    if save_latent:
        g["save_latent"] = {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": prefix}}
    return g
