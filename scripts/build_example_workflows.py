"""Write example_workflows/*.json (ComfyUI's UI workflow format) from compact graph specs.

Widget order comes from a running ComfyUI's /object_info, so the files match the host exactly:
    python scripts/build_example_workflows.py --url http://127.0.0.1:8188
The world_* workflows are the graphs `python -m ssae.world evaluate` queues (ssae.world.graphs), for the built
concept world (docs/WORLD.md).
"""
from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path

from ssae.world.build import COMFY_NAMES
from ssae.world.cases import EditCase
from ssae.world.evaluate import EvaluateSettings, edit_graph
from ssae.world.graphs import capture_block_graph, capture_conditioning_graph, train_graph
from ssae.world.recipe import WorldRecipe
from ssae.world.scene import make_world

OUT = Path(__file__).resolve().parents[1] / "example_workflows"
CKPT = "sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors"
PORTRAIT = ("A blond girl, with blue eyes, sitting at a cafe, wearing a red t-shit, and a hat, holding a coffee, "
            "looking to the left")
COND_SET, COND_SSAE = "portraits_conditioning", "sd35m_conditioning_portraits"
BLOCK_SET, BLOCK_SSAE = "portraits_block0_txt_in", "sd35m_block0_txt_in_portraits"
"""The loop's names: build_training_set writes COND_SET, train_ssae turns it into COND_SSAE, which the compose
and edit workflows load; capture_block_features -> BLOCK_SET -> train_ssae_block -> BLOCK_SSAE likewise."""
WORLD_COND, WORLD_BLOCK = "world_conditioning", "world_joint_blocks_0_txt_in"
"""The world loop's feature sets, and the SSAEs trained on them (same names)."""
MAP_SITES = [f"joint_blocks.{i}.{s}" for i in (0, 6, 12, 18) for s in ("txt_in", "img")]
"""The sites the block-map workflows capture, train and map on SD3.5 Medium (24 joint blocks)."""
MAP_PREFIX = "sd35m_map_portraits"


def map_name(site: str) -> str:
    """The feature set and the SSAE of one mapped site: sd35m_map_portraits_joint_blocks_6_img."""
    return f"{MAP_PREFIX}_{site.replace('.', '_')}"


SAMPLER = {"seed": 42, "steps": 28, "cfg": 4.5, "sampler_name": "euler", "scheduler": "sgm_uniform", "denoise": 1.0}


def sd35_tail(positive, model=("ckpt", 0)) -> dict:
    """Negative prompt, latent, sampler, decode and save: the end every image workflow shares."""
    return {
        "negative": ("CLIPTextEncode", {"text": "", "clip": ("ckpt", 1)}),
        "latent": ("EmptySD3LatentImage", {"width": 1024, "height": 1024, "batch_size": 1}),
        "sampler": ("KSampler", {**SAMPLER, "model": model, "positive": positive, "negative": ("negative", 0),
                                 "latent_image": ("latent", 0)}),
        "decode": ("VAEDecode", {"samples": ("sampler", 0), "vae": ("ckpt", 2)}),
        "save": ("SaveImage", {"images": ("decode", 0), "filename_prefix": "ssae"}),
    }


