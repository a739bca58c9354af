"""Which joint block carries which attribute: an SSAE edit at every block's text input and image output, read in pixels.

`block_map` runs through a ComfyUI with this pack installed: one queue press samples the prompt set once through
a chain of SSAE Capture Features nodes (one per site, all on one model, so one sampling pass feeds every site),
SSAE Train fits the `default` SSAE on each site, then each edit case (a few swaps per category) is sampled
unedited and edited at every site by SSAE Patch Model with its default mode, all from the case's seed. The
table is the edit success per (site, category) and the preservation per site; the heat map (`ssae.block_map`,
shared with the SSAE Block Map node) shows the success as blocks x categories, one panel per stream.

Beside it, the readings a real model allows: the SSAE Block Map node, run on a few prompts with the same SSAE
files, gives how far each edit moves the sample (`movement_per_category`, `block_map_movement.png`) and how far
it goes toward the edited prompt's sample (`toward_prompt_per_category`, `block_map_toward.png`), and
`agreement` says how well each reading finds the sites the pixels say carry each attribute.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..block_map import MOVEMENT, MOVEMENT_TITLE, TOWARD, TOWARD_TITLE, heat_map, save_map
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
    node_prompts: int = 4
    """Prompts the SSAE Block Map node maps (the readings for models without ground truth), each with every
    swap of every category, for its tables beside the pixels' (0: none)."""


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


def node_map_graph(names: dict[str, str], pattern: str, prompt: str, seed: int, sampling, strength: float,
                   swaps: int, prefix: str) -> dict:
    """One press of the SSAE Block Map node (id `map`) on `prompt`, with the text encoder (so both readings),
    mapping the SSAEs of models/ssae that match `pattern`, its table and heat map written as `prefix`.json /
    .png."""
    g = _prompted(names, prompt)
    g["map"] = {"class_type": "SSAEBlockMap", "inputs": {
        "model": ["model", 0], "positive": ["positive", 0], "negative": ["negative", 0],
        "latent_image": ["latent", 0], "seed": seed, "steps": sampling.steps, "cfg": sampling.cfg,
        "sampler_name": sampling.sampler, "scheduler": sampling.scheduler, "ssae_files": pattern, "context": prompt,
        "swaps_per_category": swaps, "strength": strength, "filename_prefix": prefix, "clip": ["clip", 0]}}
    return g


def node_readings(client: ComfyClient, built: BuiltWorld, pattern: str, combos: list[tuple[str, ...]],
                  settings: MapSettings, tag: str) -> tuple[dict[str, dict[str, dict[str, float]]], int]:
    """({reading: {site: {category: value}}}, swaps made): the SSAE Block Map node's two readings on each of
    `combos` (every other concept of each category swapped in), averaged over the prompts."""
    world, sampling = built.world, built.recipe.sampling
    swaps = max(len(v) for v in world.vocabulary.categories.values()) - 1
    graphs = [node_map_graph(built.comfy_names, pattern, world.prompt(c), settings.seed + i, sampling,
                             settings.strength, swaps, f"{tag}/node_map_{i:02d}") for i, c in enumerate(combos)]
    tables = []
    for entry in client.run_all(graphs, timeout=1800):
        (shown,) = entry["outputs"]["map"]["images"]
        tables.append(json.loads(client.file(shown | {"filename": shown["filename"].replace(".png", ".json")})))
    readings = {key: {site: {c: float(np.mean([t["sites"][site][key][c] for t in tables]))
                             for c in world.vocabulary.categories} for site in tables[0]["sites"]}
                for key in (MOVEMENT, TOWARD)}
    return readings, sum(t["cases"] for t in tables)


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
    pixels = {key: [read_image(imgs[key], world.spec) for imgs in images] for key in keys}
    scores = {site: edit_scores(pixels["base"], pixels[f"site_{k}"], cases) for k, site in enumerate(sites)}
    edits_seconds = time.perf_counter() - t
    readings, swaps = {}, 0
    if settings.node_prompts:
        combos = [c.combo for c in cases[:settings.node_prompts]]
        readings, swaps = node_readings(client, built, f"{tag}_*", combos, settings, tag)
    report = {
        "sites": {site: {"success": s["success"], "preservation": s["preservation"],
                         "success_per_category": s["success_per_category"]}
                  | {key: r[site] for key, r in readings.items()} for site, s in scores.items()},
        "depth": depth, "streams": list(STREAMS), "categories": list(categories), "cases": len(cases),
        "settings": asdict(settings), "world": built.hashes["world"],
        "seconds": {"capture_and_train": capture_seconds, "edits": edits_seconds,
                    "node_readings": time.perf_counter() - t - edits_seconds, "total": time.perf_counter() - t0},
    }
    if readings:
        report["agreement"] = {key: reading_agreement(report, key) for key in readings}
        report["node_swaps"] = swaps
        save_png(heat_map(report, MOVEMENT, MOVEMENT_TITLE, None, swaps), out / "block_map_movement.png")
        save_png(heat_map(report, TOWARD, TOWARD_TITLE, 1.0, swaps), out / "block_map_toward.png")
    save_map(report, heat_map(report), out / "block_map")
    return report


def reading_agreement(report: dict, key: str) -> dict:
    """How well a reading a real model gives (`key`: movement, toward the prompt) finds what the pixels say: per
    category, whether the site it ranks first is one where the edit succeeds best, and the rank correlation of the
    two over every (site, category) cell (Spearman's, ties given their average rank)."""
    sites, categories = report["sites"], report["categories"]
    success = np.array([[sites[s]["success_per_category"][c] for c in categories] for s in sites])
    reading = np.array([[sites[s][key][c] for c in categories] for s in sites])
    best = {c: bool(success[reading[:, j].argmax(), j] == success[:, j].max()) for j, c in enumerate(categories)}
    a, b = _ranks(success.ravel()), _ranks(reading.ravel())
    return {"first_is_best_site": best,  # None: one reading is the same in every cell, so no rank order
            "rank_correlation": float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else None}


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks with ties given their average rank (Spearman's)."""
    order = a.argsort(kind="stable")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(len(a))
    for v in np.unique(a):
        ranks[a == v] = ranks[a == v].mean()
    return ranks
