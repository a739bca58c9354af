"""Build time and peak memory of a world (`python -m ssae.world build`), and ComfyUI's time per image.

    python benchmarks/bench_world.py [--recipe default|quick|paper] [--threads 1,2] [--into DIR]
    python benchmarks/bench_world.py --url http://127.0.0.1:8188 --world DIR [--images 40]

1. A fresh build (empty folder, no cache) in its own subprocess per torch thread count: wall time of each
   stage (text encoder, rendering, autoencoder, prompt encoding, MMDiT) and the worker's peak RSS (VmHWM).
   With --into DIR (one thread count) the build goes to DIR, which must be empty, and is kept.
2. With --url and --world (a server started on that built world): seconds per image of the world's text-to-image
   graph through ComfyUI (CLIPTextEncode, KSampler, VAEDecode, SaveImage, read back over /view), all queued at
   once, after one warm-up image that loads the models.
Results go to results/bench_world-<recipe>-t<threads>.json and results/bench_world-sampling.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import _common as C


def worker(spec: dict) -> None:
    import torch

    from ssae.world.build import build
    from ssae.world.recipe import PRESETS
    torch.set_num_threads(spec["threads"])
    C.warm_up()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(spec.get("into") or tmp)
        t = time.perf_counter()
        build(root, PRESETS[spec["recipe"]], progress=False)
        total = time.perf_counter() - t
        stages = json.loads((root / "world.json").read_text())["build_seconds"]
    C.worker_reply({"threads": spec["threads"], "recipe": spec["recipe"], "seconds": total, "stages": stages,
                    "peak_rss_mb": C.peak_rss_mb()})


def sampling(url: str, world_dir: str, images: int) -> dict:
    from ssae.world.build import load_world
    from ssae.world.comfy_client import ComfyClient
    from ssae.world.probe import sample_cases, seen_cases
    built, client = load_world(world_dir), ComfyClient(url)
    cases = seen_cases(built.world, images + 1, seed=7)
    sample_cases(client, built, cases[:1], "bench_world/warmup")
    t = time.perf_counter()
    sample_cases(client, built, cases[1:], "bench_world/timed")
    per_image = (time.perf_counter() - t) / images
    return {"images": images, "seconds_per_image": per_image, "sampling": built.recipe.sampling.__dict__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--recipe", default="default", choices=["default", "quick", "paper"])
    ap.add_argument("--threads", default="1", help="torch thread counts to build with, comma-separated")
    ap.add_argument("--into", help="build into this empty folder and keep it (one thread count)")
    ap.add_argument("--url", help="a running ComfyUI serving --world, to time sampling")
    ap.add_argument("--world", help="the built world folder that server serves")
    ap.add_argument("--images", type=int, default=40)
    a = ap.parse_args()
    if a.worker:
        return worker(json.loads(a.worker))
    if a.into and ("," in a.threads or Path(a.into).exists() and any(Path(a.into).iterdir())):
        sys.exit("--into needs one thread count and an empty (or new) folder")
    C.prime()
    payload: dict = {"builds": []}
    if not a.url:
        print("| recipe | threads | build s | text encoder | render | autoencoder | encode prompts | MMDiT "
              "| peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|")
        for threads in map(int, a.threads.split(",")):
            res = C.run_worker(__file__, {"threads": threads, "recipe": a.recipe, "into": a.into})
            payload["builds"].append(res)
            if "error" in res:
                print(f"| {a.recipe} | {threads} | {res['error']} |")
                continue
            s = res["stages"]
            print(f"| {a.recipe} | {threads} | {res['seconds']:.0f} | " + " | ".join(
                f"{s.get(k, 0):.0f}" for k in ("text_encoder", "render", "autoencoder", "encode_prompts", "dit"))
                + f" | {res['peak_rss_mb']:.0f} |", flush=True)
    else:
        if not a.world:
            sys.exit("--url needs --world (the folder the server was started on)")
        payload["sampling"] = sampling(a.url, a.world, a.images)
        print(f"ComfyUI text-to-image: {payload['sampling']['seconds_per_image']:.2f} s per image "
              f"({a.images} images, {payload['sampling']['sampling']})")
    name = f"bench_world-{a.recipe}-t{a.threads.replace(',', '-')}" if not a.url else "bench_world-sampling"
    print("wrote", C.save_json(name, payload))


if __name__ == "__main__":
    main()
