"""Which joint block carries which attribute: an SSAE edit at every block's text input and image output, read in pixels.

`block_map` runs through a ComfyUI with this pack installed: one queue press samples the prompt set once through
a chain of SSAE Capture Features nodes (one per site, all on one model, so one sampling pass feeds every site),
SSAE Train fits the `default` SSAE on each site, then each edit case (a few swaps per category) is sampled
unedited and edited at every site by SSAE Patch Model with its default mode, all from the case's seed. The
table is the edit success per (site, category) and the preservation per site; the heat map shows the success
as blocks x categories, one panel per stream.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..safefile import atomic_write_text
from .build import BuiltWorld
from .cases import EditCase, edit_cases
from .comfy_client import ComfyClient
from .evaluate import _concepts, _prompted, _sample, graph_images, training_prompts
from .figures import save_png
from .graphs import canvas, ksampler, loaders, prompt_set_nodes, train_graph
from .heldout import ssae_training_combinations
from .measure import read_image
from .scores import edit_scores

STREAMS = ("txt_in", "img")
"""Per block: its text input (what its joint attention reads) and its image output."""


@dataclass(frozen=True)
class MapSettings:
    prompts: int | None = None
    """Prompts captured (None: the world's own number, as `evaluate`; the held-out pairs in 'test')."""
    cases_per_category: int = 4
    strength: float = 1.0
    """The edit's strength (SSAE Patch Model's, with its default mode and blocks)."""
    seed: int = 0


def map_sites(depth: int) -> list[str]:
    """Every block's text input and image output, block by block."""
    return [f"joint_blocks.{i}.{s}" for i in range(depth) for s in STREAMS]


def capture_sites_graph(names: dict[str, str], vocabulary: str, n: int, heldout: str, sets: dict[str, str],
                        seed: int, sampling) -> dict:
    """One press: every prompt sampled once through a chain of SSAE Capture Features (one per site of `sets`,
    site -> feature-set name), each saved to its own feature set."""
    g = loaders(names, ("model", "clip")) | prompt_set_nodes(vocabulary, n, heldout) | canvas()
    model = ["model", 0]
    for k, (site, name) in enumerate(sets.items()):
        g[f"capture_{k}"] = {"class_type": "SSAECaptureFeatures", "inputs": {
            "model": model, "site": site, "labels": "", "vocabulary": "", "start_percent": 0.0, "end_percent": 1.0,
            "steps": "mean", "tokens": "auto", "sample": ["prompts", 1]}}
        g[f"store_{k}"] = {"class_type": "SSAESaveFeatures", "inputs": {
            "features": [f"capture_{k}", 1], "samples": ["sample", 0], "name": name, "split": "auto",
            "if_exists": "replace"}}
        model = [f"capture_{k}", 0]
    g["sample"] = ksampler(model, ["encode", 0], seed, sampling)
    return g


def map_edit_graph(names: dict[str, str], files: dict[str, str], prompt: str, case: EditCase, sampling,
                   prefix: str, strength: float) -> dict:
    """One case: `base` and its edit at each site of `files` (site -> SSAE file), keys site_<k>."""
    g = _prompted(names, prompt)
    _sample(g, "base", ["model", 0], ["positive", 0], case.seed, sampling, prefix)
    for k, (site, file) in enumerate(files.items()):
        concepts = _concepts(g, f"site_{k}", file, "edit", dict.fromkeys(case.new, 1.0), dict.fromkeys(case.old, 1.0))
        g[f"patch_site_{k}"] = {"class_type": "SSAEPatchModel", "inputs": {
            "model": ["model", 0], "concepts": concepts, "strength": strength, "start_percent": 0.0,
            "end_percent": 1.0, "apply_to": "positive", "site": site, "context": prompt}}
        _sample(g, f"site_{k}", [f"patch_site_{k}", 0], ["positive", 0], case.seed, sampling, prefix)
    return g


def block_map(client: ComfyClient, built: BuiltWorld, out: str | Path | None = None,
              settings: MapSettings = MapSettings(), progress: bool = False) -> dict:
    """The map through the server at `client`; writes block_map.json and block_map.png to `out` (default
    DIR/block_map) and returns the report."""
    out = Path(out) if out is not None else built.root / "block_map"
    world, names, sampling = built.world, built.comfy_names, built.recipe.sampling
    tag = f"world_{built.hashes['world'][:8]}_map"
    depth = built.recipe.dit.depth
    sites = map_sites(depth)
    sets = {site: f"{tag}_{site.replace('.', '_')}" for site in sites}
    n_prompts = training_prompts(built, settings.prompts)
    t0 = time.perf_counter()
    client.run(capture_sites_graph(names, json.dumps(world.vocabulary.categories), n_prompts,
                                   "; ".join(" + ".join(p) for p in world.heldout_pairs), sets, settings.seed,
                                   sampling), 3600)
    files = {}
    for site, name in sets.items():
        client.run(train_graph(name, "default", name), 3600)
        files[site] = name + ".safetensors"
    capture_seconds = time.perf_counter() - t0
    categories = world.vocabulary.categories
    seen = ssae_training_combinations(world.vocabulary, world.heldout_pairs, n_prompts)
    cases = edit_cases(seen, world.train_combinations, categories, settings.cases_per_category * len(categories),
                       1, settings.seed)
    t = time.perf_counter()
    graphs = [map_edit_graph(names, files, world.prompt(c.combo), c, sampling, f"{tag}/edit_{i:04d}",
                             settings.strength) for i, c in enumerate(cases)]
    entries = client.run_all(graphs, "block map" if progress else None, timeout=1800)
    images = graph_images(client, graphs, entries, [f"edit_{i:04d}" for i in range(len(cases))])
    keys = ["base", *(f"site_{k}" for k in range(len(sites)))]
    readings = {key: [read_image(imgs[key], world.spec) for imgs in images] for key in keys}
    scores = {site: edit_scores(readings["base"], readings[f"site_{k}"], cases) for k, site in enumerate(sites)}
    report = {
        "sites": {site: {"success": s["success"], "preservation": s["preservation"],
                         "success_per_category": s["success_per_category"]} for site, s in scores.items()},
        "depth": depth, "streams": list(STREAMS), "categories": list(categories), "cases": len(cases),
        "settings": asdict(settings), "world": built.hashes["world"],
        "seconds": {"capture_and_train": capture_seconds, "edits": time.perf_counter() - t,
                    "total": time.perf_counter() - t0},
    }
    out.mkdir(parents=True, exist_ok=True)
    save_png(heat_map(report), out / "block_map.png")
    atomic_write_text(json.dumps(report, indent=1) + "\n", out / "block_map.json")
    return report


def success_grid(report: dict, stream: str) -> np.ndarray:
    """[blocks, categories] edit success of one stream's sites (NaN where a site was not mapped)."""
    grid = np.full((report["depth"], len(report["categories"])), np.nan)
    for i in range(report["depth"]):
        site = report["sites"].get(f"joint_blocks.{i}.{stream}")
        if site is not None:
            grid[i] = [site["success_per_category"].get(c, np.nan) for c in report["categories"]]
    return grid


def heat_map(report: dict) -> np.ndarray:
    """uint8 [H, W, 3]: edit success, blocks (rows) x categories (columns), one panel per stream."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    streams = report["streams"]
    fig, axes = plt.subplots(1, len(streams), figsize=(3.2 * len(streams) + 0.6, 0.5 * report["depth"] + 1.6),
                             dpi=100, squeeze=False)
    titles = {"txt_in": "text stream, block input", "img": "image stream, block output"}
    for ax, stream in zip(axes[0], streams):
        grid = success_grid(report, stream)
        ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, "–" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                    color="black" if v > 0.6 else "white", fontsize=9)
        ax.set_xticks(range(len(report["categories"])), report["categories"], fontsize=8)
        ax.set_yticks(range(report["depth"]), [f"block {i}" for i in range(report["depth"])], fontsize=8)
        ax.set_title(titles.get(stream, stream), fontsize=9)
    fig.suptitle(f"edit success per block and category ({report['cases']} swaps)", fontsize=10)
    fig.tight_layout()
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img
