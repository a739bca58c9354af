"""Block-edit variants on a built world, sampled in this process by ComfyUI's own SD3 path, read in pixels.

Run by ComfyUI's interpreter from its checkout (it imports ComfyUI), one torch thread:

    cd /tmp/comfyui && PYTHONPATH=STUBS:WORKTREE OMP_NUM_THREADS=1 nice -n 5 /tmp/comfyvenv/bin/python \
        WORKTREE/benchmarks/block_variants.py WORLD OUT --variants VARIANTS.json --cases 64 --case-seed 1

It captures every joint block's text-stream input and image-stream output over the world's prompt set (two
sampling seeds, as `evaluate` does), trains the `default` SSAE on each site (cached in OUT/ssae), then for
each variant samples the edit cases (`ssae.world.cases.edit_cases`, seed --case-seed) in batches, from the
same seeds as their unedited images, and scores them as `evaluate` does, adding the object-mask IoU where
neither shape nor position is swapped and the share of objects broken into pieces. A variant (JSON object):
  {"name": "...", "edits": [{"block": 0, "stream": "txt", "position": "input", "mode": "kv", "ssae": "txt_in.0"}],
   "strength": 2.0, "norm": "fixed", "window": [0.0, 1.0], "windows": {"shape": [0.0, 0.5]}}
`ssae` names the site whose SSAE makes the edit (txt_in.<i>: block i's text input; img_out.<i>: block i's image
output, token mean; null: none, with "vec": true the modulation-vector edit alone); "vec": true adds the edit of
the `vec` SSAE (the blocks' modulation vector) at that block; `windows` overrides the schedule window per swapped
category; {"name": ..., "prompt": true} samples the edited prompt instead (the baseline).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from comfy.cli_args import args as comfy_args

comfy_args.cpu = True
import comfy.sample  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from utils.extra_config import load_extra_path_config  # noqa: E402

import nodes  # noqa: E402
from ssae import SSAE  # noqa: E402
from ssae.block_edit import BlockEdit, stream_scale  # noqa: E402
from ssae.capture import CaptureBuffer  # noqa: E402
from ssae.concepts import ConceptChoice  # noqa: E402
from ssae.hooks import cfg_rows  # noqa: E402
from ssae.store import load_features, save_features  # noqa: E402
from ssae.train import PRESETS, train, with_overrides  # noqa: E402
from ssae.world.build import load_world  # noqa: E402
from ssae.world.cases import edit_cases  # noqa: E402
from ssae.world.measure import fragments, object_mask, read_image  # noqa: E402
from ssae.world.scene import CONCEPT  # noqa: E402
from ssae.world.scores import edit_scores, mask_iou  # noqa: E402


class World:
    """The built world loaded through ComfyUI's loaders, with every prompt's conditioning."""

    def __init__(self, root: str):
        self.built = load_world(root)
        load_extra_path_config(str(Path(root) / "extra_model_paths.yaml"))
        names = self.built.comfy_names
        (self.model,) = nodes.UNETLoader().load_unet(names["unet_name"], "default")
        (self.clip,) = nodes.CLIPLoader().load_clip(names["clip_name"], type="sd3")
        (self.vae,) = nodes.VAELoader().load_vae(names["vae_name"])
        self.depth = len(self.model.get_model_object("diffusion_model").joint_blocks)
        self.sampling = self.built.recipe.sampling
        self._cond: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def cond(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        if prompt not in self._cond:
            ((c, extra),) = nodes.CLIPTextEncode().encode(self.clip, prompt)[0]
            self._cond[prompt] = c, extra["pooled_output"]
        return self._cond[prompt]

    def cache_conds(self, path: Path) -> None:
        """Encode every prompt of the world (and the empty one) once, kept in `path` for later runs."""
        from safetensors.torch import load_file, save_file
        world = self.built.world
        prompts = [""] + [world.prompt(c) for c in world.combinations]
        if path.exists():
            t = load_file(str(path))
            self._cond = {p: (t[f"c{i}"], t[f"p{i}"]) for i, p in enumerate(prompts)}
            return
        for p in prompts:
            self.cond(p)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({f"{k}{i}": self._cond[p][j].contiguous() for i, p in enumerate(prompts)
                   for j, k in enumerate("cp")}, str(path))

    @torch.no_grad()
    def sample(self, model, prompts: list[str], seeds: list[int]) -> np.ndarray:
        """uint8 images [N, 64, 64, 3] as KSampler -> VAEDecode -> SaveImage make them, one batch."""
        conds = [self.cond(p) for p in prompts]
        positive = [[torch.cat([c for c, _ in conds]), {"pooled_output": torch.cat([p for _, p in conds])}]]
        nc, npool = self.cond("")
        negative = [[nc, {"pooled_output": npool}]]
        latent = comfy.sample.fix_empty_latent_channels(model, torch.zeros(1, 16, 8, 8))
        noise = torch.cat([comfy.sample.prepare_noise(latent, s) for s in seeds])
        s = self.sampling
        out = comfy.sample.sample(model, noise, s.steps, s.cfg, s.sampler, s.scheduler, positive, negative,
                                  latent.expand(len(seeds), -1, -1, -1).contiguous(), denoise=1.0,
                                  disable_pbar=True, seed=seeds[0])
        images = self.vae.decode(out)
        return np.clip(255.0 * images.cpu().numpy(), 0, 255).astype(np.uint8)

    def sigma(self, percent: float) -> float:
        return float(self.model.get_model_object("model_sampling").percent_to_sigma(percent))


# -- capture and training ---------------------------------------------------------------------------

class Recorder:
    """Per block: its text input and its image output (token mean), positive rows, averaged over steps."""

    def __init__(self):
        self.txt_in, self.img_out, self.vec = CaptureBuffer("none"), CaptureBuffer("mean"), CaptureBuffer("mean")

    def __call__(self, args, extra):
        rows = cfg_rows(args["transformer_options"].get("cond_or_uncond"), args["txt"].shape[0], "positive")
        rows = slice(None) if rows is None else rows
        self.txt_in.record(args["txt"][rows])
        self.vec.record(args["vec"][rows][:, None])
        out = extra["original_block"](args)
        self.img_out.record(out["img"][rows])
        return out


def trained_ssaes(w: World, out: Path, seeds: int = 2) -> dict[str, SSAE]:
    """The default SSAE of every site, captured over every combination at `seeds` sampling seeds (cached)."""
    folder = out / "ssae"
    sites = [f"txt_in.{i}" for i in range(w.depth)] + [f"img_out.{i}" for i in range(w.depth)] + ["vec"]
    if all((folder / f"{s}.safetensors").exists() for s in sites):
        return {s: SSAE.load(folder / f"{s}.safetensors") for s in sites}
    world = w.built.world
    combos = list(world.combinations)
    prompts = [world.prompt(c) for c in combos]
    test = {c for c in world.test_combinations}
    feats: dict[str, list[torch.Tensor]] = {s: [] for s in sites}
    for seed in range(seeds):
        m = w.model.clone()
        recorders = [Recorder() for _ in range(w.depth)]
        for i, r in enumerate(recorders):
            m.set_model_patch_replace(r, "dit", "double_block", i)
        t = time.perf_counter()
        w.sample(m, prompts, [seed] * len(prompts))
        print(f"capture seed {seed}: {time.perf_counter() - t:.1f}s", flush=True)
        for i, r in enumerate(recorders):
            feats[f"txt_in.{i}"].append(r.txt_in.take()[0])
            feats[f"img_out.{i}"].append(r.img_out.take()[0])
            vec = r.vec.take()[0]
            if i == 0:
                feats["vec"].append(vec)
    folder.mkdir(parents=True, exist_ok=True)
    hidden = feats["img_out.0"][0].shape[1]
    result = {}
    for s, parts in feats.items():
        x = torch.cat(parts)
        shape = [hidden] if s.startswith(("img", "vec")) else [x.shape[1] // hidden, hidden]
        path = save_features(folder / f"{s}.features.safetensors", x, world.vocabulary,
                             [list(c) for c in combos] * seeds,
                             ["test" if c in test else "train" for c in combos] * seeds, prompts * seeds, s, shape)
        t = time.perf_counter()
        r = train(load_features(path), with_overrides(PRESETS["default"], seed=0, device="cpu"))
        print(f"train {s}: {time.perf_counter() - t:.1f}s", flush=True)
        r.ssae.save(folder / f"{s}.safetensors")
        result[s] = r.ssae
    return result


# -- variants -----------------------------------------------------------------------------------------

class RowEdit(BlockEdit):
    """A BlockEdit with one edit [B, L, C] or [B, C], one reference norm, one `vec` edit and one sigma window per
    positive row (each case its own), made fresh each step rather than prepared once per batch layout."""

    def __init__(self, edits: torch.Tensor | None, references: torch.Tensor | None, windows: torch.Tensor,
                 strength: float, norm: str, vec_edits: torch.Tensor | None, **kw):
        super().__init__(vec_edit=vec_edits, vec_strength=strength, **kw)
        self.edits, self.references, self.windows, self.strength, self.norm = edits, references, windows, strength, norm

    def _rows_on(self, n: int, p) -> tuple[torch.Tensor, torch.Tensor]:
        rows = cfg_rows(p.chunks, n, self.apply_to)
        idx = torch.arange(n) if rows is None else rows.nonzero().flatten()
        return idx, ((self.windows[:, 1] <= p.sigma) & (p.sigma <= self.windows[:, 0]))

    def _vec_addend(self, vec, p):
        idx, on = self._rows_on(vec.shape[0], p)
        add = torch.zeros_like(vec)
        add[idx] = self.strength * self.vec_edit.to(vec.dtype) * on[:, None].to(vec.dtype)
        return add

    def _touch(self, streams, p):
        x = streams[self.stream]
        if self.edits is None:
            return streams
        idx, on = self._rows_on(x.shape[0], p)
        d = self.edits.to(x.dtype)
        pooled = d.ndim == 2
        d = d[:, None] if pooled else torch.cat([d, d.new_zeros(d.shape[0], max(x.shape[1] - d.shape[1], 0),
                                                                 d.shape[2])], 1)[:, :x.shape[1]]
        d = self.strength * d * on[:, None, None].to(x.dtype)
        if self.norm == "matched":
            d = d * torch.cat([stream_scale(x[i:i + 1], self.references[k], pooled)
                               for k, i in enumerate(idx.tolist())])
        add = torch.zeros_like(x)
        add[idx] = d
        return {**streams, self.stream: x + add}


def case_edits(ssae: SSAE, cases, prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """Per case: the edit [L, C] or [C] (made for its prompt) and the norm of its prompt's features per row."""
    deltas, refs = [], []
    for c, p in zip(cases, prompts):
        choice = ConceptChoice.parse({"add": dict.fromkeys(c.new, 1.0), "remove": dict.fromkeys(c.old, 1.0)}, "edit")
        delta = choice.delta(ssae, p).features
        deltas.append(ssae.unflatten(delta))
        refs.append(ssae.unflatten(ssae.reconstruct([list(c.combo)])[0]).norm(dim=-1))
    return torch.stack(deltas), torch.stack(refs)


