"""`python -m ssae` / `ssae`: train, eval, inspect, baselines and the embedded demo."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import SSAEError


def cmd_train(a: argparse.Namespace) -> int:
    from .distributed import exit_together, init_from_env
    if not init_from_env():
        return _train(a)
    exit_together(_train(a))  # under torchrun: feature columns are split across the processes


def _train(a: argparse.Namespace) -> int:
    from dataclasses import replace

    from .distributed import rank_and_world
    from .metrics import evaluate
    from .progress import tqdm_progress, validation_ev
    from .store import load_features
    from .train import PRESETS, train, with_overrides
    data = load_features(a.features)
    recipe = with_overrides(PRESETS[a.preset], device=a.device, seed=a.seed, epochs=a.epochs, stream=a.stream,
                            members=a.members)
    if a.hidden is not None:
        recipe = replace(recipe, model=replace(recipe.model, hidden=a.hidden))
    if rank_and_world()[0] != 0:  # other ranks work silently and leave writing to rank 0
        train(data, recipe, split=a.split, checkpoint=a.checkpoint)
        return 0
    with tqdm_progress(f"train {a.preset}") as bar:
        result = train(data, recipe, split=a.split, progress=bar, checkpoint=a.checkpoint)
    if data.split and "test" in data.split and a.split != "test":
        result.ssae.info["metrics"] = {"test": evaluate(result.ssae, data, "test")}
    result.ssae.save(a.out)
    ev = validation_ev(result.history[-1]) if result.history else None
    print(f"wrote {a.out} ({result.seconds:.1f}s, {len(result.history)} epochs"
          + (f", validation EV {ev:.4f})" if ev is not None else ")"))
    if "metrics" in result.ssae.info:
        print(_fmt_metrics(result.ssae.info["metrics"]["test"], "test"))
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from .metrics import evaluate
    from .ssae_file import SSAE
    from .store import load_features
    m = evaluate(SSAE.load(a.model), load_features(a.features), a.split)
    print(json.dumps(m) if a.json else _fmt_metrics(m, a.split))
    return 0


def cmd_inspect(a: argparse.Namespace) -> int:
    from .ssae_file import SSAE
    s = SSAE.load(a.model)
    if a.json:
        print(json.dumps(s.summary()))
    else:
        print(f"SSAE {a.model}\n" + "\n".join("  " + line for line in s.describe().splitlines()))
    return 0


def cmd_baselines(a: argparse.Namespace) -> int:
    from .report import baseline_rows, format_table
    from .store import load_features
    rows = baseline_rows(load_features(a.features), ssae_presets=a.presets.split(",") if a.presets else [])
    print(json.dumps(rows) if a.json else format_table(rows))
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from .demo import run_demo
    run_demo(Path(a.out), quick=a.quick)
    return 0


def cmd_import_diffusers(a: argparse.Namespace) -> int:
    from .store import count_samples, load_features, relayout_features
    out = relayout_features(load_features(a.features), a.out, a.t5_rows)
    print(f"wrote {out} ({count_samples(out)} samples, 77 CLIP + {a.t5_rows} T5 rows)")
    return 0


def _fmt_metrics(m: dict, split: str) -> str:
    return (f"{split}: explained variance {m['explained_variance']:.4f}, cosine {m['cosine']:.4f}, "
            f"mse {m['mse']:.4g}, n={m['n']}")


def build_parser() -> argparse.ArgumentParser:
    from .train import PRESETS
    p = argparse.ArgumentParser(prog="ssae", description="Supervised sparse auto-encoders for SD3.5 features.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train an SSAE on a feature set")
    t.add_argument("features")
    t.add_argument("--out", required=True, help="SSAE .safetensors file to write")
    t.add_argument("--split", default="train")
    t.add_argument("--device", default=None, help="cpu, cuda or auto (default)")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--epochs", type=int, default=None, help="most epochs per member (default: the preset's)")
    t.add_argument("--members", type=int, default=None, help="models averaged into the SSAE (default preset: 4)")
    t.add_argument("--hidden", type=int, default=None, help="hidden units of each member's mlp decoder")
    t.add_argument("--preset", default="default", choices=sorted(PRESETS))
    t.add_argument("--checkpoint", default=None, help="resumable checkpoint file (resumed if it exists)")
    t.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="read the features from disk on each pass instead of holding them (default: when they "
                        "would fill half the free memory)")
    t.set_defaults(fn=cmd_train)
    e = sub.add_parser("eval", help="reconstruction metrics of an SSAE on a split")
    e.add_argument("model")
    e.add_argument("features")
    e.add_argument("--split", default="test")
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_eval)
    i = sub.add_parser("inspect", help="vocabulary, site, shapes and metrics of an SSAE file")
    i.add_argument("model")
    i.add_argument("--json", action="store_true")
    i.set_defaults(fn=cmd_inspect)
    b = sub.add_parser("baselines", help="SSAE vs baselines on the held-out split")
    b.add_argument("features")
    b.add_argument("--presets", default="default,additive", help="comma-separated SSAE presets to include")
    b.add_argument("--json", action="store_true")
    b.set_defaults(fn=cmd_baselines)
    c = sub.add_parser("import-diffusers", help="convert conditioning features of diffusers' layout (77 CLIP + 256 "
                                                "T5 rows, the paper's) into ComfyUI's")
    c.add_argument("features", help="feature set of SD3 conditioning from diffusers' encode_prompt")
    c.add_argument("out", help="new feature-set folder to write")
    c.add_argument("--t5-rows", type=int, default=77, help="T5 rows of ComfyUI's conditioning: 77 with a T5 encoder "
                                                            "(default), 0 for CLIP alone")
    c.set_defaults(fn=cmd_import_diffusers)
    d = sub.add_parser("demo", help="the embedded demo: real MiniLM features of the portrait vocabulary")
    d.add_argument("--out", default="demo_out")
    d.add_argument("--quick", action="store_true", help="fewer prompts and epochs (for tests)")
    d.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return a.fn(a)
    except SSAEError as e:
        print(f"ssae: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ssae: interrupted (a --checkpoint run resumes where it stopped)", file=sys.stderr)
        return 130
