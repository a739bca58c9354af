"""Prompting the built world through a running ComfyUI and reading the images back: base accuracy and the
held-out combinations prompted directly.

Every case is one (combination, seed): its prompt goes through ComfyUI's CLIPLoader (sd3) + CLIPTextEncode,
KSampler on the UNETLoader's MMDiT, VAEDecode with the taesd3 VAE, SaveImage; the image comes back over
GET /view and `measure` reads its concepts. A case is correct when every category reads as prompted.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..safefile import atomic_write_text
from ..vocab import Combination
from .build import BuiltWorld
from .comfy_client import ComfyClient
from .figures import image_grid, markdown_table, save_png
from .graphs import text_to_image_graph
from .measure import read_image
from .scene import CONCEPT, World, WorldSpec
from .taesd import SD3_SCALE, SD3_SHIFT


@dataclass(frozen=True)
class Case:
    """One prompt and seed."""

    combo: Combination
    seed: int


def seen_cases(world: World, n: int, seed: int = 0) -> list[Case]:
    """n cases of training combinations: distinct combinations (cycling when n exceeds them), seeded."""
    rng = random.Random(seed)
    combos = world.train_combinations
    order = rng.sample(combos, len(combos))
    return [Case(order[i % len(order)], 10_000 * (seed + 1) + i) for i in range(n)]


def heldout_cases(world: World, per_combination: int = 1, seed: int = 0) -> list[Case]:
    """Every test combination (each holds a held-out pair) `per_combination` times, seeded."""
    combos = world.test_combinations
    return [Case(c, 20_000 * (seed + 1) + k * len(combos) + i)
            for k in range(per_combination) for i, c in enumerate(combos)]


def sample_cases(client: ComfyClient, built: BuiltWorld, cases: list[Case], prefix: str,
                 progress: bool = False, save_latent: bool = False) -> list[dict]:
    """Each case's text-to-image graph through ComfyUI: [{"image", "latent"?}] in case order."""
    graphs = [text_to_image_graph(built.comfy_names, built.world.prompt(c.combo), c.seed, built.recipe.sampling,
                                  f"{prefix}/{i:04d}", save_latent=save_latent) for i, c in enumerate(cases)]
    entries = client.run_all(graphs, prefix if progress else None)
    return [{"image": client.images(e, node="save")[0]} | ({"latent": comfy_latent(client, e)} if save_latent else {})
            for e in entries]


def comfy_latent(client: ComfyClient, entry: dict, node: str = "save_latent"):
    """The file a finished prompt's SaveLatent `node` wrote, as the model-space latent [1, 16, 8, 8]."""
    from safetensors.torch import load
    comfy_space = load(client.file(entry["outputs"][node]["latents"][0]))["latent_tensor"]
    return (comfy_space - SD3_SHIFT) * SD3_SCALE


def score(images: list[np.ndarray], cases: list[Case], spec: WorldSpec = CONCEPT) -> dict:
    """Share of images showing every prompted concept, and per category."""
    matches = [read_image(img, spec).matches(c.combo) for img, c in zip(images, cases)]
    return {"all": float(np.mean([all(m.values()) for m in matches])),
            "per_category": {cat: float(np.mean([m[cat] for m in matches])) for cat in spec.categories},
            "correct": [all(m.values()) for m in matches], "n": len(cases)}


def pair_scores(images: list[np.ndarray], cases: list[Case], pairs, spec: WorldSpec = CONCEPT) -> dict[str, float]:
    """For each held-out pair, the share of its images that show both of its concepts."""
    out = {}
    for a, b in pairs:
        hits = [img for img, c in zip(images, cases) if a in c.combo and b in c.combo]
        shown = [set(read_image(img, spec).concepts.values()) >= {a, b} for img in hits]
        out[f"{a} + {b}"] = float(np.mean(shown)) if shown else float("nan")
    return out


def latent_parity(built: BuiltWorld, cases: list[Case], comfy_latents: list) -> float:
    """Max |ComfyUI's KSampler latent - this package's own sampling of the same prompt and seed|."""
    import torch

    from .pipeline import LocalWorld
    local = LocalWorld(built).sample_latents([built.world.prompt(c.combo) for c in cases], [c.seed for c in cases])
    return float((local - torch.cat(comfy_latents)).abs().max())


def probe(client: ComfyClient, built: BuiltWorld, out: str | Path | None = None, cases: int = 120, seed: int = 0,
          parity: int = 3, progress: bool = False) -> dict:
    """Base accuracy on `cases` seen (prompt, seed) cases, the held-out combinations prompted directly, and the
    latent parity of `parity` cases with this package's sampler; writes a grid, a table and JSON to `out`."""
    out = Path(out) if out is not None else built.root / "probe"
    seen, held = seen_cases(built.world, cases, seed), heldout_cases(built.world, 1, seed)
    t = time.perf_counter()
    seen_res = sample_cases(client, built, seen, "world_probe/seen", progress, save_latent=False)
    per_image = (time.perf_counter() - t) / len(seen)
    held_res = sample_cases(client, built, held, "world_probe/heldout", progress)
    par_res = sample_cases(client, built, seen[:parity], "world_probe/parity", save_latent=True) if parity else []
    seen_img, held_img = [r["image"] for r in seen_res], [r["image"] for r in held_res]
    spec = built.world.spec
    base, direct = score(seen_img, seen, spec), score(held_img, held, spec)
    report = {
        "base_accuracy": base["all"], "base_per_category": base["per_category"], "base_cases": base["n"],
        "heldout_prompt_accuracy": direct["all"], "heldout_per_category": direct["per_category"],
        "heldout_cases": direct["n"], "heldout_pairs": pair_scores(held_img, held, built.world.heldout_pairs, spec),
        "latent_parity_max_abs": latent_parity(built, seen[:parity], [r["latent"] for r in par_res]) if parity
        else None,
        "seconds_per_image": per_image, "sampling": asdict(built.recipe.sampling), "seed": seed,
        "world": built.hashes["world"],
    }
    save_png(image_grid(seen_img, 20, base["correct"]), out / "probe_seen.png")
    save_png(image_grid(held_img, 10, direct["correct"]), out / "probe_heldout.png")
    rows = [["seen combinations (base)", base["n"], base["all"], *base["per_category"].values()],
            ["held-out combinations, prompted", direct["n"], direct["all"], *direct["per_category"].values()]]
    report["markdown"] = markdown_table(["cases", "n", "all attributes", *spec.categories], rows)
    atomic_write_text(json.dumps(report, indent=1) + "\n", out / "probe.json")
    atomic_write_text(report["markdown"] + "\n", out / "probe.md")
    return report
