"""Edits and compositions of the built world, made by the pack's own nodes in a running ComfyUI, read in pixels.

`evaluate` runs the paper's loop on the world through ComfyUI: a prompt set of every combination (the
held-out pairs in 'test') is captured at the conditioning and at a joint block, SSAE Train fits the SSAEs
(`default`, `additive`) and the mean-difference baseline, and then, per (prompt, seed) case, one graph samples
the prompt, its edits (SSAE Apply to Conditioning, SSAE Patch Model) and its baselines (the edited prompt,
mean-difference steering), all from the same seed. `measure` reads every image back:

- base accuracy: the prompt's images show every concept of the prompt;
- edit success: an edit that swaps one concept shows the new concept, preservation: it keeps the other
  categories as the unedited image shows them; strength 0 gives the unedited image, pixel for pixel;
- composition: a held-out combination decoded from its concepts alone shows all of them (against prompting it).
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
from .graphs import canvas, capture_block_graph, capture_conditioning_graph, ksampler, loaders, train_graph
from .measure import Reading, read_image
from .recipe import SamplingDefaults
from .scene import VOCABULARY

SSAE_PRESETS = ("default", "additive")
BASELINE = "mean-difference"
"""The training preset of the steering baseline: one mean-difference vector per concept, no SSAE fitted."""


@dataclass(frozen=True)
class EditCase:
    """A seen combination sampled at `seed`, and the swap of `category`'s concept for `new`."""

    combo: Combination
    seed: int
    category: str
    new: str

    @property
    def old(self) -> str:
        return self.combo[list(VOCABULARY).index(self.category)]

    @property
    def edited(self) -> Combination:
        return tuple(self.new if c == self.old else c for c in self.combo)


def edit_cases(train: list[Combination], n: int, seed: int = 0) -> list[EditCase]:
    """n cases over the training combinations, each category swapped in turn, always for a concept that makes
    another training combination (the edit is then judged against a mix the model knows)."""
    rng = random.Random(seed)
    known = set(train)
    order = rng.sample(train, len(train))
    cases, i = [], 0
    while len(cases) < n:
        combo = order[i % len(order)]
        category = list(VOCABULARY)[i % len(VOCABULARY)]
        k = list(VOCABULARY).index(category)
        options = [c for c in VOCABULARY[category]
                   if c != combo[k] and tuple(c if j == k else x for j, x in enumerate(combo)) in known]
        if options:
            cases.append(EditCase(combo, 30_000 * (seed + 1) + i, category, rng.choice(options)))
        i += 1
    return cases


# -- graphs -------------------------------------------------------------------------------------------

def _sample(g: dict, key: str, model, positive, seed: int, sampling: SamplingDefaults, prefix: str) -> None:
    """KSampler -> VAEDecode -> SaveImage under ids sample_<key>, decode_<key>, save_<key>."""
    g[f"sample_{key}"] = ksampler(model, positive, seed, sampling)
    g[f"decode_{key}"] = {"class_type": "VAEDecode", "inputs": {"samples": [f"sample_{key}", 0], "vae": ["vae", 0]}}
    g[f"save_{key}"] = {"class_type": "SaveImage", "inputs": {"images": [f"decode_{key}", 0],
                                                              "filename_prefix": f"{prefix}_{key}"}}


def _concepts(g: dict, key: str, ssae_file: str, mode: str, add: dict, remove: dict) -> list:
    """Load SSAE + SSAE Concepts under ids ssae_<key>, concepts_<key>; the CONCEPTS output."""
    g[f"ssae_{key}"] = {"class_type": "SSAELoader", "inputs": {"ssae_name": ssae_file}}
    g[f"concepts_{key}"] = {"class_type": "SSAEConceptVector", "inputs": {
        "ssae": [f"ssae_{key}", 0], "mode": mode, "concepts": json.dumps({"add": add, "remove": remove})}}
    return [f"concepts_{key}", 0]


def _prompted(names: dict[str, str], prompt: str) -> dict:
    """The world's loaders, `canvas()` and the prompt's conditioning (id `positive`)."""
    return loaders(names) | canvas() | {
        "positive": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["clip", 0]}}}


