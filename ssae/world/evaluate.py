"""Edits and compositions of the built world, made by the pack's own nodes in a running ComfyUI, read in pixels.

`evaluate` runs the paper's loop on the world through ComfyUI: a prompt set (the held-out pairs in 'test') is
captured at the conditioning and at a joint block, SSAE Train fits the SSAEs (`default`, `additive`) and the
mean-difference baseline on each, and then, per (prompt, seed) case, one graph samples the prompt, the edited
prompt, and the edit of every method at both sites (SSAE Apply to Conditioning, SSAE Patch Model), all from the
same seed. `measure` reads every image back:

- base accuracy: the prompt's images show every concept of the prompt;
- edits (one category swapped, two at once, and one swapped into a held-out mix): success, the swapped categories
  read as the new concepts; preservation, every other category reads as in the unedited image; pixel
  preservation, the object's mask and the background's colours stay where nothing was edited; strength 0 gives
  the unedited image, pixel for pixel, and a strength sweep of colour edits;
- composition: a held-out combination decoded from its concepts alone shows all of them (against prompting it).
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import SSAEError
from ..safefile import atomic_write_text
from ..vocab import Combination
from .build import BuiltWorld
from .cases import EditCase, compose_cases, edit_cases
from .comfy_client import ComfyClient
from .figures import image_grid, markdown_table, save_png
from .graphs import canvas, capture_block_graph, capture_conditioning_graph, ksampler, loaders, train_graph
from .heldout import ssae_training_combinations, uncovered
from .measure import read_image
from .recipe import SamplingDefaults
from .scores import edit_scores, pixel_preservation, shows, sweep_scores

SSAE_PRESETS = ("default", "additive")
BASELINE = "mean-difference"
"""The training preset of the steering baseline: one mean-difference vector per concept, no SSAE fitted."""
METHODS = (*SSAE_PRESETS, BASELINE)
"""Every trained method; the edited prompt is the fourth, `prompt`."""
SITES = ("conditioning", "block")
KINDS = ("single", "double", "into_heldout")
"""Edit cases: one category swapped, two at once, one swapped so that the result holds a held-out pair."""


class EvaluateError(SSAEError):
    """Settings that cannot give a measure, or a run whose outputs lack an image."""


@dataclass(frozen=True)
class EvaluateSettings:
    """What `evaluate` samples: edit cases, seeds per held-out combination, the block site and the strengths."""

    cases: int = 120
    """Single edits (one category swapped for a concept that makes a training-side mix)."""
    double_cases: int = 40
    """Double edits (two categories swapped at once)."""
    heldout_cases: int = 40
    """Edits into held-out mixes (one category swapped so that the result holds a held-out pair)."""
    sweep_cases: int = 12
    """Colour edits among the single edits also made at every strength of `sweep_strengths` (by each method, at
    the conditioning)."""
    sweep_strengths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
    compose_seeds: int = 2
    compose_cases: int | None = None
    """At most this many (held-out combination, seed) cases (None: every held-out combination at each seed)."""
    prompts: int | None = None
    """Prompts in the captured training sets (None: the world's own, `WorldSpec.ssae_prompts`, or every
    combination), sampled as SSAE Prompt Set does with seed 0."""
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
    """Single cases whose default edits are also made at strength 0, which must give the unedited image exactly."""
    seed: int = 0

    def __post_init__(self) -> None:
        at_least = {"cases": 1, "compose_seeds": 1, "block_seeds": 1, "double_cases": 0, "heldout_cases": 0,
                    "sweep_cases": 0, "identity_cases": 0, "seed": 0}
        for name, low in at_least.items():
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise EvaluateError(f"{name} must be a whole number >= {low}, got {value!r}"
                                    + (": every measure needs at least one case" if low else ""))
        for name, default in (("compose_cases", "every held-out combination"), ("prompts", "the world's own")):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise EvaluateError(f"{name} must be a whole number >= 1, or None for {default}, got {value!r}")
        if self.sweep_cases and (len(self.sweep_strengths) < 2 or 0.0 not in self.sweep_strengths):
            raise EvaluateError("sweep_strengths must hold 0 and at least one more strength, got "
                                f"{self.sweep_strengths}")


def training_prompts(built: BuiltWorld, prompts: int | None = None) -> int:
    """How many prompts the evaluation's prompt sets sample: `prompts`, else the world's own number."""
    return prompts or built.world.spec.ssae_prompts or len(built.world.combinations)


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


def block_patch(model: list, concepts: list, strength: float, context: str, settings: EvaluateSettings) -> dict:
    """The SSAE Patch Model node of a block edit: every block edit of the evaluation is made by this node."""
    return {"class_type": "SSAEPatchModel", "inputs": {
        "model": model, "concepts": concepts, "strength": strength, "start_percent": 0.0,
        "end_percent": settings.block_end, "apply_to": "positive", "site": "", "context": context,
        "mode": settings.block_mode, "blocks": settings.block_blocks}}


def image_key(site: str, method: str, strength: float | None = None) -> str:
    """The node-id suffix of an edit's image: e.g. conditioning_default, block_mean-difference_s0.5."""
    return f"{site}_{method}" + ("" if strength is None else f"_s{strength:g}")