PORTRAITS = {
    "compose_unseen_mix": {
        "ckpt": ("CheckpointLoaderSimple", {"ckpt_name": CKPT}),
        "ssae": ("SSAELoader", {"ssae_name": COND_SSAE + ".safetensors"}),
        "mix": ("SSAEConceptVector", {"ssae": ("ssae", 0), "mode": "compose", "concepts": json.dumps(
            {"mode": "compose", "add": {"A brunette girl": 1.0, "on horseback in the forest": 1.0,
                                        "and a baseball cap": 1.0, "holding a coffee": 1.0}, "remove": {}})}),
        "compose": ("SSAEApplyConditioning", {"concepts": ("mix", 0), "strength": 1.0}),
        **sd35_tail(("compose", 0)),
    },
    "edit_concept_conditioning": {
        "ckpt": ("CheckpointLoaderSimple", {"ckpt_name": CKPT}),
        "prompt": ("CLIPTextEncode", {"text": PORTRAIT, "clip": ("ckpt", 1)}),
        "ssae": ("SSAELoader", {"ssae_name": COND_SSAE + ".safetensors"}),
        "swap": ("SSAEConceptVector", {"ssae": ("ssae", 0), "mode": "edit", "concepts": json.dumps(
            {"mode": "edit", "add": {"A brunette girl": 1.0}, "remove": {"A blond girl": 1.0}})}),
        "edit": ("SSAEApplyConditioning", {"concepts": ("swap", 0), "strength": 1.0, "conditioning": ("prompt", 0)}),
        **sd35_tail(("edit", 0)),
    },
    "edit_concept_joint_block": {
        "ckpt": ("CheckpointLoaderSimple", {"ckpt_name": CKPT}),
        "prompt": ("CLIPTextEncode", {"text": PORTRAIT, "clip": ("ckpt", 1)}),
        "ssae": ("SSAELoader", {"ssae_name": BLOCK_SSAE + ".safetensors"}),
        "swap": ("SSAEConceptVector", {"ssae": ("ssae", 0), "mode": "edit", "concepts": json.dumps(
            {"mode": "edit", "add": {"wearing a black t-shit": 1.0}, "remove": {"wearing a red t-shit": 1.0}})}),
        "patch": ("SSAEPatchModel", {"model": ("ckpt", 0), "concepts": ("swap", 0), "strength": 1.0,
                                     "start_percent": 0.0, "end_percent": 1.0, "apply_to": "positive", "site": "",
                                     "context": PORTRAIT, "mode": "attention keys/values",
                                     "blocks": "this site and every later block", "scale": "fixed"}),
        **sd35_tail(("prompt", 0), model=("patch", 0)),
    },
    "build_training_set": {
        "ckpt": ("CheckpointLoaderSimple", {"ckpt_name": CKPT}),
        "prompts": ("SSAEPromptSet", {"vocabulary": "", "prompts": 1500, "seed": 0, "heldout_pairs": 4, "heldout": ""}),
        "encode": ("CLIPTextEncode", {"text": ("prompts", 0), "clip": ("ckpt", 1)}),
        "capture": ("SSAECaptureConditioning", {"conditioning": ("encode", 0), "sample": ("prompts", 1)}),
        "store": ("SSAESaveFeatures", {"features": ("capture", 0), "name": COND_SET, "split": "auto",
                                       "if_exists": "replace"}),
    },
    "train_ssae": {
        "train": ("SSAETrain", {"features": COND_SET, "preset": "default", "epochs": 0, "seed": 0,
                                "device": "auto"}),
        "save": ("SSAESave", {"ssae": ("train", 0), "filename": COND_SSAE}),
        "curve": ("PreviewImage", {"images": ("train", 1)}),
    },
    "capture_block_features": {
        "ckpt": ("CheckpointLoaderSimple", {"ckpt_name": CKPT}),
        "prompts": ("SSAEPromptSet", {"vocabulary": "", "prompts": 300, "seed": 0, "heldout_pairs": 4, "heldout": ""}),
        "encode": ("CLIPTextEncode", {"text": ("prompts", 0), "clip": ("ckpt", 1)}),
        "capture": ("SSAECaptureFeatures", {"model": ("ckpt", 0), "site": "joint_blocks.0.txt_in", "labels": "",
                                            "vocabulary": "", "start_percent": 0.0, "end_percent": 1.0,
                                            "steps": "mean", "tokens": "auto", "sample": ("prompts", 1)}),
        **{k: v for k, v in sd35_tail(("encode", 0), model=("capture", 0)).items() if k not in ("decode", "save")},
        "store": ("SSAESaveFeatures", {"features": ("capture", 1), "samples": ("sampler", 0), "name": BLOCK_SET,
                                       "split": "auto", "if_exists": "replace"}),
    },
    "train_ssae_block": {
        "train": ("SSAETrain", {"features": BLOCK_SET, "preset": "default", "epochs": 0, "seed": 0,
                                "device": "auto"}),
        "save": ("SSAESave", {"ssae": ("train", 0), "filename": BLOCK_SSAE}),
        "curve": ("PreviewImage", {"images": ("train", 1)}),
    },
    "block_map_capture": {
        "ckpt": ("CheckpointLoaderSimple", {"ckpt_name": CKPT}),
        "prompts": ("SSAEPromptSet", {"vocabulary": "", "prompts": 200, "seed": 0, "heldout_pairs": 4, "heldout": ""}),
        "encode": ("CLIPTextEncode", {"text": ("prompts", 0), "clip": ("ckpt", 1)}),
        **{f"capture_{k}": ("SSAECaptureFeatures", {
            "model": ("ckpt", 0) if k == 0 else (f"capture_{k - 1}", 0), "site": site, "labels": "", "vocabulary": "",
            "start_percent": 0.0, "end_percent": 1.0, "steps": "mean", "tokens": "auto", "sample": ("prompts", 1)})
           for k, site in enumerate(MAP_SITES)},
        **{k: v for k, v in sd35_tail(("encode", 0), model=(f"capture_{len(MAP_SITES) - 1}", 0)).items()
           if k not in ("decode", "save")},
        **{f"store_{k}": ("SSAESaveFeatures", {"features": (f"capture_{k}", 1), "samples": ("sampler", 0),
                                               "name": map_name(site), "split": "auto", "if_exists": "replace"})
           for k, site in enumerate(MAP_SITES)},
    },
    "block_map_train": {
        key: node for k, site in enumerate(MAP_SITES) for key, node in (
            (f"train_{k}", ("SSAETrain", {"features": map_name(site), "preset": "default", "epochs": 0, "seed": 0,
                                          "device": "auto"})),
            (f"save_{k}", ("SSAESave", {"ssae": (f"train_{k}", 0), "filename": map_name(site)})))
    },
    "block_map": {
        "ckpt": ("CheckpointLoaderSimple", {"ckpt_name": CKPT}),
        "prompt": ("CLIPTextEncode", {"text": PORTRAIT, "clip": ("ckpt", 1)}),
        "negative": ("CLIPTextEncode", {"text": "", "clip": ("ckpt", 1)}),
        "latent": ("EmptySD3LatentImage", {"width": 1024, "height": 1024, "batch_size": 1}),
        "map": ("SSAEBlockMap", {"model": ("ckpt", 0), "positive": ("prompt", 0), "negative": ("negative", 0),
                                 "latent_image": ("latent", 0), **{k: SAMPLER[k] for k in (
                                     "seed", "steps", "cfg", "sampler_name", "scheduler")},
                                 "ssae_files": MAP_PREFIX + "_*", "context": PORTRAIT, "swaps_per_category": 1,
                                 "strength": 1.0, "filename_prefix": "ssae_block_map/sd35m_portraits",
                                 "clip": ("ckpt", 1)}),
        "decode": ("VAEDecode", {"samples": ("map", 1), "vae": ("ckpt", 2)}),
        "edited": ("PreviewImage", {"images": ("decode", 0)}),
    },
}