def run_variant(w: World, ssaes: dict[str, SSAE], v: dict, cases, base: np.ndarray, batch: int) -> dict:
    world = w.built.world
    prompts = [world.prompt(c.combo) for c in cases]
    images = []
    for lo in range(0, len(cases), batch):
        cs, ps = cases[lo:lo + batch], prompts[lo:lo + batch]
        if v.get("prompt"):  # the baseline: the edited prompt, same seed
            images.append(w.sample(w.model, [world.prompt(c.edited) for c in cs], [c.seed for c in cs]))
            continue
        windows = torch.tensor([[w.sigma(p) for p in v.get("windows", {}).get(c.category, v.get("window", [0, 1]))]
                                for c in cs])
        m = w.model.clone()
        for e in v["edits"]:
            if e["ssae"] is None:  # the modulation vector alone
                deltas, refs = None, None
            else:
                deltas, refs = case_edits(ssaes[e["ssae"]], cs, ps)
            vec = case_edits(ssaes["vec"], cs, ps)[0] if e.get("vec") else None
            key = ("double_block", e["block"])
            previous = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {}).get(key)
            hook = RowEdit(deltas, refs, windows, v["strength"], v.get("norm", "fixed"), vec, stream=e["stream"],
                           position=e["position"], mode=e.get("mode", "residual"), previous=previous)
            m.set_model_patch_replace(hook, "dit", "double_block", e["block"])
        images.append(w.sample(m, ps, [c.seed for c in cs]))
    images = np.concatenate(images)
    return score(base, images, cases) | {"images": images}


