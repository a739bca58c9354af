"""A concept world with ground truth: SD3-architecture models small enough to train on a CPU, run by ComfyUI.

Scenes of one shape (shape, colour, background, position) are rendered deterministically and read back from
pixels (`measure`); a random CLIP-L, a TAESD3-layout autoencoder and a diffusers SD3 MMDiT trained by
rectified flow are written in ComfyUI's folder layout by `build` (`python -m ssae.world build DIR`), so that
ComfyUI's own loaders, CLIPTextEncode, KSampler and VAEDecode sample the world; `probe` prompts it through a
running server. Needs the `world` extra (diffusers, transformers, instant-clip-tokenizer, pillow).
"""
from .build import BuiltWorld, WorldError, build, load_world
from .comfy_client import ComfyClient, ComfyError
from .measure import Reading, measure, read_image
from .recipe import PRESETS, QUICK, WorldRecipe
from .render import render
from .scene import CONCEPT, PAPER, WORLDS, Scene, World, WorldSpec, make_world, random_scene, world_vocabulary

__all__ = ["BuiltWorld", "WorldError", "build", "load_world", "ComfyClient", "ComfyError", "Reading", "measure",
           "read_image", "PRESETS", "QUICK", "WorldRecipe", "render", "CONCEPT", "PAPER", "WORLDS", "Scene", "World",
           "WorldSpec", "make_world", "random_scene", "world_vocabulary"]