def from_api(graph: dict) -> dict:
    """An API-format graph (as ssae.world.graphs writes it) -> a compact spec."""
    return {key: (node["class_type"], {k: tuple(v) if isinstance(v, list) else v for k, v in node["inputs"].items()})
            for key, node in graph.items()}


def world_workflows() -> dict[str, dict]:
    """The concept world's loop: every prompt's conditioning and joint block 0's text input captured (one press
    each), both SSAEs trained (one press), then a red object made blue at both sites from one seed."""
    recipe = WorldRecipe()
    world, names = make_world(recipe.heldout_pairs, recipe.world_seed), COMFY_NAMES
    vocabulary = json.dumps(world.vocabulary.categories)
    heldout = "; ".join(" + ".join(p) for p in world.heldout_pairs)
    n, site = len(world.combinations), EvaluateSettings.block_site
    combo = ("a circle", "red", "on grey", "bottom right")
    case = EditCase(combo, ("a circle", "blue", "on grey", "bottom right"), 7, ("colour",))
    return {
        "world_build_set": from_api(capture_conditioning_graph(names, vocabulary, n, heldout, WORLD_COND)),
        "world_capture_block": from_api(capture_block_graph(names, vocabulary, n, heldout, WORLD_BLOCK, site, 0,
                                                            recipe.sampling)),
        "world_train": from_api(train_graph(WORLD_COND, "default", WORLD_COND) | {
            f"{k}_block": v | {"inputs": {n: ["train_block", x[1]] if isinstance(x, list) else x
                                          for n, x in v["inputs"].items()}}
            for k, v in train_graph(WORLD_BLOCK, "default", WORLD_BLOCK).items()}),
        "world_edit": from_api(edit_graph(names, {("conditioning", "default"): WORLD_COND + ".safetensors",
                                                  ("block", "default"): WORLD_BLOCK + ".safetensors"},
                                          world.prompt(combo), case, recipe.sampling, "world_edit",
                                          EvaluateSettings())),
    }


