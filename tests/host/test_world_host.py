"""The concept world through a real ComfyUI: its own CLIPLoader/CLIPTextEncode, UNETLoader, KSampler and taesd3
VAEDecode on the built world, against this package's encoder and sampler."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ssae.world.comfy_client import ComfyClient
from ssae.world.pipeline import LocalWorld
from ssae.world.probe import comfy_latent, latent_parity, sample_cases, score, seen_cases
from ssae.world.taesd import thumbnail_latent
from ssae.world.text import TextEncoder, comfy_conditioning

ENCODE = Path(__file__).with_name("comfy_clip_encode.py")
PROMPTS = ["a circle, red, on black, top left", "", "a cross, blue, on grey, bottom right"]


@pytest.fixture(scope="module")
def world(comfy):
    if comfy.world is None:
        pytest.skip("the world tests need the `world` extra (diffusers, transformers, instant-clip-tokenizer)")
    return comfy.world


def test_clip_text_encode_equals_the_packages_encoder(comfy, world, tmp_path):
    """ComfyUI's CLIPLoader(sd3) + CLIPTextEncode nodes, run by ComfyUI's interpreter, give the conditioning that
    ssae.world.text computes (the diffusion model trains on the latter)."""
    out = tmp_path / "comfy_cond.safetensors"
    stubs = os.environ.get("COMFYUI_STUBS", "")  # as the host server gets them (conftest)
    path = [p for p in (*stubs.split(os.pathsep), os.environ["COMFYUI_PATH"]) if Path(p).is_dir()]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    subprocess.run([python, str(ENCODE), str(world.path("text_encoder").parent), world.comfy_names["clip_name"],
                    str(out), *PROMPTS], cwd=os.environ["COMFYUI_PATH"], env=env, check=True, capture_output=True)
    got = load_file(str(out))
    cond, pooled = comfy_conditioning(*TextEncoder.load(world.path("text_encoder")).encode(PROMPTS))
    for i in range(len(PROMPTS)):
        assert got[f"cond_{i}"].shape == (1, 77, 4096) and got[f"pooled_{i}"].shape == (1, 2048)
        torch.testing.assert_close(got[f"cond_{i}"][0], cond[i], atol=1e-4, rtol=0)
        torch.testing.assert_close(got[f"pooled_{i}"][0], pooled[i], atol=1e-4, rtol=0)


def test_world_samples_through_comfyui_as_the_package_samples_it(comfy, world):
    client = ComfyClient(comfy.url)
    cases = seen_cases(world.world, 3)
    results = sample_cases(client, world, cases, "world_host", save_latent=True)
    for r in results:
        assert r["image"].shape == (64, 64, 3) and r["image"].dtype == np.uint8
    assert latent_parity(world, cases, [r["latent"] for r in results]) < 1e-4
    local = LocalWorld(world)
    decoded = local.decode(torch.cat([r["latent"] for r in results]))
    assert np.abs(decoded.astype(int) - np.stack([r["image"] for r in results]).astype(int)).max() <= 1
    assert score([r["image"] for r in results], cases)["n"] == 3


def test_vae_encode_is_the_thumbnail_encoder(comfy, world):
    """ComfyUI's VAEEncode with the taesd3 choice computes the world's latent: a red square composited on grey by
    ComfyUI's own image nodes, encoded and decoded there, and its latent equal to thumbnail_latent here."""
    red, grey = 0xE61F1A, 0x808080
    g = {
        "bg": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": grey}},
        "fg": {"class_type": "EmptyImage", "inputs": {"width": 20, "height": 20, "batch_size": 1, "color": red}},
        "img": {"class_type": "ImageCompositeMasked",
                "inputs": {"destination": ["bg", 0], "source": ["fg", 0], "x": 8, "y": 36, "resize_source": False}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "taesd3"}},
        "enc": {"class_type": "VAEEncode", "inputs": {"pixels": ["img", 0], "vae": ["vae", 0]}},
        "save_latent": {"class_type": "SaveLatent", "inputs": {"samples": ["enc", 0], "filename_prefix": "world_vae"}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["enc", 0], "vae": ["vae", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["dec", 0], "filename_prefix": "world_vae"}},
    }
    client = ComfyClient(comfy.url)
    entry = client.run(g)
    latent = comfy_latent(client, entry)
    image = torch.full((1, 3, 64, 64), 128 / 255)
    image[:, :, 36:56, 8:28] = torch.tensor([0xE6, 0x1F, 0x1A]).view(1, 3, 1, 1) / 255
    expected = thumbnail_latent(image, torch.tensor(world.thumbnail_mean), torch.tensor(world.thumbnail_std))
    torch.testing.assert_close(latent, expected, atol=1e-4, rtol=0)
    (decoded,) = client.images(entry, node="save")
    assert decoded.shape == (64, 64, 3)
