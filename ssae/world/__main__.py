"""`python -m ssae.world`: build the concept world, and sample it through a running ComfyUI."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from ..errors import SSAEError


def cmd_build(a: argparse.Namespace) -> int:
    from .build import build
    from .recipe import PRESETS
    t = time.perf_counter()
    built = build(a.dir, PRESETS["quick" if a.quick else "default"], progress=not a.no_progress)
    print(f"world {built.hashes['world']} in {a.dir} ({time.perf_counter() - t:.1f}s)")
    print(f"ComfyUI: --extra-model-paths-config {built.root / 'extra_model_paths.yaml'}")
    return 0


def cmd_probe(a: argparse.Namespace) -> int:
    from .build import load_world
    from .comfy_client import ComfyClient
    from .probe import probe
    report = probe(ComfyClient(a.url), load_world(a.dir), a.out, cases=a.cases, seed=a.seed,
                   progress=not a.no_progress)
    print(json.dumps(report) if a.json else report["markdown"])
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssae.world", description=__doc__)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the world's models into DIR/models (cached by recipe hash)")
    b.add_argument("dir")
    b.add_argument("--quick", action="store_true", help="a tiny world for tests (seconds; quality irrelevant)")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(fn=cmd_build)
    r = sub.add_parser("probe", help="prompt seen and held-out combinations through a running ComfyUI and "
                                     "measure the images")
    r.add_argument("dir")
    r.add_argument("--url", required=True, help="the ComfyUI server, e.g. http://127.0.0.1:8188")
    r.add_argument("--out", default=None, help="folder for the grid and table (default DIR/probe)")
    r.add_argument("--cases", type=int, default=120, help="(prompt, seed) cases of seen combinations")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--json", action="store_true")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(fn=cmd_probe)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if a.threads:
        import torch
        torch.set_num_threads(a.threads)
    try:
        return a.fn(a)
    except SSAEError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
