"""Sampling overhead of SSAE patches and capture on a real ComfyUI MMDiT (random weights).

Run with ComfyUI's interpreter:  COMFYUI_PATH=/path/to/ComfyUI $COMFYUI_PYTHON benchmarks/bench_sampling.py
Times whole sampling runs (plain, patched block, conditioning-edited, capturing), interleaved in a
rotating order and repeated, and reports the fastest per-step time of each and its overhead against
plain sampling. Run it on a quiet machine: other processes make single runs noisy.

Then measures what saving a capture costs (no ComfyUI needed for that part): the bytes one captured
sample puts on disk at SD3.5 Medium's width, and the time of one save (append + count, as
SSAESaveFeatures does) as the feature set grows.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--depths", default="2,8", help="MMDiT depths to build (hidden = 64 * depth, as SD3)")
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--maker", default=str(ROOT.parent / "shared" / "comfy-host" / "make_tiny_sd3.py"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sampling.json"))
    a = ap.parse_args()
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        sys.exit("set COMFYUI_PATH to a ComfyUI checkout and run with its python")
    sys.path.insert(0, comfy_path)
    sys.argv = [sys.argv[0], "--cpu"] if a.device == "cpu" else [sys.argv[0]]
    import comfy.options
    comfy.options.enable_args_parsing()  # as ComfyUI's main.py does, so that --cpu is honoured
    import comfy.sample
    import comfy.sd
    import torch

    from ssae.hooks import BlockHook
    from ssae.steer import CaptureBuffer, DeltaCache, edit_conditioning

    rows = []
    print("| depth | hidden | image | variant | step ms | overhead | capture bytes / sample |\n|---|---|---|---|---|---|---|")
    for depth in map(int, a.depths.split(",")):
        hidden = 64 * depth
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, a.maker, tmp, "--depth", str(depth), "--pos", str(max(16, a.size // 16))],
                           check=True, capture_output=True)
            model = comfy.sd.load_diffusion_model(os.path.join(tmp, "diffusion_models", "tiny_sd3.safetensors"))
        ctx, adm = 64, 32
        g = torch.Generator().manual_seed(0)
        cond = [[torch.randn(1, 154, ctx, generator=g), {"pooled_output": torch.randn(1, adm, generator=g)}]]
        neg = [[torch.zeros(1, 154, ctx), {"pooled_output": torch.zeros(1, adm)}]]
        latent = torch.zeros(1, 16, a.size // 8, a.size // 8)
        noise = torch.randn(latent.shape, generator=g)
        block = (depth - 1) // 2  # a middle block; the last one has no txt output

        def patched(hook: BlockHook):
            m = model.clone()
            m.set_model_patch_replace(hook, "dit", "double_block", block)
            return m

        tokens_delta, pooled_delta = torch.randn(154, ctx, generator=g), torch.randn(adm, generator=g)
        variants = {
            "plain": lambda: (model, cond),
            "patch img": lambda: (patched(BlockHook("img", edit=DeltaCache(torch.randn(hidden, generator=g)))), cond),
            "patch txt": lambda: (patched(BlockHook("txt", edit=DeltaCache(torch.randn(154, hidden, generator=g)))), cond),
            "conditioning edit": lambda: (model, [[*edit_conditioning(cond[0][0], cond[0][1]["pooled_output"],
                                                                    tokens_delta, pooled_delta, 1.0)[:1],
                                                   cond[0][1]]]),
            "capture img": lambda: (patched(BlockHook("img", capture=CaptureBuffer("mean"))), cond),
            "capture txt": lambda: (patched(BlockHook("txt", capture=CaptureBuffer("none"))), cond),
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        names = list(variants)
        for r in range(a.repeats + 1):
            for name in names[r % len(names):] + names[:r % len(names)]:  # rotate: no variant always runs first
                make = variants[name]
                t = time.perf_counter()
                m, c = make()  # building the patch (delta on the right device) is part of the cost
                comfy.sample.sample(m, noise, a.steps, 2.0, "euler", "simple", c, neg, latent, seed=0,
                                    disable_pbar=True)
                if r:  # the first round warms up
                    times[name].append((time.perf_counter() - t) / a.steps)
        plain = min(times["plain"])  # the least disturbed run of each: other processes only ever add time
        for name, ts in times.items():
            med = min(ts)
            per_sample = {"capture img": hidden * 4, "capture txt": 154 * hidden * 4}.get(name)
            rows.append({"depth": depth, "hidden": hidden, "image": a.size, "variant": name, "step_ms": med * 1e3,
                         "overhead_pct": 100 * (med - plain) / plain, "capture_bytes_per_sample": per_sample})
            print(f"| {depth} | {hidden} | {a.size} | {name} | {med * 1e3:.2f} | {100 * (med - plain) / plain:+.2f}% | "
                  f"{per_sample or '–'} |", flush=True)
    storage = capture_storage()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"device": a.device, "steps": a.steps, "repeats": a.repeats, "rows": rows,
                                       "storage": storage}, indent=1))


def capture_storage(hidden: int = 1536, tokens: int = 154, sizes: tuple[int, ...] = (0, 300, 1500)) -> list[dict]:
    """Per stream (img pooled: [hidden]; txt: [tokens, hidden]) and set size n: the shard one sample writes,
    the manifest rewritten with it, and the wall time of one save into a set of n samples, counting the set
    from its manifest (what SSAESaveFeatures does) and, for comparison, by opening every shard."""
    import torch

    from ssae import Vocabulary, append_features, count_samples, load_features
    vocab = Vocabulary.portraits()
    combo = list(vocab.sample_combinations(1)[0])
    out = []
    print("\n| stream | values | set size n | shard bytes | manifest bytes | save ms (manifest count) | "
          "save ms (reopen all shards) |\n|---|---|---|---|---|---|---|")
    for stream, shape in (("img", [hidden]), ("txt", [tokens, hidden])):
        x = torch.randn(1, math.prod(shape))
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "set"
            save = lambda: append_features(folder, x, vocab, [combo], ["train"], [vocab.prompt(combo)],
                                           f"joint_blocks.12.{stream}", shape)
            have = 0
            for n in sizes:
                while have < n:
                    save()
                    have += 1
                timings = {}
                for how, count in (("manifest", count_samples), ("reopen", lambda f: len(load_features(f)))):
                    t = time.perf_counter()
                    shard = save()
                    assert count(folder) == have + 1
                    timings[how] = (time.perf_counter() - t) * 1e3
                    have += 1
                row = {"stream": stream, "values": math.prod(shape), "n": n, "shard_bytes": shard.stat().st_size,
                       "manifest_bytes": (folder / "manifest.json").stat().st_size,
                       "save_ms": timings["manifest"], "save_reopen_ms": timings["reopen"]}
                out.append(row)
                print(f"| {stream} | {row['values']:,} | {n} | {row['shard_bytes']:,} | {row['manifest_bytes']:,} | "
                      f"{row['save_ms']:.1f} | {row['save_reopen_ms']:.1f} |", flush=True)
    return out


if __name__ == "__main__":
    main()
