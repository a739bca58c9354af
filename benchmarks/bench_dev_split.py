"""Settings chosen on a development split, then measured on the test split (issue 19, item 8).

For each MiniLM benchmark set (`bench_time_to_quality.py`'s demo, sparse, dense24 and wide), `ssae.splits.
development_split` carves development pairs out of the training rows, drawn as the set's test pairs were (4
pairs; 5 for `wide`), three times (folds 0, 1, 2; training seed = the fold). A recipe's development EV is its
held-out explained variance on the development rows after training on the rest of the training rows, averaged
over the folds; settings are chosen by it. Its test EV is that of the recipe trained on every training row
(seed 0, as `ssae train` does) on the test pairs, which choose nothing.

    python benchmarks/bench_dev_split.py --recipes recipes.json [--data demo,sparse,dense24,wide] [--no-test]
    python benchmarks/bench_dev_split.py --before /path/to/an/older/checkout      # the same, with its ssae

`--recipes` is a JSON list of {"name", "preset", "train": {TrainConfig overrides}, "model": {DecoderConfig
overrides}}; without it: the presets `default`, `additive` and `mean-difference`, and `additive` with its penalty
fixed at 1e-2 instead of picked on the validation rows ("ridge 1e-2").
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import _common as C
import torch
from bench_time_to_quality import SETS, ensure

BASELINES = [{"name": "default", "preset": "default"}, {"name": "additive", "preset": "additive"},
             {"name": "ridge 1e-2", "preset": "additive", "train": {"ridge_grid": None, "ridge": 0.01}},
             {"name": "mean-difference", "preset": "mean-difference"}]
PAIRS = {"wide": 5}
"""Development pairs per set: as many as its test pairs (4, and 5 for `wide`)."""


def splits_module():
    """ssae.splits, from this checkout when the ssae being measured (--before) predates it."""
    try:
        import ssae.splits
        return ssae.splits
    except ImportError:
        spec = importlib.util.spec_from_file_location("ssae.splits", C.ROOT / "ssae" / "splits.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["ssae.splits"] = module
        spec.loader.exec_module(module)
        return module


def recipe_of(spec: dict):
    from ssae.presets import PRESETS
    r = PRESETS[spec["preset"]]
    if spec.get("model"):
        r = replace(r, model=replace(r.model, **spec["model"]))
    return replace(r, train=replace(r.train, **(spec.get("train") or {}) | {"device": "cpu"}))


def measure(data, spec: dict, name: str, folds: int, test: bool) -> dict:
    from ssae.metrics import evaluate
    from ssae.train import train
    recipe = recipe_of(spec)
    devs = []
    for fold in range(folds):
        dev, _ = splits_module().development_split(data, PAIRS.get(name, 4), seed=fold)
        r = train(dev, replace(recipe, train=replace(recipe.train, seed=fold)))
        devs.append(evaluate(r.ssae, dev, "test")["explained_variance"])
    out = {"set": name, "recipe": spec["name"], "dev": sum(devs) / len(devs), "dev_folds": devs}
    if test:
        r = train(data, recipe)
        out["test"] = evaluate(r.ssae, data, "test")["explained_variance"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="demo,sparse,dense24,wide", help=f"comma-separated, of {', '.join(SETS)}")
    ap.add_argument("--folder", default="/tmp/ssae_bench", help="where the MiniLM feature sets are cached")
    ap.add_argument("--recipes", default=None, help="JSON file of recipes (default: the presets and ridge 1e-2)")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--no-test", action="store_true", help="development EV only")
    ap.add_argument("--before", default=None, help="measure the ssae of another checkout instead of this one")
    ap.add_argument("--name", default=None, help="results/bench_dev_split-NAME.json")
    a = ap.parse_args()
    if a.before:
        sys.path.insert(0, str(Path(a.before).resolve()))  # before any import of ssae: the other checkout's
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    specs = json.loads(Path(a.recipes).read_text()) if a.recipes else BASELINES
    import ssae
    rows = []
    for name in a.data.split(","):
        data = ssae.load_features(ensure(name, Path(a.folder)))
        for spec in specs:
            rows.append(measure(data, spec, name, a.folds, not a.no_test))
            print(json.dumps(rows[-1]), flush=True)
    table = C.md_table(["set", "recipe", "development EV (mean of folds)", "folds", "test EV"],
                       [[r["set"], r["recipe"], round(r["dev"], 4), " / ".join(f"{x:.3f}" for x in r["dev_folds"]),
                         None if "test" not in r else round(r["test"], 4)] for r in rows])
    print(table)
    name = a.name or ("before" if a.before else "now")
    out = C.save_json(f"bench_dev_split-{name}", {"args": vars(a), "ssae": ssae.__file__, "rows": rows, "table": table})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