def score(base: np.ndarray, images: np.ndarray, cases) -> dict:
    rb, re = [read_image(i) for i in base], [read_image(i) for i in images]
    s = edit_scores(rb, re, cases)
    kept = {k: float(np.mean([all(e.concepts[j] == b.concepts[j] for j in CONCEPT.categories if j != c.category)
                              for b, e, c in zip(rb, re, cases) if c.category == k]))
            for k in CONCEPT.categories if any(c.category == k for c in cases)}
    appearance = [i for i, c in enumerate(cases) if c.category not in ("shape", "position")]
    masks_b, masks_e = [object_mask(i) for i in base], [object_mask(i) for i in images]
    s["preservation_per_category"] = kept
    s["mask_iou"] = float(np.mean([mask_iou(masks_b[i], masks_e[i]) for i in appearance])) if appearance else None
    s["fragmented"] = float(np.mean([fragments(me) > 1 for mb, me in zip(masks_b, masks_e) if fragments(mb) <= 1]))
    return s


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("world")
    p.add_argument("out")
    p.add_argument("--variants", required=True, help="JSON file: a list of variants")
    p.add_argument("--cases", type=int, default=64)
    p.add_argument("--case-seed", type=int, default=1, help="1: development cases; 0: evaluate's cases")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--capture-seeds", type=int, default=2, help="sampling runs per prompt captured for the SSAEs")
    p.add_argument("--grid", default=None, help="write a PNG grid of base and variant images here")
    a = p.parse_args()
    torch.set_num_threads(1)
    out = Path(a.out)
    w = World(a.world)
    w.cache_conds(out / "conds.safetensors")
    ssaes = trained_ssaes(w, out, a.capture_seeds)
    train = w.built.world.train_combinations
    cases = edit_cases(train, train, CONCEPT.categories, a.cases, 1, a.case_seed)
    world = w.built.world
    t = time.perf_counter()
    base = np.concatenate([w.sample(w.model, [world.prompt(c.combo) for c in cases[lo:lo + a.batch]],
                                    [c.seed for c in cases[lo:lo + a.batch]]) for lo in range(0, len(cases), a.batch)])
    print(f"base: {time.perf_counter() - t:.1f}s", flush=True)
    results, rows = [], [base]
    for v in json.loads(Path(a.variants).read_text()):
        t = time.perf_counter()
        r = run_variant(w, ssaes, v, cases, base, a.batch)
        rows.append(r.pop("images"))
        r = {"variant": v, "cases": len(cases), "case_seed": a.case_seed, "seconds": time.perf_counter() - t, **r}
        results.append(r)
        print(json.dumps({"name": v["name"], "success": r["success"], "preservation": r["preservation"],
                          "per_cat": r["success_per_category"], "kept": r["preservation_per_category"],
                          "iou": r["mask_iou"], "frag": r["fragmented"]}), flush=True)
    with open(out / f"results_{Path(a.variants).stem}_seed{a.case_seed}.json", "w") as f:
        json.dump(results, f, indent=1)
    if a.grid:
        from ssae.world.figures import image_grid, save_png
        cols = min(16, len(cases))
        save_png(image_grid([img for row in rows for img in row[:cols]], cols), a.grid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
