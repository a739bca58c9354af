"""`python -m ssae.world`: build the concept world, and sample it through a running ComfyUI."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace

from ..errors import SSAEError
from .block_map import MapSettings
from .evaluate import EvaluateSettings
from .scene import WORLDS

EVALUATE = EvaluateSettings()


def cmd_build(a: argparse.Namespace) -> int:
    from .build import build
    from .recipe import recipe_for
    recipe = recipe_for(a.world, a.quick)
    if a.depth:
        recipe = replace(recipe, dit=replace(recipe.dit, depth=a.depth))
    if a.dual_attention is not None:
        recipe = replace(recipe, dit=replace(recipe.dit, dual_attention_layers=a.dual_attention))
    t = time.perf_counter()
    built = build(a.dir, recipe, progress=not a.no_progress)
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


def cmd_evaluate(a: argparse.Namespace) -> int:
    from .build import load_world
    from .comfy_client import ComfyClient
    from .evaluate import evaluate
    settings = EvaluateSettings(cases=a.cases, double_cases=a.double_cases, heldout_cases=a.heldout_cases,
                                sweep_cases=a.sweep_cases, compose_seeds=a.compose_seeds,
                                compose_cases=a.compose_cases, prompts=a.prompts, block_site=a.block_site,
                                block_seeds=a.block_seeds, strength=a.strength, block_strength=a.block_strength,
                                block_end=a.block_end, block_mode=a.block_mode, block_blocks=a.block_blocks,
                                seed=a.seed)  # checked before the world is read
    report = evaluate(ComfyClient(a.url), load_world(a.dir), a.out, settings, progress=not a.no_progress)
    print(json.dumps({k: v for k, v in report.items() if k != "markdown"}) if a.json else report["markdown"])
    return 0


def cmd_block_map(a: argparse.Namespace) -> int:
    from .block_map import block_map
    from .build import load_world
    from .comfy_client import ComfyClient
    settings = MapSettings(prompts=a.prompts, cases_per_category=a.cases_per_category, strength=a.strength,
                           seed=a.seed, node_prompts=a.node_prompts)
    report = block_map(ComfyClient(a.url), load_world(a.dir), a.out, settings, progress=not a.no_progress)
    if a.json:
        print(json.dumps(report))
    else:
        for site, r in report["sites"].items():
            per = ", ".join(f"{k} {v:.2f}" for k, v in r["success_per_category"].items())
            print(f"{site}: success {r['success']:.3f} ({per}), preservation {r['preservation']:.3f}")
            for key in ("movement_per_category", "toward_prompt_per_category"):
                if key in r:
                    print(f"  {key.removesuffix('_per_category')}: " +
                          ", ".join(f"{k} {v:.3f}" for k, v in r[key].items()))
        for key, a in report.get("agreement", {}).items():
            rho = "undefined" if a["rank_correlation"] is None else f"{a['rank_correlation']:.2f}"
            print(f"{key.removesuffix('_per_category')} vs pixels: rank correlation {rho}; its first "
                  f"site is a best site for {sum(a['first_is_best_site'].values())} of {len(report['categories'])} "
                  "categories")
    return 0


def _at_least(low: int, what: str):
    """argparse type: a whole number of `what`, at least `low`."""
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < low:
            raise argparse.ArgumentTypeError(f"expected a whole number of {what} >= {low}, got {text!r}")
        return int(text)
    return parse


def _block_list(text: str) -> tuple[int, ...]:
    """argparse type of --dual-attention: comma-separated block indices, or empty for none."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated block indices such as 0,1, got {text!r}")
    return tuple(int(p) for p in parts)