WORKFLOWS = PORTRAITS | world_workflows()
"""Every example workflow: name -> compact spec."""


def to_ui(spec: dict, info: dict) -> dict:
    """Compact spec {key: (class, inputs)} -> UI workflow JSON (nodes laid out in columns by depth)."""
    ids = {key: i + 1 for i, key in enumerate(spec)}
    links, nodes = [], []
    depth = {}

    def d(key):
        if key not in depth:
            srcs = [v[0] for v in spec[key][1].values() if isinstance(v, tuple)]
            depth[key] = 1 + max((d(s) for s in srcs), default=-1)
        return depth[key]

    out_links: dict[tuple[str, int], list[int]] = {}
    link_of: dict[tuple[str, str], list] = {}
    for key, (cls, inputs) in spec.items():
        for name, v in inputs.items():
            if isinstance(v, tuple):
                lid = len(links) + 1
                typ = info[spec[v[0]][0]]["output"][v[1]]
                links.append([lid, ids[v[0]], v[1], ids[key], None, typ])
                link_of[(key, name)] = links[-1]
                out_links.setdefault(v, []).append(lid)
    rows: dict[int, int] = {}  # next free y per column
    for order, (key, (cls, inputs)) in enumerate(sorted(spec.items(), key=lambda kv: d(kv[0]))):
        schema = info[cls]
        order_names = schema["input_order"].get("required", []) + schema["input_order"].get("optional", [])
        all_inputs = {**schema["input"].get("required", {}), **schema["input"].get("optional", {})}
        socket_inputs, widgets, height = [], [], 0
        for name in order_names:
            typ, opts = all_inputs[name][0], (all_inputs[name][1:] or [{}])[0]
            is_widget = isinstance(typ, list) or typ in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
            v = inputs.get(name)
            if isinstance(v, tuple) or not is_widget:
                link = link_of.get((key, name))
                if link:
                    link[4] = len(socket_inputs)
                socket_inputs.append({"name": name, "type": typ if isinstance(typ, str) else "COMBO",
                                      "link": link[0] if link else None} | ({"widget": {"name": name}} if is_widget
                                                                             else {}))
            if is_widget:  # a linked widget keeps its value too: the front end reads widgets_values by position
                widgets.append(v if v is not None and not isinstance(v, tuple) else opts.get("default"))
                height += 80 if opts.get("multiline") else 24
                if opts.get("control_after_generate", name in ("seed", "noise_seed")):
                    widgets.append("fixed")  # the front end's control widget follows its seed
                    height += 24
        col = d(key)
        y = rows.get(col, 60)
        n_outputs = len(schema["output"])
        rows_height = 40 + 22 * max(len(socket_inputs), n_outputs) + height
        size = [420, 640] if cls == "SSAEConceptVector" else [340, rows_height]  # room for the concept widget
        rows[col] = y + size[1] + 60
        nodes.append({
            "id": ids[key], "type": cls, "pos": [60 + 460 * col, y], "size": size,
            "flags": {}, "order": order, "mode": 0, "inputs": socket_inputs,
            "outputs": [{"name": n, "type": t, "links": out_links.get((key, i), []), "slot_index": i}
                        for i, (n, t) in enumerate(zip(schema["output_name"], schema["output"]))],
            "properties": {"Node name for S&R": cls}, "widgets_values": widgets,
        })
    return {"last_node_id": len(nodes), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", default="http://127.0.0.1:8188")
    a = ap.parse_args()
    with urllib.request.urlopen(a.url + "/object_info") as r:
        info = json.loads(r.read())
    OUT.mkdir(exist_ok=True)
    for name, spec in WORKFLOWS.items():
        (OUT / f"{name}.json").write_text(json.dumps(to_ui(spec, info), indent=1) + "\n")
        print("wrote", OUT / f"{name}.json")


if __name__ == "__main__":
    main()
