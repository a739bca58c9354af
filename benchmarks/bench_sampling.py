"""Sampling overhead of SSAE patches and capture on a real ComfyUI MMDiT (random weights).

Run with ComfyUI's interpreter:  COMFYUI_PATH=/path/to/ComfyUI $COMFYUI_PYTHON benchmarks/bench_sampling.py
1. Whole sampling runs (plain, patched block, conditioning-edited, capturing), interleaved in a
   rotating order and repeated: the fastest per-step time of each and its overhead against plain
   sampling. On a tiny model these drift by more than 1%, so also
2. each hook's own cost per step, timed around a block that returns precomputed outputs, at the run's
   shapes and as a share of its step; and at SD3.5 Medium's shapes against one ComfyUI JointBlock of
   that width (a step is at least 24 of them);
3. what saving a capture costs (no ComfyUI needed): the bytes one sample puts on disk at SD3.5 Medium's
   width, and the time of one save (append + count, as SSAESaveFeatures does) as the set grows.
Results go to results/sampling-<device>.json. Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "host")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--depths", default="2,8", help="MMDiT depths to build (hidden = 64 * depth, as SD3)")
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--steps", type=int, default=28, help="sampling steps per run (SD3.5's usual 28)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds after a warm-up round; the fastest counts")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        sys.exit("set COMFYUI_PATH to a ComfyUI checkout and run with its python")
    sys.path.insert(0, comfy_path)
    sys.argv = [sys.argv[0], "--cpu"] if a.device == "cpu" else [sys.argv[0]]
    import comfy.options
    comfy.options.enable_args_parsing()  # as ComfyUI's main.py does, so that --cpu is honoured
    import _common as C
    import comfy.sample
    import comfy.sd
    import torch
    from tiny_models import random_mmdit

    from ssae.hooks import BlockHook, patch_block
    from ssae.steer import edit_conditioning

    rows = []
    print("| depth | hidden | image | variant | step ms | whole-run overhead | hook µs per step | hook share of a step"
          " |\n|---|---|---|---|---|---|---|---|")
    for depth in map(int, a.depths.split(",")):
        hidden = 64 * depth
        with tempfile.TemporaryDirectory() as tmp:
            path = random_mmdit(Path(tmp) / "tiny_sd3.safetensors", depth=depth, pos=max(16, a.size // 16))
            model = comfy.sd.load_diffusion_model(str(path))
        ctx, adm = 64, 32
        g = torch.Generator().manual_seed(0)
        cond = [[torch.randn(1, 154, ctx, generator=g), {"pooled_output": torch.randn(1, adm, generator=g)}]]
        neg = [[torch.zeros(1, 154, ctx), {"pooled_output": torch.zeros(1, adm)}]]
        latent = torch.zeros(1, 16, a.size // 8, a.size // 8)
        noise = torch.randn(latent.shape, generator=g)
        block = (depth - 1) // 2  # a middle block; the last one has no txt output
        hooks = block_hooks(hidden, 154, g)

        def patched(hook: BlockHook):  # as the nodes patch: the hook, and the wrapper that reads row layouts
            return patch_block(model, block, hook)

        tokens_delta, pooled_delta = torch.randn(154, ctx, generator=g), torch.randn(adm, generator=g)
        variants = {"plain": lambda: (model, cond)} | {name: (lambda make=make: (patched(make()), cond))
                                                         for name, make in hooks.items()}
        variants["conditioning edit"] = lambda: (model, [[*edit_conditioning(
            cond[0][0], cond[0][1]["pooled_output"], tokens_delta, None, pooled_delta, 1.0)[:1], cond[0][1]]])
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
        img_tokens = (a.size // 16) ** 2  # 8x VAE, 2x2 patches
        for name, ts in times.items():
            step = min(ts)
            # the CFG batch (positive and negative rows) passes the patched block once per step
            us = hook_us(hooks[name](), torch.randn(2, img_tokens, hidden), torch.randn(2, 154, hidden)) \
                if name in hooks else None
            rows.append({"depth": depth, "hidden": hidden, "image": a.size, "variant": name, "step_ms": step * 1e3,
                         "overhead_pct": 100 * (step - plain) / plain, "hook_us": us,
                         "hook_pct": None if us is None else 100 * us * 1e-6 / plain})
            cost = "– | –" if us is None else f"{us:.1f} | {rows[-1]['hook_pct']:.3f}%"
            print(f"| {depth} | {hidden} | {a.size} | {name} | {step * 1e3:.2f} | "
                  f"{100 * (step - plain) / plain:+.2f}% | {cost} |", flush=True)
    # the same hooks at SD3.5 Medium's shapes (1024 x 1024: 4096 image tokens, 154 text tokens), against
    # one of its 24 joint blocks at those shapes: a sampling step is at least 24 such blocks
    img, txt = torch.randn(2, 4096, 1536), torch.randn(2, 154, 1536)
    block_ms = joint_block_ms(img, txt)
    print(f"\nSD3.5 Medium shapes: one joint block {block_ms:.0f} ms, so a step >= {24 * block_ms / 1e3:.1f} s\n\n"
          "| variant | hook µs per step | hook share of one block | of a step (24 blocks) |\n|---|---|---|---|")
    sd35m = {"block_ms": block_ms, "hooks": []}
    for name, make in block_hooks(1536, 154, torch.Generator().manual_seed(0)).items():
        us = hook_us(make(), img, txt)
        sd35m["hooks"].append({"variant": name, "hook_us": us, "block_pct": 100 * us / 1e3 / block_ms,
                               "step_pct": 100 * us / 1e3 / (24 * block_ms)})
        print(f"| {name} | {us:.0f} | {sd35m['hooks'][-1]['block_pct']:.2g}% | "
              f"{sd35m['hooks'][-1]['step_pct']:.2g}% |", flush=True)
    storage = capture_storage()
    out = C.save_json(f"sampling-{a.device}", {"args": vars(a), "rows": rows, "sd35_medium": sd35m,
                                              "storage": storage})
    print(f"wrote {out}")


def block_hooks(hidden: int, tokens: int, g) -> dict:
    """Makers of the measured BlockHooks: an edit on each stream, and a capture of each."""
    import torch

    from ssae.capture import CaptureBuffer
    from ssae.hooks import BlockHook
    from ssae.steer import StreamEdit
    return {"patch img": lambda: BlockHook("img", StreamEdit(torch.randn(hidden, generator=g))),
            "patch txt": lambda: BlockHook("txt", StreamEdit(torch.randn(tokens, hidden, generator=g))),
            "capture img": lambda: BlockHook("img", capture=CaptureBuffer("mean")),
            "capture txt": lambda: BlockHook("txt", capture=CaptureBuffer("none"))}


def joint_block_ms(img, txt, repeats: int = 3) -> float:
    """Milliseconds of one forward of ComfyUI's JointBlock at SD3.5 Medium's width (1536, 24 heads, qk
    RMS norm), random weights, on these streams (fastest of `repeats`)."""
    import comfy.ops
    import torch
    from comfy.ldm.modules.diffusionmodules.mmdit import JointBlock
    block = JointBlock(1536, 24, mlp_ratio=4.0, qkv_bias=True, pre_only=False, qk_norm="rms",
                       operations=comfy.ops.disable_weight_init)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.02)
        vec = torch.randn(img.shape[0], 1536)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            block(txt, img, c=vec, use_checkpoint=False)
            best = min(best, time.perf_counter() - t)
    return best * 1e3


def hook_us(hook, img, txt, calls: int = 200) -> float:
    """Microseconds a BlockHook adds to one joint-block call on streams of these shapes: the hook around a
    block that returns precomputed outputs, minus that bare block (fastest of 5 batches of calls each)."""
    out = {"img": img, "txt": txt}
    args = {"img": img, "txt": txt, "vec": None,  # no sigma: a capture records every call as a step of its own
            "transformer_options": {"cond_or_uncond": [1, 0]}}
    extra = {"original_block": lambda _: out}

    def per_call(fn) -> float:
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            best = min(best, (time.perf_counter() - t) / calls)
        return best
    return 1e6 * max(0.0, per_call(lambda: hook(args, extra)) - per_call(lambda: extra["original_block"](args)))


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

            def save():
                append_features(folder, x, vocab, [combo], ["train"], [vocab.prompt(combo)],
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