def edit_graph(names: dict[str, str], files: dict[str, str], prompt: str, case: EditCase, sampling: SamplingDefaults,
               prefix: str, edited_prompt: str | None = None, strength: float = 1.0, block_strength: float = 1.0,
               identity: bool = False, block_end: float = 1.0, block_patch: dict | None = None) -> dict:
    """One case's images from one seed: `base` (the prompt) and its edits, one per SSAE file of `files` (keys
    conditioning and meandiff_conditioning: SSAE Apply to Conditioning; block and meandiff_block: SSAE Patch
    Model, with the inputs `block_patch` adds, e.g. its mode); with `edited_prompt` the baseline `prompt_edit`; with
    `identity` the SSAE edits at strength 0 too."""
    g = _prompted(names, prompt)
    swap = ({case.new: 1.0}, {case.old: 1.0})
    _sample(g, "base", ["model", 0], ["positive", 0], case.seed, sampling, prefix)
    if edited_prompt is not None:
        g["edited"] = {"class_type": "CLIPTextEncode", "inputs": {"text": edited_prompt, "clip": ["clip", 0]}}
        _sample(g, "prompt_edit", ["model", 0], ["edited", 0], case.seed, sampling, prefix)
    for kind, file in files.items():
        concepts = _concepts(g, kind, file, "edit", *swap)
        at_block = kind.endswith("block")
        full = block_strength if at_block else strength
        for key, s in ((kind, full), *([(f"{kind}_0", 0.0)] if identity and kind in ("conditioning", "block") else [])):
            if at_block:
                g[f"patch_{key}"] = {"class_type": "SSAEPatchModel", "inputs": {
                    "model": ["model", 0], "concepts": concepts, "strength": s, "start_percent": 0.0,
                    "end_percent": block_end, "apply_to": "positive", "site": "", "context": prompt,
                    **(block_patch or {})}}
                _sample(g, key, [f"patch_{key}", 0], ["positive", 0], case.seed, sampling, prefix)
            else:
                g[f"apply_{key}"] = {"class_type": "SSAEApplyConditioning", "inputs": {
                    "concepts": concepts, "strength": s, "conditioning": ["positive", 0], "context": prompt}}
                _sample(g, key, ["model", 0], [f"apply_{key}", 0], case.seed, sampling, prefix)
    return g


def compose_graph(names: dict[str, str], files: dict[str, str], prompt: str, combo: Combination, seed: int,
                  sampling: SamplingDefaults, prefix: str) -> dict:
    """A combination's images from one seed: `prompt` (prompted directly) and one per SSAE file of `files`
    (e.g. compose_default), its conditioning decoded from the concepts alone by SSAE Apply to Conditioning."""
    g = _prompted(names, prompt)
    _sample(g, "prompt", ["model", 0], ["positive", 0], seed, sampling, prefix)
    for key, file in files.items():
        concepts = _concepts(g, key, file, "compose", dict.fromkeys(combo, 1.0), {})
        g[f"apply_{key}"] = {"class_type": "SSAEApplyConditioning", "inputs": {"concepts": concepts, "strength": 1.0}}
        _sample(g, key, ["model", 0], [f"apply_{key}", 0], seed, sampling, prefix)
    return g


# -- scores -------------------------------------------------------------------------------------------

def edit_scores(base: list[Reading], edited: list[Reading], cases: list[EditCase]) -> dict:
    """success: the swapped category reads as the new concept; preservation: every other category reads as in
    the unedited image; both: the two at once."""
    success = [e.concepts[c.category] == c.new for e, c in zip(edited, cases)]
    kept = [all(e.concepts[k] == b.concepts[k] for k in VOCABULARY if k != c.category)
            for b, e, c in zip(base, edited, cases)]
    return {"success": float(np.mean(success)), "preservation": float(np.mean(kept)),
            "both": float(np.mean([s and k for s, k in zip(success, kept)])), "n": len(cases),
            "success_per_category": {k: float(np.mean([s for s, c in zip(success, cases) if c.category == k]))
                                     for k in VOCABULARY if any(c.category == k for c in cases)}}


def shows(readings: list[Reading], combos: list[Combination]) -> list[bool]:
    """Per image: does it show every concept of its combination?"""
    return [all(r.matches(c).values()) for r, c in zip(readings, combos)]


