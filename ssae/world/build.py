"""`python -m ssae.world build DIR`: the world's three models in ComfyUI's folder layout, cached by recipe hash.

DIR/models/ is a `base_path` for ComfyUI's extra_model_paths.yaml (DIR/extra_model_paths.yaml holds one):
text_encoders/world_clip_l.safetensors (CLIPLoader, type sd3), vae_approx/taesd3_{encoder,decoder}.safetensors
(VAELoader `taesd3`), diffusion_models/world_mmdit.safetensors (UNETLoader). DIR/world.json records the
vocabulary, held-out pairs, train/test combinations, recipe, hashes, file names and sampling defaults.
Every file carries the hash of what built it; a part whose file is present with the right hash is not rebuilt.
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import SSAEError
from ..safefile import atomic_save, atomic_write_text, load_tensors, loads_json, read_header
from .autoencoder import Autoencoder, images_to_tensor, train_autoencoder
from .dit import comfy_state_dict, train_dit
from .recipe import WorldRecipe
from .render import render
from .scene import World, make_world, random_scene
from .taesd import thumbnail_latent
from .text import TextEncoder, clip_state_dict

log = logging.getLogger(__name__)

WORLD_FORMAT = "ssae-world/1"
WORLD_JSON = "world.json"
YAML = "extra_model_paths.yaml"
FILES = {"text_encoder": "text_encoders/world_clip_l.safetensors",
         "vae_encoder": "vae_approx/taesd3_encoder.safetensors",
         "vae_decoder": "vae_approx/taesd3_decoder.safetensors",
         "diffusion_model": "diffusion_models/world_mmdit.safetensors"}
"""Artefact -> path under DIR/models (ComfyUI's folder names; the VAE's names are fixed by VAELoader)."""
COMFY_NAMES = {"clip_name": Path(FILES["text_encoder"]).name, "vae_name": "taesd3",
               "unet_name": Path(FILES["diffusion_model"]).name}
"""The names ComfyUI's loaders take: clip_name (CLIPLoader, type sd3), vae_name, unet_name (UNETLoader)."""
CONDITIONING_CACHE = "cache/conditioning.safetensors"
HASH_KEY = "ssae.world.hash"


class WorldError(SSAEError):
    """A world folder that is missing, incomplete or of another format."""


@dataclass(frozen=True)
class BuiltWorld:
    """A built world folder: where its files are and what they hold."""

    root: Path
    world: World
    recipe: WorldRecipe
    hashes: dict[str, str]
    thumbnail_mean: tuple[float, float, float]
    thumbnail_std: tuple[float, float, float]

    @property
    def models(self) -> Path:
        return self.root / "models"

    def path(self, artefact: str) -> Path:
        return self.models / FILES[artefact]

    @property
    def comfy_names(self) -> dict[str, str]:
        return COMFY_NAMES

    def to_json(self) -> dict:
        return {"format": WORLD_FORMAT, "hash": self.hashes["world"], "hashes": self.hashes,
                "recipe": self.recipe.to_dict(), "files": FILES, "comfy": self.comfy_names,
                "sampling": asdict(self.recipe.sampling),
                "autoencoder": {"thumbnail_mean": list(self.thumbnail_mean), "thumbnail_std": list(self.thumbnail_std)},
                **self.world.to_dict()}


def training_combinations(world: World, recipe: WorldRecipe):
    """The combinations the diffusion model trains on (`World.generator_combinations`): all of them, or
    `max_combinations` chosen with the world seed."""
    combos = world.generator_combinations
    if recipe.max_combinations and recipe.max_combinations < len(combos):
        combos = sorted(random.Random(recipe.world_seed).sample(combos, recipe.max_combinations))
    return combos


def training_images(world: World, recipe: WorldRecipe) -> tuple[np.ndarray, list[int]]:
    """The rendered training scenes (uint8 [N, 64, 64, 3]) and each one's index into `training_combinations`."""
    combos = training_combinations(world, recipe)
    labels = [i % len(combos) for i in range(recipe.images)]
    base = 1_000_003 * recipe.world_seed
    spec = world.spec
    return np.stack([render(random_scene(combos[j], base + i, spec), spec) for i, j in enumerate(labels)]), labels


def _file_hash(path: Path) -> str | None:
    """The build hash a file carries; None when it is missing or damaged (and so gets rebuilt)."""
    if not path.is_file():
        return None
    try:
        return read_header(path, WorldError)[1].get(HASH_KEY)
    except WorldError:
        return None  # a damaged file is rebuilt


def _train_with_bar(desc: str, enabled: bool, fn, *args):
    """`fn(*args, progress=...)` with a tqdm bar of its steps and loss when `enabled`."""
    if not enabled:
        return fn(*args, progress=None)
    from tqdm.auto import tqdm
    bar = tqdm(desc=desc, unit="step", dynamic_ncols=True)

    def update(step: int, total: int, loss: float) -> None:
        bar.total, bar.n = total, step
        if step % 10 == 0 or step == total:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=True)

    try:
        return fn(*args, progress=update)
    finally:
        bar.close()


