"""How ssae.train's cost grows: time and peak RSS of the default preset vs N (samples) and vs F (features).

Synthetic additive + interaction features (benchmarks/_common.synthetic_folder, fp16 shards, every row
training data; ssae holds 10% back for early stopping), one member (an epoch is then one L-BFGS epoch of
10 iterations; the preset trains 4 members one after another). Each point runs twice, each in its own
subprocess: with 1 epoch and with 1 + E epochs (patience off, so exactly that), so per-epoch cost =
(T_{1+E} - T_1) / E and "setup" = T_1 minus one epoch (the F-dependent passes: statistics,
preprocessing, Gram matrix and its leading eigenvectors, readout solve). Peak RSS is the longer run's
VmHWM. Fitted log-log slopes are printed and drawn in benchmarks/cost_growth.png.

    python benchmarks/bench_scale.py                  # N 250..2000 at F=16384; F 4k..256k at N=500; E=20
    python benchmarks/bench_scale.py --full           # adds N=4000 and F=1M, and E=50
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import _common as C
import torch

SCRIPT = Path(__file__).resolve()
PNG = SCRIPT.parent / "cost_growth.png"


def worker(spec: dict) -> dict:
    from ssae import load_features
    from ssae.train import PRESETS, train, with_overrides
    data = C.first_rows(load_features(spec["path"]), spec["n"])
    recipe = with_overrides(PRESETS["default"], epochs=spec["epochs"], members=1, patience=0, device=spec["device"])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t, c = time.perf_counter(), time.process_time()
    r = train(data, recipe)
    out = {"n": len(data), "F": data.n_features, "epochs_run": len(r.history), "train_s": time.perf_counter() - t,
           "cpu_s": time.process_time() - c, "peak_rss_mb": C.peak_rss_mb()}
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def slope(xs, ys) -> float | None:
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if y and y > 0]
    if len(pts) < 2:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den if den else None


def _short(x: int) -> str:
    return f"{x // 1048576}M" if x >= 1048576 and x % 1048576 == 0 else \
        f"{x // 1024}k" if x >= 4096 and x % 1024 == 0 else str(x)


def plot(n_pts: list[dict], f_pts: list[dict], fixed_f: int, fixed_n: int, epochs: int, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    for ax, pts, key, label in ((axes[0], n_pts, "n", f"samples N (F = {fixed_f:,})"),
                                (axes[1], f_pts, "F", f"features F (N = {fixed_n})")):
        xs = [p[key] for p in pts]
        series = [("total", [p["train_s"] for p in pts], "C0", "o-"),
                  ("setup (F passes)", [p["setup_s"] for p in pts], "C1", "s-"),
                  (f"{epochs} epochs", [p["epochs_s"] for p in pts], "C2", "^-")]
        for name, ys, color, style in series:
            k = slope(xs, ys)
            ax.plot(xs, [max(y, 1e-3) for y in ys], style, color=color, ms=4,
                    label=f"{name} s" + (f" (slope {k:.2f})" if k is not None else ""))
        ax2 = ax.twinx()
        rss = [p["peak_rss_mb"] / 1024 for p in pts]
        k = slope(xs, rss)
        ax2.plot(xs, rss, "d--", color="C3", ms=4, label=f"peak RSS GiB (slope {k:.2f})")
        for a in (ax, ax2):
            a.set_xscale("log")
            a.set_yscale("log")
            a.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            a.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            a.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(xs)
        ax.set_xticklabels([_short(x) for x in xs])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("seconds")
        ax2.set_ylabel("peak RSS, GiB", color="C3")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=6.5, loc="upper left")
        ax.grid(True, which="major", alpha=0.3)
    fig.suptitle("ssae.train default preset: cost growth (CPU)" if not torch.cuda.is_available() else
                 "ssae.train default preset: cost growth", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    try:  # a palette PNG is a fraction of the size of an RGBA one
        from PIL import Image
        Image.open(path).convert("RGB").quantize(64).save(path, optimize=True)
    except Exception:  # noqa: BLE001 - the full-colour file is fine too
        pass
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-list", default=None, help="comma-separated N at fixed F (default 250,500,1000,2000)")
    ap.add_argument("--f-list", default=None, help="comma-separated F at fixed N (default 4096,16384,65536,262144)")
    ap.add_argument("--fixed-f", type=int, default=16384)
    ap.add_argument("--fixed-n", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=None, help="epochs per timed run (default 20; --full 50)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per measurement; the fastest counts")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--root", default="/tmp/ssae_bench", help="where the synthetic folders are cached")
    ap.add_argument("--rss-limit-gb", type=float, default=22.0, help="kill a worker whose RSS passes this")
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        C.warm_up()
        C.worker_reply(worker(json.loads(a.worker)))
        return
    n_list = [int(v) for v in (a.n_list or ("250,500,1000,2000,4000" if a.full else "250,500,1000,2000")).split(",")]
    f_list = [int(v) for v in (a.f_list or ("4096,16384,65536,262144,1048576" if a.full
                                            else "4096,16384,65536,262144")).split(",")]
    epochs = a.epochs or (50 if a.full else 20)
    root = Path(a.root)

    def folder(n_total: int, F: int) -> Path:
        return C.synthetic_folder(root / f"scale_n{n_total}_f{F}", n_total, [F], heldout_pairs=0, shard_rows=50)

    n_folder = folder(max(n_list), a.fixed_f)
    f_folders = {F: (n_folder if F == a.fixed_f and max(n_list) >= a.fixed_n else folder(a.fixed_n, F))
                 for F in f_list}
    cache: dict[tuple[int, int], dict] = {}

    def point(path: Path, n: int, F: int) -> dict:
        if (n, F) in cache:
            return cache[(n, F)]
        C.warm_file_cache(path)
        res = {}
        for e in (1, 1 + epochs):
            print(f"N={n} F={F:,} epochs={e} ...", flush=True)
            tries = [C.run_worker(SCRIPT, {"path": str(path), "n": n, "epochs": e, "device": a.device},
                                  rss_limit_mb=a.rss_limit_gb * 1024) for _ in range(a.repeats)]
            for r in tries:
                if "error" in r:
                    raise SystemExit(f"N={n} F={F}: {r['error']}")
            res[e] = min(tries, key=lambda r: r["train_s"]) | {
                "all_train_s": [r["train_s"] for r in tries],
                "peak_rss_mb": max(r["peak_rss_mb"] for r in tries)}
        one, more = res[1], res[1 + epochs]
        per_epoch = max(more["train_s"] - one["train_s"], 0.0) / epochs
        p = {"n": more["n"], "F": F, "setup_s": max(one["train_s"] - per_epoch, 0.0), "train_s": more["train_s"],
             "epochs_s": per_epoch * epochs, "per_epoch_s": per_epoch,
             "cpu_s": more["cpu_s"], "peak_rss_mb": more["peak_rss_mb"],
             "setup_peak_rss_mb": one["peak_rss_mb"], "peak_gpu_mb": more.get("peak_gpu_mb"),
             "all_setup_s": one["all_train_s"], "all_train_s": more["all_train_s"]}
        cache[(n, F)] = p
        return p

    C.prime()
    n_pts = [point(n_folder, n, a.fixed_f) for n in n_list]
    f_pts = [point(f_folders[F], a.fixed_n, F) for F in f_list]
    rows = [[f"N={p['n']}", f"{p['F']:,}", p["setup_s"], p["per_epoch_s"], p["train_s"], p["peak_rss_mb"] / 1024]
            for p in n_pts] + \
           [[f"F={p['F']:,}", p["n"], p["setup_s"], p["per_epoch_s"], p["train_s"], p["peak_rss_mb"] / 1024]
            for p in f_pts]
    table = C.md_table(["point", "N or F", "setup s", "s / epoch", f"total s ({1 + epochs} epochs)",
                        "peak RSS GiB"], rows)
    slopes = {f"{what} vs {key}": slope([p[key] for p in pts], [p[field] for p in pts])
              for key, pts in (("n", n_pts), ("F", f_pts))
              for what, field in (("setup", "setup_s"), ("per-epoch", "per_epoch_s"), ("total", "train_s"),
                                  ("peak RSS", "peak_rss_mb"))}
    m = C.machine()
    print(f"\n### ssae.train default, {epochs} epochs, fastest of {a.repeats}; {m['cpu']}, {m['cores']} cores\n")
    print(table)
    print("\nlog-log slopes: " + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items() if v is not None))
    if not a.no_plot:
        print(f"wrote {plot(n_pts, f_pts, a.fixed_f, a.fixed_n, epochs, PNG)} ({PNG.stat().st_size // 1024} KiB)")
    out = C.save_json("bench_scale", {"args": vars(a), "epochs": epochs, "vs_n": n_pts, "vs_f": f_pts,
                                      "slopes": slopes, "table": table})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
