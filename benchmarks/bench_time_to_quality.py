"""Held-out explained variance against seconds of training: ssae's presets and the paper's loop (issue #13).

One run per method and data set, each in its own subprocess; the clock pauses while the held-out EV is
measured, in the original feature space as ssae.metrics.evaluate does.

- `default` (and any gram-solver preset): trained with a checkpoint after every epoch; at each epoch the
  model as it would be if training stopped there (the finished members and the current one, merged, with
  the readout solved on every training row as `ssae.train` does) is rebuilt from the checkpoint and
  measured. A point's time is the training time so far plus that readout solve, timed. The run uses
  `--members` members (more than the preset's 4) to show what more would give; the first 4 are the preset's
  model exactly (members are independent).
- `paper` (the preset, top-1000 dimensions, Adam): its checkpoint after each epoch holds the whole model.
- `additive`: one closed-form point.
- the paper's loop: `bench_train.paper_loop`, the reference loop re-implemented, on all dimensions
  standardised (the variant whose quality compares), measured after each epoch.

Then the whole process a user waits for: `python -m ssae train` then `python -m ssae eval`, wall clock, for
`default` and `additive` (and `--before ROOT`: the same commands run from another checkout, e.g. the commit
before issue #13).

    python benchmarks/bench_time_to_quality.py                      # demo features and the sparse-coverage set
    python benchmarks/bench_time_to_quality.py --data demo,wide,sparse,dense24 --before /path/to/old/checkout
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C
import torch

SCRIPT = Path(__file__).resolve()
PNG = SCRIPT.parent / "time_to_quality.png"
SETS = {"demo": ("the demo's features: all 4224 portrait prompts, 40 tokens x 384, 4 held-out pairs", None),
        "sparse": ("1500 of the 4224 portrait prompts (the paper's regime), 40 x 384, 4 held-out pairs", 1500),
        "wide": ("sparse coverage: 1500 of 34,560 prompts of a wider vocabulary, 40 x 384, 5 held-out pairs", "wide"),
        "dense24": ("2880 of the 4224 portrait prompts, 24 tokens x 384, 4 held-out pairs", "dense24")}


def ensure(name: str, folder: Path) -> Path:
    kind = SETS[name][1]
    if isinstance(kind, str):
        return C.ensure_minilm_features(folder / f"{name}.safetensors", kind)
    return C.ensure_demo_features(folder / f"{name}.safetensors", kind)


# -- workers ----------------------------------------------------------------------------------------

def curve_worker(spec: dict) -> dict:
    """Train one preset with a checkpoint after every epoch; at each epoch (clock paused) rebuild the model it
    would return from the checkpoint and measure its held-out EV."""
    from ssae import load_features
    from ssae.checkpoint import load as load_checkpoint
    from ssae.metrics import evaluate
    from ssae.model import SupervisedSAE, merge_members
    from ssae.preprocess import FeatureStats, Preprocessor
    from ssae.readout import solve_readout
    from ssae.safefile import read_header
    from ssae.ssae_file import SSAE
    from ssae.train import PRESETS, member_seed, train, with_overrides
    data = load_features(spec["path"])
    recipe = with_overrides(PRESETS[spec["preset"]], device="cpu", epochs=spec.get("epochs"),
                            members=spec.get("members"), checkpoint_every=1)
    cfg = recipe.train
    rows = data.indices("train")
    pre = Preprocessor.fit(FeatureStats.from_chunks(x for _, x in data.row_blocks(rows)), recipe.preprocess)
    Y = pre.transform(data.load(rows))
    mask = data.mask(rows)
    ids = torch.arange(rows.numel())
    model_cfg = recipe.model_config(data.vocabulary.n_concepts, pre.n_kept, rows.numel())
    ckpt = Path(tempfile.mkdtemp()) / "curve.ckpt.safetensors"
    points, paused = [], 0.0

    def member(state: dict, e: int) -> SupervisedSAE:
        m = SupervisedSAE(model_cfg, torch.Generator().manual_seed(member_seed(cfg.seed, e)), random_readout=False)
        if model_cfg.code == "concept" and not cfg.train_code:
            m.embed.data.fill_(1.0)  # as ssae.train builds its members: the code is the concept weights
        m.load_state_dict(state, strict=False)
        return m

    def measure(epoch: int, total: int, entry: dict) -> None:
        nonlocal paused
        t = time.perf_counter()
        st = load_checkpoint(ckpt, read_header(ckpt)[1]["fingerprint"])
        current = st.best["state"] if st.best else st.model  # a member ends at its best epoch
        if cfg.solver == "gram":
            members = [member(s, e) for e, s in enumerate(st.members)] + [member(current, len(st.members))]
            r0 = time.perf_counter()
            model = merge_members(members)
            solve_readout(members, model, Y, mask, ids, ids, cfg.ridge)
            readout_s = time.perf_counter() - r0
        else:
            model, readout_s = member(current, 0), 0.0
        ssae = SSAE(model, pre, data.vocabulary, data.site, data.feature_shape)
        elapsed = t - t0 - paused
        points.append({"epoch": epoch, "member": entry.get("member", 0), "train_s": elapsed + readout_s,
                       "readout_s": readout_s, "val": entry.get("ensemble", entry["val"]),
                       "ev": evaluate(ssae, data, "test")["explained_variance"]})
        paused += time.perf_counter() - t

    t0, c0 = time.perf_counter(), time.process_time()
    r = train(data, recipe, progress=measure, checkpoint=ckpt)
    seconds, cpu = time.perf_counter() - t0 - paused, time.process_time() - c0
    final = evaluate(r.ssae, data, "test")["explained_variance"]
    return {"method": f"ssae {spec['preset']}", "points": points, "train_s": seconds, "cpu_s_with_measuring": cpu,
            "final_ev": final, "epochs_run": len(r.history), "members": cfg.members,
            "best_epochs": r.ssae.info.get("best_epochs"), "peak_rss_mb": C.peak_rss_mb()}


def closed_form_worker(spec: dict) -> dict:
    from ssae import load_features
    from ssae.metrics import evaluate
    from ssae.train import PRESETS, train, with_overrides
    data = load_features(spec["path"])
    t, c = time.perf_counter(), time.process_time()
    r = train(data, with_overrides(PRESETS[spec["preset"]], device="cpu"))
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    ev = evaluate(r.ssae, data, "test")["explained_variance"]
    return {"method": f"ssae {spec['preset']}", "points": [{"train_s": seconds, "ev": ev}], "train_s": seconds,
            "cpu_s": cpu, "final_ev": ev, "chosen_ridge": r.ssae.info["training"].get("chosen_ridge")}


def ridge_worker(spec: dict) -> dict:
    """The baseline the additive preset must not fall under: ridge on the raw features (ssae.baselines)."""
    from ssae import load_features
    from ssae.baselines import additive_fit
    from ssae.metrics import evaluate_predictor
    data = load_features(spec["path"])
    t = time.perf_counter()
    V, b = additive_fit(data, data.indices("train"))
    seconds = time.perf_counter() - t
    m = evaluate_predictor(lambda x, lab: data.vocabulary.mask(lab) @ V + b, data, "test")
    return {"method": "ridge on raw features", "train_s": seconds, "final_ev": m["explained_variance"]}


def loop_worker(spec: dict) -> dict:
    from bench_train import paper_loop
    r = paper_loop(spec)
    r["points"] = [{"epoch": c["epoch"], "train_s": c["train_s"], "ev": c["ev"]} for c in r["curve"]]
    return r


def whole_process(root: Path, path: Path, preset: str, threads: int | None) -> dict:
    """Wall clock of `ssae train` then `ssae eval` as a user runs them (fresh interpreters, imports included)."""
    env = dict(os.environ, PYTHONPATH=str(root))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    out = Path(tempfile.mkdtemp()) / "m.safetensors"
    t = time.perf_counter()  # run from the checkout: `python -m` puts the working directory first on sys.path
    tr = subprocess.run([sys.executable, "-m", "ssae", "train", str(path), "--out", str(out), "--preset", preset,
                         "--device", "cpu"], env=env, capture_output=True, text=True, cwd=root)
    t_train = time.perf_counter() - t
    ev = subprocess.run([sys.executable, "-m", "ssae", "eval", str(out), str(path), "--json"], env=env,
                        capture_output=True, text=True, cwd=root)
    total = time.perf_counter() - t
    if tr.returncode or ev.returncode:
        return {"error": (tr.stderr + ev.stderr)[-2000:]}
    return {"train_process_s": t_train, "total_s": total, "ev": json.loads(ev.stdout)["explained_variance"]}


# -- orchestration --------------------------------------------------------------------------------

def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cols = min(len(results), 2)
    rows = (len(results) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.4 * rows), squeeze=False)
    for ax in axes.flat[len(results):]:
        ax.axis("off")
    for ax, (name, res) in zip(axes.flat, results.items()):
        for key, style in (("default", "-o"), ("paper", "-"), ("loop", "-"), ("additive", "*")):
            r = res.get(key)
            if not r or "points" not in r:
                continue
            xs, ys = [p["train_s"] for p in r["points"]], [max(p["ev"], -0.1) for p in r["points"]]
            label = {"loop": "paper's loop (all dims)", "paper": "ssae paper (top 1000 dims)"}.get(key, f"ssae {key}")
            ax.plot(xs, ys, style, ms=3 if key == "default" else 12, lw=1.2, label=label)
            if key == "default":  # where the preset (4 members) ends; the run goes on with more members
                end = [p for p in r["points"] if p["member"] < 4][-1]
                ax.plot([end["train_s"]], [end["ev"]], "o", ms=9, mfc="none", color="C0",
                        label=f"the preset's model (4 members): {end['ev']:.3f}")
        if res.get("ridge"):
            ax.axhline(res["ridge"]["final_ev"], color="gray", ls=":", lw=1, label="ridge on raw features")
        ax.set(xscale="log", xlabel="training seconds (log)", ylabel="held-out explained variance",
               title=f"{name}: {SETS[name][0]}", ylim=(-0.1, 1.0))
        ax.title.set_fontsize(8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="demo,wide", help=f"comma-separated, of {', '.join(SETS)}")
    ap.add_argument("--folder", default="/tmp/ssae_bench", help="where the MiniLM feature sets are cached")
    ap.add_argument("--members", type=int, default=6, help="members of the default's curve run (the preset: 4)")
    ap.add_argument("--loop-epochs", type=int, default=20, help="epochs of the paper's loop on all dimensions")
    ap.add_argument("--paper-epochs", type=int, default=None, help="epochs of the paper preset (default: its 100)")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every run (default: torch's)")
    ap.add_argument("--before", default=None, help="another checkout whose `ssae train/eval` to time as well")
    ap.add_argument("--process-only", action="store_true", help="only the whole-process timings")
    ap.add_argument("--repeats", type=int, default=1, help="whole-process runs of each (the fastest is kept)")
    ap.add_argument("--replot", default=None, help="redraw the figure from a results JSON of this script")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.replot:
        plot(json.loads(Path(a.replot).read_text())["results"], PNG)
        print(f"wrote {PNG}")
        return
    if a.worker:
        spec = json.loads(a.worker)
        C.warm_up()
        C.worker_reply({"curve": curve_worker, "closed": closed_form_worker, "ridge": ridge_worker,
                        "loop": loop_worker}[spec["kind"]](spec))
        return
    if a.threads:
        os.environ["OMP_NUM_THREADS"] = str(a.threads)
    results, tables = {}, []
    C.prime()
    for name in a.data.split(","):
        path = ensure(name, Path(a.folder))
        C.warm_file_cache(path)
        specs = {"default": {"kind": "curve", "preset": "default", "members": a.members},
                 "additive": {"kind": "closed", "preset": "additive"},
                 "ridge": {"kind": "ridge"},
                 "paper": {"kind": "curve", "preset": "paper", "epochs": a.paper_epochs},
                 "loop": {"kind": "loop", "prep": "all-standard", "epochs": a.loop_epochs, "seed": 0}}
        res = {}
        for key, spec in ({} if a.process_only else specs).items():
            print(f"[{name}] {key} ...", flush=True)
            r = C.run_worker(SCRIPT, spec | {"path": str(path)})
            if "error" in r:
                raise SystemExit(f"a worker failed: {r['error']}")
            res[key] = r
        for preset in ("default", "additive"):
            print(f"[{name}] whole process, {preset} ...", flush=True)
            for key, root in (("process", C.ROOT), ("before", a.before)):
                if root:
                    runs = [whole_process(Path(root), path, preset, a.threads) for _ in range(a.repeats)]
                    res[f"{key} {preset}"] = min(runs, key=lambda r: r.get("total_s", float("inf"))) | {
                        "all_total_s": [r.get("total_s") for r in runs]}
        results[name] = res
        tables.append(process_table(name, res) if a.process_only else summary(name, res, a.members))
        print(tables[-1], flush=True)
    if not a.process_only:
        plot(results, PNG)
    threads = f"-threads{a.threads}" if a.threads else ""
    out = C.save_json(("bench_whole_process-" if a.process_only else "bench_time_to_quality-")
                      + a.data.replace(",", "-") + threads, {
        "args": vars(a), "sets": {n: SETS[n][0] for n in results}, "results": results, "tables": tables})
    print(f"wrote {out}" + ("" if a.process_only else f" and {PNG}"))


def summary(name: str, res: dict, members: int) -> str:
    """Markdown: each method's final point and the time to reach fractions of the default's quality."""
    d = res["default"]
    preset_pts = [p for p in d["points"] if p["member"] < 4]
    at4 = preset_pts[-1]
    rows = [["ssae default (4 members, the preset)", at4["ev"], at4["train_s"], at4["epoch"]],
            [f"ssae default, {members} members", d["points"][-1]["ev"], d["points"][-1]["train_s"],
             d["points"][-1]["epoch"]],
            ["ssae additive (closed form, ridge picked on validation rows)", res["additive"]["final_ev"],
             res["additive"]["train_s"], 0],
            ["ridge on raw features (ssae.baselines)", res["ridge"]["final_ev"], res["ridge"]["train_s"], 0],
            ["ssae paper (top 1000 dims)", max(p["ev"] for p in res["paper"]["points"]), res["paper"]["train_s"],
             len(res["paper"]["points"])],
            ["paper's loop (all dims standardised)", res["loop"]["best_ev"], res["loop"]["train_s"],
             res["loop"]["epochs"]]]
    t1 = C.md_table(["method", "held-out EV (best)", "train s", "epochs"], rows)
    def first(pts: list[dict], x: float) -> float | None:
        return next((p["train_s"] for p in pts if p["ev"] >= x), None)
    marks = [0.9, 0.95] + [round(at4["ev"] - 0.005, 3)]
    t2 = C.md_table(["held-out EV reached", "ssae default s", "paper's loop s"],
                    [[x, first(preset_pts, x), first(res["loop"]["points"], x)] for x in marks])
    return f"### {name}: {SETS[name][0]}\n\n{t1}\n\n{t2}\n\n{process_table(name, res, title=False)}"


def process_table(name: str, res: dict, title: bool = True) -> str:
    proc = [[f"{k}", v.get("ev"), v.get("train_process_s"), v.get("total_s")] for k, v in res.items()
            if k.startswith(("process", "before"))]
    t = C.md_table(["whole process (`ssae train` + `ssae eval`)", "held-out EV", "train process s", "total s"], proc)
    return (f"### {name}: {SETS[name][0]}\n\n" if title else "") + t + "\n"


if __name__ == "__main__":
    main()
