"""Comparison tables and figures: SSAE presets against baselines on held-out concept combinations."""
from __future__ import annotations

from pathlib import Path

from .baselines import run_baselines
from .metrics import decoder_decorrelation, evaluate, ssae_alignment
from .store import FeatureSet
from .train import PRESETS, TrainResult, train


def ssae_row(name: str, result: TrainResult, data: FeatureSet) -> dict:
    """Held-out metrics of a trained SSAE, with alignment read off the test features by decoding."""
    test = data.indices("test")
    m = evaluate(result.ssae, data, "test")
    align = ssae_alignment(result.ssae, data.load(test), [data.labels[i] for i in test.tolist()])
    return {"method": name, **m, "alignment": align, "sees_test_features": False, "seconds": result.seconds,
            "decorrelation": decoder_decorrelation(result.ssae.model.concept_blocks().detach())}


def baseline_rows(data: FeatureSet, ssae_presets: list[str] = ("default", "additive"),
                  results: dict[str, TrainResult] | None = None, **baseline_kw) -> list[dict]:
    """One row per SSAE preset (trained here unless given in `results`) and per baseline."""
    rows = []
    for name in ssae_presets:
        r = (results or {}).get(name) or train(data, PRESETS[name])
        rows.append(ssae_row(f"SSAE {name}", r, data))
    for b in run_baselines(data, **baseline_kw):
        rows.append({"method": b.name, **b.metrics, "alignment": b.alignment, "sees_test_features": b.uses_input,
                     "seconds": None, "decorrelation": None})
    return rows


def format_table(rows: list[dict]) -> str:
    """A Markdown table of held-out explained variance, cosine, MSE and concept alignment."""
    def fmt(v, f):
        return "–" if v is None else format(v, f)
    lines = ["| method | held-out explained variance | cosine | MSE | concept alignment | sees test features |",
             "|---|---:|---:|---:|---:|:---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {fmt(r['explained_variance'], '.3f')} | {fmt(r['cosine'], '.3f')} | "
                     f"{fmt(r['mse'], '.4g')} | {fmt(r['alignment'], '.3f')} | "
                     f"{'yes' if r['sees_test_features'] else 'no'} |")
    return "\n".join(lines)


def draw_loss_curves(ax, histories: dict[str, list[dict]]) -> None:
    """Training and validation loss per epoch of each run on one axis (fractions of variance unexplained, log
    scale); a run of several members also draws, bold, the validation loss of the members' mean so far."""
    drawn = False
    for name, hist in histories.items():
        if not hist:
            continue
        drawn = True
        prefix = f"{name} " if name else ""
        ep = [h["epoch"] for h in hist]
        line, = ax.plot(ep, [h["loss"] for h in hist], lw=1, label=f"{prefix}train")
        if hist[0].get("val") is not None:
            ax.plot(ep, [h["val"] for h in hist], "--", lw=1, color=line.get_color(), label=f"{prefix}validation")
        if hist[0].get("ensemble") is not None:
            ax.plot(ep, [h["ensemble"] for h in hist], lw=2.5, alpha=0.6, color=line.get_color(),
                    label=f"{prefix}validation, mean of the members so far")
    if drawn:
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no training epochs (closed form)", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="epoch (members one after another)", ylabel="fraction of variance unexplained")


def loss_curve_image(history: list[dict], size: tuple[int, int] = (640, 400)):
    """uint8 [H, W, 3] picture of the training and validation loss per epoch (for a node's IMAGE output)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, ax = plt.subplots(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    draw_loss_curves(ax, {"": history})
    ax.set_title("SSAE training")
    fig.tight_layout()
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img


def plot_report(histories: dict[str, list[dict]], rows: list[dict], path: str | Path) -> Path:
    """PNG: training/validation loss curves (left) and held-out explained variance per method (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    draw_loss_curves(ax1, histories)
    ax1.set_title("Training (each in its own preprocessed space)")
    names = [r["method"] for r in rows]
    true_ev = [r["explained_variance"] for r in rows]
    ev = [max(v, -0.05) for v in true_ev]  # bars of very negative values would hide the others
    colors = ["tab:blue" if n.startswith("SSAE") else ("tab:gray" if not r["sees_test_features"] else "tab:orange")
              for n, r in zip(names, rows)]
    ax2.barh(names[::-1], ev[::-1], color=colors[::-1])
    for y, (v, t) in enumerate(zip(ev[::-1], true_ev[::-1])):
        ax2.text(max(v, 0) + 0.01, y, f"{t:.3f}", va="center", fontsize=8)
    ax2.set(xlim=(min(0, min(ev)), 1.1), xlabel="explained variance on held-out concept pairs",
            title="Held-out reconstruction\n(orange: auto-encoders given the test features)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