# -- the run ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvaluateSettings:
    """What `evaluate` samples: edit cases, seeds per held-out combination, the block site and the strength."""

    cases: int = 120
    compose_seeds: int = 2
    compose_cases: int | None = None
    """At most this many (held-out combination, seed) cases (None: every held-out combination at each seed)."""
    prompts: int | None = None
    """Prompts in the captured training sets (None: every combination of the world, held-out pairs in 'test')."""
    block_site: str = "joint_blocks.0.txt_in"
    """Joint block 0's text input (the context embedder's output, a linear map of the conditioning's token rows)
    with the modulation vector every block reads (the timestep's and the pooled prompt's embedding)."""
    block_seeds: int = 2
    """Sampling runs per prompt captured at the block (each a sample of the block's output)."""
    strength: float = 1.0
    block_strength: float = 1.0
    """The block edit's strength (chosen on development cases, docs/WORLD.md)."""
    block_end: float = 1.0
    """The block edit acts from the start of the schedule to this fraction of it."""
    block_mode: str = "attention keys/values"
    """SSAE Patch Model's mode for the block edit (its options: attention keys/values, residual stream)."""
    block_blocks: str = "this site and every later block"
    """SSAE Patch Model's blocks: this site, or this site and every later block."""
    identity_cases: int = 8
    """Cases whose edits are also made at strength 0, which must give the unedited image exactly."""
    seed: int = 0


def _images(client: ComfyClient, entries: list[dict], keys: list[str]) -> dict[str, list[np.ndarray]]:
    return {k: [client.images(e, node=f"save_{k}")[0] for e in entries if f"save_{k}" in e["outputs"]]
            for k in keys}


def evaluate(client: ComfyClient, built: BuiltWorld, out: str | Path | None = None,
             settings: EvaluateSettings = EvaluateSettings(), progress: bool = False) -> dict:
    """The whole evaluation through the server at `client`; returns the report and writes JSON, Markdown and the
    grid to `out` (default DIR/evaluate)."""
    out = Path(out) if out is not None else built.root / "evaluate"
    world, names, sampling = built.world, built.comfy_names, built.recipe.sampling
    tag = f"world_{built.hashes['world'][:8]}"
    vocabulary = json.dumps(world.vocabulary.categories)
    heldout = "; ".join(" + ".join(p) for p in world.heldout_pairs)
    n_prompts = settings.prompts or len(world.combinations)
    t0 = time.perf_counter()
    sets = {"conditioning": f"{tag}_conditioning", "block": f"{tag}_{settings.block_site.replace('.', '_')}"}
    client.run(capture_conditioning_graph(names, vocabulary, n_prompts, heldout, sets["conditioning"]), 1800)
    for i in range(settings.block_seeds):
        client.run(capture_block_graph(names, vocabulary, n_prompts, heldout, sets["block"], settings.block_site,
                                       settings.seed + i, sampling, "replace" if i == 0 else "append"), 3600)
    files = {}
    for site, features in sets.items():
        for preset in (*SSAE_PRESETS, BASELINE):
            name = f"{features}_{preset}"
            client.run(train_graph(features, preset, name), 3600)
            files[(site, preset)] = name + ".safetensors"
    capture_seconds = time.perf_counter() - t0

    cases = edit_cases(world.train_combinations, settings.cases, settings.seed)
    edit_files = {"conditioning": files[("conditioning", "default")], "block": files[("block", "default")],
                  "meandiff_conditioning": files[("conditioning", BASELINE)],
                  "meandiff_block": files[("block", BASELINE)]}
    graphs = [edit_graph(names, edit_files, world.prompt(c.combo), c, sampling, f"{tag}_eval/edit_{i:04d}",
                         world.prompt(c.edited), settings.strength, settings.block_strength,
                         i < settings.identity_cases, settings.block_end,
                         {"mode": settings.block_mode, "blocks": settings.block_blocks})
              for i, c in enumerate(cases)]
    t = time.perf_counter()
    entries = client.run_all(graphs, "edits" if progress else None, timeout=1800)
    seconds_per_image = (time.perf_counter() - t) / sum(len([k for k in g if k.startswith("save_")]) for g in graphs)
    edit_keys = ["base", "conditioning", "block", "prompt_edit", "meandiff_conditioning", "meandiff_block"]
    images = _images(client, entries, edit_keys + ["conditioning_0", "block_0"])
    readings = {k: [read_image(img) for img in images[k]] for k in edit_keys}
    # the identity cases are the first ones, so their images pair with the first base images (None: none made)
    identical = {site: all(np.array_equal(a, b) for a, b in zip(images[f"{site}_0"], images["base"]))
                 if images[f"{site}_0"] else None for site in ("conditioning", "block")}

    held = [(c, 40_000 * (settings.seed + 1) + k * 1000 + i) for k in range(settings.compose_seeds)
            for i, c in enumerate(world.test_combinations)][:settings.compose_cases]
    compose_files = {f"compose_{p}": files[("conditioning", p)] for p in (*SSAE_PRESETS, BASELINE)}
    entries = client.run_all([compose_graph(names, compose_files, world.prompt(c), c, s, sampling,
                                            f"{tag}_eval/compose_{i:04d}") for i, (c, s) in enumerate(held)],
                             "compositions" if progress else None, timeout=1800)
    compose_images = _images(client, entries, ["prompt", *compose_files])
    composed = {k: shows([read_image(img) for img in v], [c for c, _ in held]) for k, v in compose_images.items()}

    base_ok = shows(readings["base"], [c.combo for c in cases])
    edits = {k: edit_scores(readings["base"], readings[k], cases) for k in edit_keys[1:]}
    report = {
        "base_accuracy": float(np.mean(base_ok)),
        "edit_success": {site: edits[site]["success"] for site in ("conditioning", "block")},
        "preservation": {site: edits[site]["preservation"] for site in ("conditioning", "block")},
        "strength_zero_identical": identical,
        "compose_accuracy": {"default": float(np.mean(composed["compose_default"])),
                             "additive": float(np.mean(composed["compose_additive"])),
                             "prompt": float(np.mean(composed["prompt"]))},
        "compose_accuracy_per_pair": {" + ".join(p): {k.removeprefix("compose_"): float(np.mean(
            [ok for ok, (c, _) in zip(v, held) if set(p) <= set(c)])) for k, v in composed.items()}
            for p in world.heldout_pairs if any(set(p) <= set(c) for c, _ in held)},
        "baselines": {"prompt_edit": edits["prompt_edit"],
                      "mean_difference": {"conditioning": edits["meandiff_conditioning"],
                                          "block": edits["meandiff_block"],
                                          "compose": float(np.mean(composed["compose_mean-difference"]))}},
        "edits": {k: edits[k] for k in ("conditioning", "block")},
        "heldout_pairs": [list(p) for p in world.heldout_pairs],
        "cases": len(cases), "compose_cases": len(held), "identity_cases": settings.identity_cases,
        "settings": asdict(settings), "sampling": asdict(sampling), "world": built.hashes["world"],
        "seconds": {"capture_and_train": capture_seconds, "per_image": seconds_per_image},
    }
    report["markdown"] = _table(report)
    out.mkdir(parents=True, exist_ok=True)
    save_png(_grid(images, compose_images), out / "evaluate_grid.png")
    atomic_write_text(json.dumps(report, indent=1) + "\n", out / "evaluate.json")
    atomic_write_text(report["markdown"] + "\n", out / "evaluate.md")
    return report