def _conditioning(root: Path, text_path: Path, text_hash: str, prompts: list[str],
                  show: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts' CLIP-L encodings (hidden [P, 77, 768], pooled [P, 768]), cached per text encoder."""
    cache = root / CONDITIONING_CACHE
    key = json.dumps({"text": text_hash, "prompts": prompts})
    if _file_hash(cache) == key:
        t = load_tensors(cache, error=WorldError)
        return t["hidden"], t["pooled"]
    log.info("encoding %d prompts with the world's CLIP-L", len(prompts))
    encoder = TextEncoder.load(text_path)
    hidden, pooled = [], []
    chunks = [prompts[i:i + 16] for i in range(0, len(prompts), 16)]
    if show:
        from tqdm.auto import tqdm
        chunks = tqdm(chunks, desc="encode prompts", unit="batch", dynamic_ncols=True)
    for chunk in chunks:
        h, p = encoder.encode(chunk)
        hidden.append(h)
        pooled.append(p)
    hidden, pooled = torch.cat(hidden), torch.cat(pooled)
    atomic_save({"hidden": hidden, "pooled": pooled}, {HASH_KEY: key}, cache)
    return hidden, pooled


def build(root: str | Path, recipe: WorldRecipe = WorldRecipe(), progress: bool = True) -> BuiltWorld:
    """Build (or reuse) every part of the world under `root`; returns what was built."""
    root = Path(root)
    hashes = recipe.hashes()
    world = make_world(recipe.heldout_pairs, recipe.world_seed, recipe.spec)
    paths = {k: root / "models" / v for k, v in FILES.items()}
    seconds: dict[str, float] = {}

    def meta(part: str) -> dict[str, str]:
        return {HASH_KEY: hashes[part], "ssae.world.recipe": json.dumps(recipe.to_dict())}

    t = time.perf_counter()
    if _file_hash(paths["text_encoder"]) != hashes["text"]:
        log.info("building the text encoder (random CLIP-L, seed %d)", recipe.text_seed)
        atomic_save(clip_state_dict(recipe.text_seed), meta("text"), paths["text_encoder"])
        seconds["text_encoder"] = time.perf_counter() - t

    images = labels = None
    ae_fresh = {_file_hash(paths["vae_encoder"]), _file_hash(paths["vae_decoder"])} == {hashes["autoencoder"]}
    if not ae_fresh or _file_hash(paths["diffusion_model"]) != hashes["dit"]:
        t = time.perf_counter()
        images, labels = training_images(world, recipe)
        seconds["render"] = time.perf_counter() - t
    if ae_fresh:
        _, enc_meta = read_header(paths["vae_encoder"], WorldError)
        stats = loads_json(enc_meta["ssae.world.thumbnail"])
        mean, std = tuple(stats["mean"]), tuple(stats["std"])
    else:
        t = time.perf_counter()
        log.info("training the autoencoder's decoder on %d scenes", len(images))
        ae: Autoencoder = _train_with_bar("autoencoder", progress, train_autoencoder, images, recipe.autoencoder)
        mean, std = tuple(ae.mean.tolist()), tuple(ae.std.tolist())
        enc, dec = ae.state_dicts()
        stats = {"ssae.world.thumbnail": json.dumps({"mean": list(mean), "std": list(std)})}
        atomic_save(enc, meta("autoencoder") | stats, paths["vae_encoder"])
        atomic_save(dec, meta("autoencoder") | stats, paths["vae_decoder"])
        seconds["autoencoder"] = time.perf_counter() - t

    if _file_hash(paths["diffusion_model"]) != hashes["dit"]:
        t = time.perf_counter()
        combos = training_combinations(world, recipe)
        hidden, pooled = _conditioning(root, paths["text_encoder"], hashes["text"],
                                       [world.prompt(c) for c in combos] + [""], progress)
        seconds["encode_prompts"] = time.perf_counter() - t
        t = time.perf_counter()
        latents = thumbnail_latent(images_to_tensor(images), torch.tensor(mean), torch.tensor(std))
        log.info("training the MMDiT (depth %d) on %d latents of %d prompts", recipe.dit.depth, len(latents),
                 len(combos))
        model = _train_with_bar("mmdit", progress, train_dit, latents, torch.tensor(labels), hidden[:-1],
                                pooled[:-1], (hidden[-1], pooled[-1]), recipe.dit)
        atomic_save(comfy_state_dict(model), meta("dit"), paths["diffusion_model"])
        seconds["dit"] = time.perf_counter() - t

    built = BuiltWorld(root, world, recipe, hashes, mean, std)
    doc = built.to_json()
    old = _read_json(root / WORLD_JSON)
    doc["build_seconds"] = (old or {}).get("build_seconds", {}) | {k: round(v, 2) for k, v in seconds.items()}
    if doc != old:
        atomic_write_text(json.dumps(doc, indent=1) + "\n", root / WORLD_JSON)
    yaml = (f"ssae_world:\n  base_path: {(root / 'models').resolve()}\n  text_encoders: text_encoders\n"
            "  vae_approx: vae_approx\n  diffusion_models: diffusion_models\n")
    if not (root / YAML).is_file() or (root / YAML).read_text() != yaml:
        atomic_write_text(yaml, root / YAML)
    return built


def _read_json(path: Path) -> dict | None:
    try:
        return loads_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_world(root: str | Path) -> BuiltWorld:
    """A built world folder, checked: world.json of this format and every model file present."""
    root = Path(root)
    doc = _read_json(root / WORLD_JSON)
    if not isinstance(doc, dict) or doc.get("format") != WORLD_FORMAT:
        raise WorldError(f"{root} holds no built world ({WORLD_JSON} missing or of another format): "
                         f"run `python -m ssae.world build {root}`")
    missing = [FILES[k] for k in FILES if not (root / "models" / FILES[k]).is_file()]
    if missing:
        raise WorldError(f"{root} lacks {missing}: run `python -m ssae.world build {root}` again")
    recipe = WorldRecipe.from_dict(doc["recipe"])
    stats = doc["autoencoder"]
    return BuiltWorld(root, make_world(recipe.heldout_pairs, recipe.world_seed, recipe.spec), recipe, doc["hashes"],
                      tuple(stats["thumbnail_mean"]), tuple(stats["thumbnail_std"]))
