"""ssae.train at SD3.5 conditioning size: 1,366,016 features (333 x 4096 context + 2048 pooled) per sample.

Synthetic additive + interaction features for 1500 samples (the paper's data-set size) are written as
fp16 shards with ssae.append_features into one feature-set folder (no held-out split: every row is
training data, ssae holds 10% back for early stopping), and the default preset is trained on the first
N rows, all dimensions kept (no top-k selection). Each N runs in its own subprocess: wall time, CPU
time, peak RSS (and peak GPU memory on CUDA); a watchdog kills a run whose RSS passes --rss-limit-gb,
and the sweep stops at the first N that does not run.

    python benchmarks/bench_sd35_size.py                    # CPU: N = 300, 600
    python benchmarks/bench_sd35_size.py --full             # CPU: N = 300, 600, 1000, 1500
    python benchmarks/bench_sd35_size.py --device cuda      # GPU: N = 1500
    python benchmarks/bench_sd35_size.py --n 300 --profile  # where the time goes (cProfile, top functions)
    python benchmarks/bench_sd35_size.py --full --stream    # out of core: rows read from the shards per pass
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _common as C
import torch

SCRIPT = Path(__file__).resolve()
N_TOTAL = 1500


def worker(spec: dict) -> dict:
    from ssae import load_features
    from ssae.train import PRESETS, train, with_overrides
    data = C.first_rows(load_features(spec["path"]), spec["n"])
    recipe = with_overrides(PRESETS["default"], epochs=spec.get("epochs"), device=spec["device"],
                            stream=spec.get("stream"))
    cuda = spec["device"].startswith("cuda") or (spec["device"] == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    prof = None
    if spec.get("profile"):
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    t, c = time.perf_counter(), time.process_time()
    r = train(data, recipe)
    if cuda:
        torch.cuda.synchronize()
    out = {"n": len(data), "F": data.n_features, "train_s": time.perf_counter() - t, "cpu_s": time.process_time() - c,
           "peak_rss_mb": C.peak_rss_mb(), "epochs_run": len(r.history), "best_epoch": r.best_epoch,
           "val_ev": 1 - min((h["val"] for h in r.history if h.get("val") is not None), default=float("nan")),
           "device": spec["device"]}
    if cuda:
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu"] = torch.cuda.get_device_name(0)
    if prof is not None:
        import io
        import pstats
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
        out["profile_tottime"] = buf.getvalue()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(40)
        out["profile_cumulative"] = buf.getvalue()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default=None, help="comma-separated N (default: 300,600 on CPU, 1500 on CUDA)")
    ap.add_argument("--folder", default="/tmp/ssae_bench/sd35_n1500", help="sharded feature-set folder (cached)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--epochs", type=int, default=None,
                    help="override the preset's epochs per member (early stopping stays on)")
    ap.add_argument("--rss-limit-gb", type=float, default=22.0, help="kill a run whose resident memory passes this")
    ap.add_argument("--timeout", type=float, default=3600.0, help="kill a run that takes longer (s)")
    ap.add_argument("--full", action="store_true", help="CPU: also N = 1000 and 1500")
    ap.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                    help="force out-of-core training on or off (default: ssae decides from free memory)")
    ap.add_argument("--profile", action="store_true", help="cProfile the run; top functions go into the JSON")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        C.warm_up()
        C.worker_reply(worker(json.loads(a.worker)))
        return
    cuda = a.device.startswith("cuda") or (a.device == "auto" and torch.cuda.is_available())
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU here")
    ns = [int(v) for v in (a.n or ("1500" if cuda else "300,600,1000,1500" if a.full else "300,600")).split(",")]
    if max(ns) > N_TOTAL:
        raise SystemExit(f"N is at most {N_TOTAL}")
    folder = C.synthetic_folder(a.folder, N_TOTAL, C.SD35_SHAPE, n_write=max(ns), heldout_pairs=0)
    C.prime()
    runs = []
    for n in ns:
        from ssae import load_features
        C.warm_file_cache(C.first_rows(load_features(folder), n).shards)
        print(f"N={n}: training the default preset on {n} x {C.SD35_F:,} ({a.device}) ...", flush=True)
        r = C.run_worker(SCRIPT, {"path": str(folder), "n": n, "device": a.device, "epochs": a.epochs,
                                  "profile": a.profile, "stream": a.stream},
                         timeout=a.timeout, rss_limit_mb=a.rss_limit_gb * 1024)
        r.setdefault("n", n)
        runs.append(r)
        if "error" in r:
            print(f"  N={n} did not run: {r['error'][:300]}", flush=True)
            break
        if a.profile:
            print(r["profile_tottime"])
    streamed = {None: "", True: "-stream", False: "-no-stream"}[a.stream]
    rows = []
    for r in runs:
        if "error" in r:
            rows.append([r["n"], f"{C.SD35_F:,}", "failed", None, None, r.get("watched_rss_mb", 0) / 1024, None,
                         None, r["error"][:80]])
        else:
            rows.append([r["n"], f"{r['F']:,}", r["train_s"], r["cpu_s"], r["epochs_run"], r["peak_rss_mb"] / 1024,
                         r["watched_anon_mb"] / 1024,
                         None if r.get("peak_gpu_mb") is None else r["peak_gpu_mb"] / 1024, f"{r['val_ev']:.4f}"])
    # RSS counts the memory-mapped shards' pages while they are cached; anonymous memory is what the run
    # itself holds (sampled every 0.2 s by the watchdog, so a lower bound of its peak)
    table = C.md_table(["N", "F", "train wall s", "train CPU s", "epochs", "peak RSS GiB", "peak anon GiB",
                        "peak GPU GiB", "validation EV"], rows)
    ok = [r for r in runs if "error" not in r]
    print(f"\n### SD3.5-size features, fp16 shards, default preset{streamed}, {a.device}; {C.machine()['cpu']}, "
          f"{C.machine()['cores']} cores, {C.machine()['ram_gib']} GiB\n\n{table}\n")
    if ok:
        print(f"largest N that ran: {max(r['n'] for r in ok)}")
    name = f"bench_sd35_size-{'cuda' if cuda else 'cpu'}-n{'-'.join(map(str, ns))}{streamed}"
    out = C.save_json(name, {"args": vars(a), "runs": runs, "table": table})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
