"""A stand-in ComfyUI for the world's evaluation and block map: every edit and composition does exactly what its
graph asks, so every measure reads perfect and a wrong measure shows."""
from __future__ import annotations

import json
import re

from ssae.world.render import render
from ssae.world.scene import random_scene


class PerfectComfy:
    """A stand-in server whose every edit and composition does exactly what it asks: each image is the render of
    the combination its graph means (the prompt, the edited prompt, the swap at strength > 0, the composed mix)."""

    def __init__(self, spec):
        self.spec, self.vocab = spec, spec.vocabulary()
        self.files: dict[str, str] = {}  # SSAE files saved, by name
        self.maps: dict[str, bytes] = {}  # SSAE Block Map tables written, by file name

    def run(self, graph, timeout=0):
        text = ["trained default on 10 samples, held-out EV 0.9000"] if "train" in graph else []
        if "save" in graph:
            name = graph["save"]["inputs"]["filename"]
            self.files[name] = re.sub(r".*joint_blocks_(\d+)_(\w+)$", r"joint_blocks.\1.\2", name)
        return {"outputs": {"train": {"text": text}}}

    def run_all(self, graphs, progress=None, timeout=0):
        return [{"graph": g, "outputs": {k: {"images": [self._map(g[k]["inputs"]) if k == "map" else {}]}
                                         for k in g if k.startswith("save_") or k == "map"}} for g in graphs]

    def _map(self, inputs: dict) -> dict:
        """SSAE Block Map's table for a perfect model: every swap at every site it maps moves the sample by 1 and
        lands on the edited prompt's sample."""
        pattern = inputs["ssae_files"].removesuffix("*")
        sites = [site for name, site in self.files.items() if name.startswith(pattern)]
        combo = self.vocab.parse_prompt(inputs["context"])
        per = {c: 1.0 for c, options in self.vocab.categories.items() if any(x in options for x in combo)}
        swaps = sum(min(inputs["swaps_per_category"], len(o) - 1) for o in self.vocab.categories.values())
        folder, _, name = inputs["filename_prefix"].rpartition("/")
        self.maps[name + ".json"] = json.dumps({"cases": swaps, "sites": {
            s: {"movement": 1.0, "movement_per_category": per, "toward_prompt": 1.0, "toward_prompt_per_category": per}
            for s in sites}}).encode()
        return {"filename": name + ".png", "subfolder": folder, "type": "output"}

    def file(self, locator):
        return self.maps[locator["filename"]]

    def images(self, entry, node=None):
        g, key = entry["graph"], node.removeprefix("save_")
        combo = self.vocab.parse_prompt(g["positive"]["inputs"]["text"])
        if key == "prompt_edit":
            combo = self.vocab.parse_prompt(g["edited"]["inputs"]["text"])
        edit = g.get(f"apply_{key}") or g.get(f"patch_{key}")
        if edit is not None:
            choice = json.loads(g[edit["inputs"]["concepts"][0]]["inputs"]["concepts"])
            if "conditioning" not in edit["inputs"] and edit["class_type"] == "SSAEApplyConditioning":
                combo = list(choice["add"])  # composed from the concepts alone
            elif edit["inputs"]["strength"] > 0:
                combo = [next(iter(choice["add"])) if c in choice["remove"] and len(choice["remove"]) == 1 else
                         dict(zip(choice["remove"], choice["add"])).get(c, c) for c in combo]
        seed = g[f"sample_{key}"]["inputs"]["seed"]
        return [render(random_scene(tuple(combo), seed, self.spec), self.spec)]