def edit_graph(names: dict[str, str], files: dict[tuple[str, str], str], prompt: str, case: EditCase,
               sampling: SamplingDefaults, prefix: str, settings: EvaluateSettings, edited_prompt: str | None = None,
               identity: bool = False, sweep: bool = False) -> dict:
    """One case's images from one seed: `base` (the prompt), with `edited_prompt` the baseline `prompt_edit`,
    and per (site, method) SSAE file of `files` its edit (conditioning: SSAE Apply to Conditioning; block: SSAE
    Patch Model); with `identity` the default edits at strength 0 too, with `sweep` every conditioning edit at
    each of `settings.sweep_strengths`."""
    g = _prompted(names, prompt)
    swap = (dict.fromkeys(case.new, 1.0), dict.fromkeys(case.old, 1.0))
    _sample(g, "base", ["model", 0], ["positive", 0], case.seed, sampling, prefix)
    if edited_prompt is not None:
        g["edited"] = {"class_type": "CLIPTextEncode", "inputs": {"text": edited_prompt, "clip": ["clip", 0]}}
        _sample(g, "prompt_edit", ["model", 0], ["edited", 0], case.seed, sampling, prefix)
    for (site, method), file in files.items():
        concepts = _concepts(g, image_key(site, method), file, "edit", *swap)
        full = settings.block_strength if site == "block" else settings.strength
        strengths = {image_key(site, method): full}
        if identity and method == "default":
            strengths[image_key(site, method, 0.0)] = 0.0
        if sweep and site == "conditioning":
            strengths |= {image_key(site, method, s): s for s in settings.sweep_strengths}
        for key, s in strengths.items():
            if site == "block":
                g[f"patch_{key}"] = block_patch(["model", 0], concepts, s, prompt, settings)
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


# -- the run ------------------------------------------------------------------------------------------

def graph_images(client: ComfyClient, graphs: list[dict], entries: list[dict], names: list[str]) -> list[dict]:
    """Per graph, every image its SaveImage nodes wrote, by key (save_<key>); a graph whose run lacks one of
    them raises, naming the case, so that no later case's images shift onto it."""
    out = []
    for graph, entry, name in zip(graphs, entries, names):
        images = {}
        for node in (k for k in graph if k.startswith("save_")):
            found = client.images(entry, node=node)
            if len(found) != 1:
                raise EvaluateError(f"case {name}: ComfyUI returned {len(found)} images for {node}, expected 1: "
                                    "see the server's log for that prompt, then run the evaluation again")
            images[node.removeprefix("save_")] = found[0]
        out.append(images)
    return out


HELDOUT_EV = re.compile(r"held-out EV (-?[0-9.]+)")


def _heldout_ev(entry: dict) -> float | None:
    """The held-out EV SSAE Train reported on its node (None when the set had no test split)."""
    texts = entry.get("outputs", {}).get("train", {}).get("text", [])
    found = [HELDOUT_EV.search(t) for t in texts if isinstance(t, str)]
    return next((float(m.group(1)) for m in found if m), None)