def _server_command(sub, name: str, help: str, fn) -> argparse.ArgumentParser:
    """A subcommand that samples a built world through a running ComfyUI: DIR, --url, --out, --json, --no-progress."""
    c = sub.add_parser(name, help=help)
    c.add_argument("dir")
    c.add_argument("--url", required=True, help="the ComfyUI server, e.g. http://127.0.0.1:8188")
    c.add_argument("--out", default=None, help=f"folder for the grid, table and JSON (default DIR/{name})")
    c.add_argument("--json", action="store_true", help="print the report as one JSON object")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(fn=fn)
    return c


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssae.world", description=__doc__)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the world's models into DIR/models (cached by recipe hash)")
    b.add_argument("dir")
    b.add_argument("--world", choices=sorted(WORLDS), default="concept",
                   help="concept: the first world (4 categories, phrases of one length); paper: the paper's regime "
                        "(5 categories, phrases of different lengths, the SSAE on a sparse prompt set)")
    b.add_argument("--quick", action="store_true", help="a tiny world for tests (seconds; quality irrelevant)")
    b.add_argument("--depth", type=_at_least(1, "joint blocks"), default=None,
                   help="the MMDiT's joint blocks (default 2; hidden width 64 per block, as ComfyUI detects it)")
    b.add_argument("--dual-attention", type=_block_list, default=None,
                   help="blocks with SD3.5 Medium's extra image self-attention (MMDiT-X), e.g. 0,1 (default 0; "
                        "'' for none)")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(fn=cmd_build)
    r = _server_command(sub, "probe", "prompt seen and held-out combinations through a running ComfyUI and "
                                      "measure the images", cmd_probe)
    r.add_argument("--cases", type=int, default=120, help="(prompt, seed) cases of seen combinations")
    r.add_argument("--seed", type=int, default=0)
    e = _server_command(sub, "evaluate", "the paper's loop through a running ComfyUI (capture, train, edit, "
                                         "compose) and its images read in pixels", cmd_evaluate)
    e.add_argument("--cases", type=_at_least(1, "cases"), default=EVALUATE.cases,
                   help="(prompt, seed, swap) single edit cases")
    e.add_argument("--double-cases", type=_at_least(0, "cases"), default=EVALUATE.double_cases,
                   help="edit cases swapping two categories at once")
    e.add_argument("--heldout-cases", type=_at_least(0, "cases"), default=EVALUATE.heldout_cases,
                   help="edit cases whose result holds a held-out pair")
    e.add_argument("--sweep-cases", type=_at_least(0, "cases"), default=EVALUATE.sweep_cases,
                   help="colour edits also made at every strength from 0 to 1.5")
    e.add_argument("--compose-seeds", type=_at_least(1, "seeds"), default=EVALUATE.compose_seeds,
                   help="seeds per held-out combination composed")
    e.add_argument("--compose-cases", type=_at_least(1, "cases"), default=None,
                   help="at most this many held-out compose cases (default: every one)")
    e.add_argument("--prompts", type=_at_least(1, "prompts"), default=None,
                   help="prompts in the captured training sets (default: the world's own; every combination of "
                        "the first world, 600 of the paper world's)")
    e.add_argument("--block-site", default=EVALUATE.block_site, help="the joint block stream to capture and patch")
    e.add_argument("--block-seeds", type=_at_least(1, "seeds"), default=EVALUATE.block_seeds,
                   help="sampling runs per prompt captured at the block")
    e.add_argument("--strength", type=float, default=EVALUATE.strength, help="the conditioning edit's strength")
    e.add_argument("--block-strength", type=float, default=EVALUATE.block_strength, help="the block edit's strength")
    e.add_argument("--block-end", type=float, default=EVALUATE.block_end,
                   help="the block edit acts until this fraction of the schedule")
    e.add_argument("--block-mode", default=EVALUATE.block_mode, choices=["attention keys/values", "residual stream"],
                   help="how the block edit acts (SSAE Patch Model's mode)")
    e.add_argument("--block-blocks", default=EVALUATE.block_blocks,
                   choices=["this site", "this site and every later block"],
                   help="which blocks the block edit reaches (SSAE Patch Model's blocks)")
    e.add_argument("--seed", type=_at_least(0, "seeds"), default=0,
                   help="draws the edit cases and their sampling seeds")
    m = _server_command(sub, "block-map", "which joint block carries which attribute: an SSAE edit at every block's "
                                          "text input and image output, per category, read in pixels", cmd_block_map)
    m.add_argument("--prompts", type=_at_least(1, "prompts"), default=None,
                   help="prompts captured (default: every combination of the world)")
    m.add_argument("--cases-per-category", type=_at_least(1, "cases"), default=4, help="edit cases per category")
    m.add_argument("--strength", type=float, default=MapSettings.strength, help="the edit's strength")
    m.add_argument("--seed", type=int, default=0, help="the capture's sampling seed and the edit cases")
    m.add_argument("--node-prompts", type=_at_least(0, "node prompts"), default=MapSettings.node_prompts,
                   help="prompts the SSAE Block Map node maps (the readings for models without ground truth: how far "
                        "each edit moves the sample, how far toward the edited prompt's), compared with the "
                        "pixels; 0: none")
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