def _table(r: dict) -> str:
    b = r["baselines"]
    rows = [["prompt (base)", r["cases"], r["base_accuracy"], "–", "–"],
            ["SSAE edit at the conditioning", r["cases"], "–", r["edit_success"]["conditioning"],
             r["preservation"]["conditioning"]],
            [f"SSAE edit at {r['settings']['block_site']}", r["cases"], "–", r["edit_success"]["block"],
             r["preservation"]["block"]],
            ["baseline: prompt editing", r["cases"], "–", b["prompt_edit"]["success"],
             b["prompt_edit"]["preservation"]],
            ["baseline: mean difference at the conditioning", r["cases"], "–",
             b["mean_difference"]["conditioning"]["success"], b["mean_difference"]["conditioning"]["preservation"]],
            [f"baseline: mean difference at {r['settings']['block_site']}", r["cases"], "–",
             b["mean_difference"]["block"]["success"], b["mean_difference"]["block"]["preservation"]],
            ["held-out mix, prompted", r["compose_cases"], r["compose_accuracy"]["prompt"], "–", "–"],
            *[[f"held-out mix, composed by SSAE {p}", r["compose_cases"], r["compose_accuracy"][p], "–", "–"]
              for p in SSAE_PRESETS],
            ["held-out mix, composed from mean differences", r["compose_cases"], b["mean_difference"]["compose"],
             "–", "–"]]
    return markdown_table(["images", "n", "show every concept", "edit success", "preservation"], rows)


def _grid(images: dict, compose_images: dict, columns: int = 8) -> np.ndarray:
    """Rows: prompt, edit at the conditioning, edit at the block (columns: edit cases, each its own seed); then a
    held-out mix composed by the SSAE (default) above the same mix prompted (columns: held-out cases)."""
    edits = [images["base"], images["conditioning"], images["block"]]
    columns = min(columns, *map(len, edits), len(compose_images["prompt"]))
    step = len(compose_images["prompt"]) // columns  # the held-out cases spread over every held-out pair
    mixes = [compose_images["compose_default"][::step], compose_images["prompt"][::step]]
    return image_grid([img for row in edits + mixes for img in row[:columns]], columns)