def evaluate(client: ComfyClient, built: BuiltWorld, out: str | Path | None = None,
             settings: EvaluateSettings = EvaluateSettings(), progress: bool = False) -> dict:
    """The whole evaluation through the server at `client`; returns the report and writes JSON, Markdown and the
    grid to `out` (default DIR/evaluate)."""
    out = Path(out) if out is not None else built.root / "evaluate"
    world, names, sampling, spec = built.world, built.comfy_names, built.recipe.sampling, built.world.spec
    tag = f"world_{built.hashes['world'][:8]}"
    vocabulary = json.dumps(world.vocabulary.categories)
    heldout = "; ".join(" + ".join(p) for p in world.heldout_pairs)
    n_prompts = training_prompts(built, settings.prompts)
    seen = ssae_training_combinations(world.vocabulary, world.heldout_pairs, n_prompts)
    categories = world.vocabulary.categories
    cases = {"single": edit_cases(seen, world.train_combinations, categories, settings.cases, 1, settings.seed),
             "double": edit_cases(seen, world.train_combinations, categories, settings.double_cases, 2,
                                  settings.seed, "double"),
             "into_heldout": edit_cases(seen, world.test_combinations, categories, settings.heldout_cases, 1,
                                        settings.seed, "into_heldout")}
    swept = [i for i, c in enumerate(cases["single"]) if c.categories == ("colour",)][:settings.sweep_cases]

    t0 = time.perf_counter()
    sets = {"conditioning": f"{tag}_conditioning", "block": f"{tag}_{settings.block_site.replace('.', '_')}"}
    client.run(capture_conditioning_graph(names, vocabulary, n_prompts, heldout, sets["conditioning"]), 3600)
    for i in range(settings.block_seeds):
        client.run(capture_block_graph(names, vocabulary, n_prompts, heldout, sets["block"], settings.block_site,
                                       settings.seed + i, sampling, "replace" if i == 0 else "append"), 7200)
    files, heldout_ev = {}, {}
    for site, features in sets.items():
        for method in METHODS:
            name = f"{features}_{method}"
            heldout_ev.setdefault(site, {})[method] = _heldout_ev(client.run(train_graph(features, method, name), 3600))
            files[(site, method)] = name + ".safetensors"
    capture_seconds = time.perf_counter() - t0

    graphs, labels = [], []
    for kind in KINDS:
        for i, c in enumerate(cases[kind]):
            labels.append(f"{kind}_{i:04d}")
            graphs.append(edit_graph(names, files, world.prompt(c.combo), c, sampling, f"{tag}_eval/{labels[-1]}",
                                     settings, world.prompt(c.edited), identity=kind == "single" and
                                     i < settings.identity_cases, sweep=kind == "single" and i in swept))
    t = time.perf_counter()
    entries = client.run_all(graphs, "edits" if progress else None, timeout=1800)
    seconds_per_image = (time.perf_counter() - t) / sum(len([k for k in g if k.startswith("save_")]) for g in graphs)
    images = graph_images(client, graphs, entries, labels)
    by_kind, start = {}, 0
    for kind in KINDS:
        by_kind[kind], start = images[start:start + len(cases[kind])], start + len(cases[kind])

    held = compose_cases(world.test_combinations, settings.compose_seeds, settings.compose_cases, settings.seed)
    compose_files = {f"compose_{m}": files[("conditioning", m)] for m in METHODS}
    compose_names = [f"compose_{i:04d}" for i in range(len(held))]
    compose_graphs = [compose_graph(names, compose_files, world.prompt(c), c, s, sampling, f"{tag}_eval/{n}")
                      for (c, s), n in zip(held, compose_names)]
    entries = client.run_all(compose_graphs, "compositions" if progress else None, timeout=1800)
    compose_images = graph_images(client, compose_graphs, entries, compose_names)
    composed = {k: shows([read_image(imgs[k], spec) for imgs in compose_images], [c for c, _ in held])
                for k in ["prompt", *compose_files]}

    report = _report(built, settings, cases, by_kind, swept, composed, held, heldout_ev, n_prompts,
                     len(uncovered(seen, world.test_combinations)))
    report["seconds"] = {"capture_and_train": capture_seconds, "per_image": seconds_per_image}
    report["markdown"] = _table(report) + "\n\n" + _method_table(report) + "\n\n" + _sweep_table(report)
    out.mkdir(parents=True, exist_ok=True)
    save_png(_grid(by_kind, cases, compose_images, held, swept, spec, settings), out / "evaluate_grid.png")
    atomic_write_text(json.dumps(report, indent=1) + "\n", out / "evaluate.json")
    atomic_write_text(report["markdown"] + "\n", out / "evaluate.md")
    return report


