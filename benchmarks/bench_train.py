"""Training speed of ssae.train against the paper's training loop, to the same held-out quality.

Written for the default before issue #13 (Adam epochs, so an epoch budget made a curve); the current presets'
time-to-quality curves come from bench_time_to_quality.py, which reuses this script's `paper_loop`.

Baseline: a self-contained re-implementation of the reference loop (below, `paper_loop`): decoder-only
SSAE with one learned embedding per concept [K, d=10], LeakyReLU 0.2, x_hat = W sigma(M ⊙ Y) + b, plain
MSE, Adam, batch 16 in file order (no shuffling), lr 1e-3 -> 1e-4 linearly per epoch. Two preprocessing
variants: the reference's top-1000 dimensions by range + min-max scaling, and all dimensions
standardised (the space ssae's default works in, so that the qualities compare).

After every baseline epoch the clock is paused and the held-out explained variance (EV, in the original
feature space, as ssae.metrics.evaluate) is measured. X = the baseline's best held-out EV; its time to
X is the training time (data loading and preprocessing included) at the first epoch reaching X.
ssae's time to >= X is the wall time of the cheapest complete `ssae.train` call whose model reaches X,
over a sweep of epoch budgets (ssae's default preset; `additive` is closed form, one call).

Every method runs in its own subprocess (peak RSS per method), one after another in this one run.

    python benchmarks/bench_train.py                         # demo features, 1500 prompts (paper regime)
    python benchmarks/bench_train.py --data full             # demo features, all 4224 prompts
    python benchmarks/bench_train.py --data synthetic        # SD3.5-shaped 300 x 1,366,016 fp16
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import _common as C
import torch
import torch.nn.functional as F_

SCRIPT = Path(__file__).resolve()


# -- the baseline: the reference training loop ---------------------------------------------------

class PaperSSAE(torch.nn.Module):
    """The reference decoder-only SSAE: one embedding per concept, x_hat = W LeakyReLU(M ⊙ Y) + b."""

    def __init__(self, n_concepts: int, n_features: int, d: int = 10):
        super().__init__()
        self.embed = torch.nn.Parameter(torch.rand(n_concepts, d))  # U(0, 1) as the reference
        self.decoder = torch.nn.Linear(n_concepts * d, n_features)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        code = F_.leaky_relu(mask.unsqueeze(-1) * self.embed, 0.2).flatten(1)
        return self.decoder(code)


class HeldOut:
    """Held-out EV in the original feature space (1 - SSE/SST, SST about the split's mean), in row chunks."""

    def __init__(self, X: torch.Tensor, mask: torch.Tensor, chunk: int = 64):
        self.X, self.mask, self.chunk = X, mask, chunk
        s1 = X.double().sum(0) if X.shape[1] < 1 << 18 else sum(X[a:a + chunk].double().sum(0)
                                                                   for a in range(0, X.shape[0], chunk))
        s2 = sum((X[a:a + chunk].double() ** 2).sum(0) for a in range(0, X.shape[0], chunk))
        self.sst = float((s2 - s1 ** 2 / X.shape[0]).sum())

    @torch.no_grad()
    def ev(self, predict) -> float:
        sse = 0.0
        for a in range(0, self.X.shape[0], self.chunk):
            sse += float(((self.X[a:a + self.chunk] - predict(self.mask[a:a + self.chunk])) ** 2).double().sum())
        return 1.0 - sse / self.sst


def paper_loop(spec: dict) -> dict:
    from ssae import load_features
    torch.manual_seed(spec["seed"])
    epochs, bs, lr0, lr1 = spec["epochs"], 16, 1e-3, 1e-4
    t0, c0 = time.perf_counter(), time.process_time()
    data = load_features(spec["path"])
    rows = data.indices("train")
    X = data.load(rows)
    M = data.mask(rows)
    if spec["prep"] == "top1000-minmax":  # the reference: 1000 dims of largest range, scaled to [0, 1]
        lo, hi = X.min(0).values, X.max(0).values
        idx = torch.topk(hi - lo, min(1000, X.shape[1])).indices.sort().values
        shift, scale = lo[idx], (hi - lo)[idx].clamp(min=1e-12)
        fill = X.mean(0)
        Y = (X[:, idx] - shift) / scale
    else:  # all dims standardised
        idx = None
        shift, scale = X.mean(0), X.std(0)
        scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
        Y = (X - shift) / scale
    del X
    model = PaperSSAE(M.shape[1], Y.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=lr0)
    setup, setup_cpu = time.perf_counter() - t0, time.process_time() - c0

    te = data.indices("test")  # evaluation is not timed
    meter = HeldOut(data.load(te), data.mask(te))

    def predict(m):
        y = model(m) * scale + shift
        if idx is None:
            return y
        out = fill.expand(m.shape[0], -1).clone()
        out[:, idx] = y
        return out

    curve = []
    clock, cpu = setup, setup_cpu
    for epoch in range(epochs):
        t, c = time.perf_counter(), time.process_time()
        lr = lr0 + (lr1 - lr0) * epoch / max(epochs - 1, 1)
        for g in opt.param_groups:
            g["lr"] = lr
        total = 0.0
        for a in range(0, Y.shape[0], bs):  # in order, no shuffling
            opt.zero_grad(set_to_none=True)
            loss = F_.mse_loss(model(M[a:a + bs]), Y[a:a + bs])
            loss.backward()
            opt.step()
            total += loss.item() * min(bs, Y.shape[0] - a)
        clock += time.perf_counter() - t
        cpu += time.process_time() - c
        curve.append({"epoch": epoch + 1, "train_s": clock, "cpu_s": cpu, "loss": total / Y.shape[0],
                      "ev": meter.ev(predict)})
        print(f"  epoch {epoch + 1}: {clock:.1f}s loss {curve[-1]['loss']:.4g} held-out EV {curve[-1]['ev']:.4f}",
              file=sys.stderr, flush=True)
    best = max(curve, key=lambda r: r["ev"])
    return {"method": f"paper loop ({spec['prep']})", "setup_s": setup, "train_s": clock, "cpu_s": cpu,
            "epochs": epochs,
            "n_train": int(rows.numel()), "n_kept": int(Y.shape[1]), "curve": curve,
            "final_ev": curve[-1]["ev"], "best_ev": best["ev"], "best_epoch": best["epoch"],
            "peak_rss_mb": C.peak_rss_mb()}


# -- ssae.train ------------------------------------------------------------------------------------

def ssae_run(spec: dict) -> dict:
    from ssae import load_features
    from ssae.metrics import evaluate
    from ssae.train import PRESETS, train, with_overrides
    data = load_features(spec["path"])
    recipe = with_overrides(PRESETS[spec["preset"]], epochs=spec.get("epochs"), device=spec.get("device"))
    t, c = time.perf_counter(), time.process_time()
    r = train(data, recipe)
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    rss = C.peak_rss_mb()
    m = evaluate(r.ssae, data, "test")
    return {"method": f"ssae {spec['preset']}", "epochs_budget": recipe.train.epochs, "epochs_run": len(r.history),
            "best_epoch": r.best_epoch, "train_s": seconds, "cpu_s": cpu, "ev": m["explained_variance"],
            "peak_rss_mb": rss,
            "n_train": int(data.indices("train").numel())}


# -- orchestration ----------------------------------------------------------------------------------

def time_to(runs: list[dict], x: float) -> dict | None:
    """The cheapest (wall time) complete run whose held-out EV reaches x."""
    ok = [r for r in runs if r["ev"] >= x - 1e-9]
    return min(ok, key=lambda r: r["train_s"]) if ok else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["sparse", "full", "synthetic"], default="sparse")
    ap.add_argument("--sparse-path", default="/tmp/sparse.safetensors", help="demo features, 1500 prompts")
    ap.add_argument("--full-path", default="/tmp/full.safetensors", help="demo features, all 4224 prompts")
    ap.add_argument("--synthetic-path", default=None,
                    help="sharded folder, built when missing (default /tmp/ssae_bench/sd35_heldout_nN)")
    ap.add_argument("--n", type=int, default=300, help="synthetic: number of samples (both splits)")
    ap.add_argument("--epochs-top", type=int, default=None,
                    help="baseline epochs, top-1000 min-max variant (default 100, the paper's; synthetic 30)")
    ap.add_argument("--epochs-all", type=int, default=None,
                    help="baseline epochs, all-dims standardised variant (default 20, synthetic 5; --full: 100)")
    ap.add_argument("--sweep", default="0,2,5,10,20,preset",
                    help="comma-separated epoch budgets for ssae default; 'preset' = its own (300, early stop)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="rounds over all methods; each method's least disturbed round counts (shared CPUs)")
    ap.add_argument("--device", default="cpu", help="device of the ssae runs (the baseline runs on CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full", action="store_true", help="the paper's 100 epochs for both baseline variants")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        spec = json.loads(a.worker)
        C.warm_up()
        C.worker_reply(paper_loop(spec) if spec["kind"] == "baseline" else ssae_run(spec))
        return

    synthetic = a.data == "synthetic"
    if synthetic:
        path = C.synthetic_folder(a.synthetic_path or f"/tmp/ssae_bench/sd35_heldout_n{a.n}", a.n, C.SD35_SHAPE,
                                  seed=a.seed)
    else:
        path = C.ensure_demo_features(a.sparse_path if a.data == "sparse" else a.full_path,
                                      1500 if a.data == "sparse" else None)
    epochs = {"top1000-minmax": a.epochs_top or (100 if a.full or not synthetic else 30),
              "all-standard": a.epochs_all or (100 if a.full else 5 if synthetic else 20)}
    C.warm_file_cache(path)
    C.prime()
    sweep = [None if s == "preset" else int(s) for s in a.sweep.split(",")]

    specs = [{"kind": "baseline", "path": str(path), "prep": prep, "epochs": ep, "seed": a.seed}
             for prep, ep in epochs.items()]
    specs.append({"kind": "ssae", "path": str(path), "preset": "additive", "device": a.device})
    specs += [{"kind": "ssae", "path": str(path), "preset": "default", "epochs": e, "device": a.device} for e in sweep]
    tries: list[list[dict]] = [[] for _ in specs]
    for rep in range(a.repeats):  # whole rounds, so every method samples the machine's load at several times
        for spec, got in zip(specs, tries):
            what = f"paper loop, {spec['prep']}, {spec['epochs']} epochs" if spec["kind"] == "baseline" else \
                f"ssae {spec['preset']}, epochs={'preset' if spec.get('epochs') is None else spec['epochs']}"
            print(f"[{rep + 1}/{a.repeats}] {what} ...", flush=True)
            r = C.run_worker(SCRIPT, spec)
            if "error" in r:
                raise SystemExit(f"a worker failed: {r['error']}")
            got.append(r)

    def fastest(runs: list[dict]) -> dict:  # the least disturbed repeat (the results are deterministic)
        best = max(runs[0]["curve"], key=lambda c: c["ev"])["ev"] if runs[0].get("curve") else None

        def seconds(r: dict) -> float:  # to the best EV along the curve, or the whole run
            if best is None:
                return r["train_s"]
            return next(c["train_s"] for c in r["curve"] if c["ev"] >= best - 1e-9)

        return min(runs, key=seconds) | {"repeat_train_s": [r["train_s"] for r in runs]}

    chosen = [fastest(t) for t in tries]
    baselines, additive, default_runs = chosen[:2], chosen[2], chosen[3:]
    default_full = default_runs[sweep.index(None)] if None in sweep else default_runs[-1]

    overview = [[f"{b['method']}, {b['epochs']} epochs", b["final_ev"], b["best_ev"], b["train_s"], b["cpu_s"],
                 b["peak_rss_mb"]] for b in baselines]
    overview += [[f"{r['method']} ({r['epochs_run']} epochs)", r["ev"], r["ev"], r["train_s"], r["cpu_s"],
                  r["peak_rss_mb"]] for r in (additive, default_full)]
    speed, ratios = [], {}
    for b in baselines:
        x = b["best_ev"]
        first = next(c for c in b["curve"] if c["ev"] >= x - 1e-9)
        for name, rs in (("ssae additive", [additive]), ("ssae default", default_runs)):
            hit = time_to(rs, x)
            row = [b["method"], x, first["train_s"], name]
            if x <= 0:  # worse than predicting the training mean: no training needed to match it
                row += ["n/a: X <= 0", None, None]
            elif hit is None:
                row += [None, None, None]
            else:
                row += [f"{hit['train_s']:.3g} (epochs={hit['epochs_budget']})", first["train_s"] / hit["train_s"],
                        first["cpu_s"] / hit["cpu_s"]]
                ratios[f"{name} vs {b['method']}"] = {"wall": row[-2], "cpu": row[-1], "x": x}
            speed.append(row)
    title = (f"{a.data}: {path} ({baselines[0]['n_train']} training rows, {baselines[1]['n_kept']:,} dims), "
             f"{C.machine()['cpu']}, {C.machine()['cores']} cores, fastest of {a.repeats} round(s)")
    t1 = C.md_table(["method", "held-out EV final", "held-out EV best", "train wall s", "train CPU s",
                     "peak RSS MiB"], overview)
    t2 = C.md_table(["baseline", "X = its best EV", "baseline wall s to X", "ssae", "ssae wall s to >= X",
                     "speedup (wall)", "speedup (CPU)"], speed)
    t3 = C.md_table(["ssae default epochs budget", "epochs run", "train wall s", "train CPU s", "held-out EV",
                     "peak RSS MiB"],
                    [[r["epochs_budget"], r["epochs_run"], r["train_s"], r["cpu_s"], r["ev"], r["peak_rss_mb"]]
                     for r in default_runs])
    print(f"\n### {title}\n\n{t1}\n\n{t2}\n\n{t3}\n")
    out = C.save_json(f"bench_train-{a.data}" + ("-full" if a.full else ""), {
        "title": title, "args": vars(a), "baselines": baselines, "additive": additive,
        "default_sweep": default_runs, "speedups": ratios, "tables": [t1, t2, t3]})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