def _report(built: BuiltWorld, settings: EvaluateSettings, cases: dict, images: dict, swept: list[int],
            composed: dict, held: list, heldout_ev: dict, n_prompts: int, n_uncovered: int) -> dict:
    """The report's JSON object (less `seconds` and `markdown`) from the cases' images."""
    world, spec = built.world, built.world.spec
    read = {kind: [{k: read_image(img, spec) for k, img in imgs.items()} for imgs in images[kind]] for kind in KINDS}

    def column(kind: str, key: str) -> tuple[list, list]:
        return [imgs[key] for imgs in images[kind]], [r[key] for r in read[kind]]

    scores, pixels = {}, {}
    for kind in KINDS:
        base_img, base = column(kind, "base")
        keys = {"prompt": "prompt_edit"} | {f"{site}/{m}": image_key(site, m) for site in SITES for m in METHODS}
        for label, key in keys.items():
            if not cases[kind]:
                continue
            img, rd = column(kind, key)
            scores.setdefault(kind, {})[label] = edit_scores(base, rd, cases[kind]) | {
                "agrees_with_prompt": float(np.mean([e.concepts == p.concepts
                                                     for e, p in zip(rd, column(kind, "prompt_edit")[1])]))}
            pixels.setdefault(kind, {})[label] = pixel_preservation(base_img, img, base, rd, cases[kind])
    nested = lambda d: {"prompt": d["prompt"], **{site: {m: d[f"{site}/{m}"] for m in METHODS}  # noqa: E731
                                                  for site in SITES}}
    single = scores["single"]
    base_ok = shows([r["base"] for r in read["single"]], [c.combo for c in cases["single"]])
    identity_images = images["single"][:settings.identity_cases]
    identical = {site: all(np.array_equal(imgs[image_key(site, "default", 0.0)], imgs["base"])
                           for imgs in identity_images) if identity_images else None for site in SITES}
    sweep_cases = [cases["single"][i] for i in swept]
    sweep = {"strengths": list(settings.sweep_strengths), "n": len(swept)}
    if swept:
        for m in METHODS:
            by_strength = {s: [read["single"][i][image_key("conditioning", m, s)] for i in swept]
                           for s in settings.sweep_strengths}
            sweep[m] = sweep_scores(by_strength, sweep_cases) | {"zero_identical": all(
                np.array_equal(images["single"][i][image_key("conditioning", m, 0.0)], images["single"][i]["base"])
                for i in swept)}
    compose = {m: float(np.mean(composed[f"compose_{m}"])) for m in METHODS} | {
        "prompt": float(np.mean(composed["prompt"]))}
    return {
        "world": built.hashes["world"], "world_name": spec.name,
        "base_accuracy": float(np.mean(base_ok)),
        "edit_success": {site: single[f"{site}/default"]["success"] for site in SITES},
        "preservation": {site: single[f"{site}/default"]["preservation"] for site in SITES},
        "strength_zero_identical": identical,
        "compose_accuracy": compose,
        "compose_vs_prompt": {m: compose[m] / compose["prompt"] if compose["prompt"] else None for m in METHODS},
        "compose_accuracy_per_pair": {" + ".join(p): {k.removeprefix("compose_"): float(np.mean(
            [ok for ok, (c, _) in zip(v, held) if set(p) <= set(c)])) for k, v in composed.items()}
            for p in world.heldout_pairs if any(set(p) <= set(c) for c, _ in held)},
        "baselines": {"prompt_edit": single["prompt"],
                      "mean_difference": {"conditioning": single[f"conditioning/{BASELINE}"],
                                          "block": single[f"block/{BASELINE}"],
                                          "compose": compose[BASELINE]}},
        "edits": {site: single[f"{site}/default"] for site in SITES},
        "single_edits": nested(single),
        "double_edits": nested(scores["double"]) if "double" in scores else None,
        "edit_into_heldout": nested(scores["into_heldout"]) if "into_heldout" in scores else None,
        "pixel_preservation": {kind: nested(pixels[kind]) for kind in pixels},
        "strength_sweep": sweep,
        "heldout_ev": heldout_ev,
        "heldout_pairs": [list(p) for p in world.heldout_pairs],
        "prompts": n_prompts, "uncovered_rows": n_uncovered,
        "cases": len(cases["single"]), "double_cases": len(cases["double"]),
        "heldout_cases": len(cases["into_heldout"]), "compose_cases": len(held),
        "identity_cases": len(identity_images),
        "settings": asdict(settings), "sampling": asdict(built.recipe.sampling),
    }


def _fmt(value) -> str | float:
    return "–" if value is None else value


def _table(r: dict) -> str:
    """The first world's table: the default SSAE's single edits and compositions against the two baselines."""
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


def _method_table(r: dict) -> str:
    """Per method and site: edits of each kind (success / preservation), the pixel preservation of edits into
    held-out mixes, held-out compositions and the held-out EV of the SSAE that made them."""
    def pair(kind: str, site: str | None, m: str) -> str:
        s = r[kind] and (r[kind]["prompt"] if site is None else r[kind][site][m])
        return "–" if not s else f"{s['success']:.3f} / {s['preservation']:.3f}"

    def pixel(site: str | None, m: str, key: str) -> str | float:
        p = r["pixel_preservation"].get("into_heldout")
        return "–" if not p else _fmt((p["prompt"] if site is None else p[site][m])[key])

    rows = [["prompt", "–", *(pair(k, None, "") for k in ("single_edits", "double_edits", "edit_into_heldout")),
             pixel(None, "", "mask_iou"), pixel(None, "", "background_error"), r["compose_accuracy"]["prompt"], "–"]]
    for site in SITES:
        for m in METHODS:
            rows.append([m, r["settings"]["block_site"] if site == "block" else site,
                         *(pair(k, site, m) for k in ("single_edits", "double_edits", "edit_into_heldout")),
                         pixel(site, m, "mask_iou"), pixel(site, m, "background_error"),
                         r["compose_accuracy"][m] if site == "conditioning" else "–",
                         _fmt(r["heldout_ev"].get(site, {}).get(m))])
    header = ["method", "site", f"single edit ({r['cases']})", f"double edit ({r['double_cases']})",
              f"edit into held-out ({r['heldout_cases']})", "its mask IoU", "its background error",
              f"held-out mix ({r['compose_cases']})", "held-out EV"]
    return ("Edits: success / preservation. Mask IoU and background error (0-255) of the edits into held-out "
            "mixes, where those are not edited.\n\n" + markdown_table(header, rows))


def _sweep_table(r: dict) -> str:
    """The strength sweep of colour edits at the conditioning: share reading the new colour per strength."""
    s = r["strength_sweep"]
    if not s["n"]:
        return "No strength sweep (no colour edit among the single edits)."
    rows = [[m, *s[m]["success"], s[m]["monotonic"], s[m]["zero_identical"]] for m in METHODS]
    return (f"Strength sweep ({s['n']} colour edits at the conditioning): share reading the new colour.\n\n"
            + markdown_table(["method", *(f"{x:g}" for x in s["strengths"]), "rises monotonically",
                              "strength 0 = unedited"], rows))


def _grid(images: dict, cases: dict, compose_images: list[dict], held: list, swept: list[int], spec,
          settings: EvaluateSettings, columns: int = 8) -> np.ndarray:
    """Rows: edits into held-out mixes (the prompt; the target prompted; the edit at the conditioning by default,
    additive and mean-difference; the default edit at the block); held-out mixes (prompted; composed by default,
    additive and mean-difference); one colour edit by default at each sweep strength. Frames: green where the
    image shows what it should (the edited mix, or the composed one), red where not, grey for the prompts."""
    rows: list[list[tuple[np.ndarray, bool | None]]] = []
    kind = "into_heldout" if cases["into_heldout"] else "single"
    picked = list(zip(images[kind], cases[kind]))[:columns]
    rows.append([(imgs["base"], None) for imgs, _ in picked])
    for key in ("prompt_edit", *(image_key("conditioning", m) for m in METHODS), image_key("block", "default")):
        rows.append([(imgs[key], shows([read_image(imgs[key], spec)], [c.edited])[0]) for imgs, c in picked])
    step = max(1, len(held) // columns)
    mixes = list(zip(compose_images, held))[::step][:columns]
    for key in ("prompt", *(f"compose_{m}" for m in METHODS)):
        rows.append([(imgs[key], shows([read_image(imgs[key], spec)], [c])[0]) for imgs, (c, _) in mixes])
    if swept:
        i = swept[0]
        c = cases["single"][i]
        rows.append([(images["single"][i][image_key("conditioning", "default", s)],
                      read_image(images["single"][i][image_key("conditioning", "default", s)], spec).concepts["colour"]
                      == c.new[0]) for s in settings.sweep_strengths][:columns])
    width = max(len(r) for r in rows)
    blank = np.full_like(rows[0][0][0], 255)
    cells = [cell for row in rows for cell in row + [(blank, None)] * (width - len(row))]
    return image_grid([img for img, _ in cells], width, [ok for _, ok in cells])
