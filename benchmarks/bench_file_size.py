"""SSAE file sizes per site (issue 19, item 5), and what storing the readout in half precision costs.

Measured: the `default` preset trained on each feature set, saved as an ssae/2 file (half-precision readout, no
column for a dimension constant in training) and with `half=False`; the held-out explained variance of each
file as `ssae eval` computes it (loaded back); and the size the same model took in format ssae/1 (a float32
readout over every dimension), from its tensor shapes. The sets: the concept world's conditioning (its CLIP-L
encodings of all 192 combinations, from the world's cache, in SD3's 77 x 4096 + 2048 layout; skipped when no
world is built) and the MiniLM benchmark sets of `bench_time_to_quality.py`.

Computed from shapes (no SD3.5 weights here): SD3.5 Medium's conditioning (154 x 4096 + 2048: 77 CLIP rows, zero
in channels 2048-4095, whose first row, CLIP's start token, is the same for every prompt; 77 T5 rows; the pooled
vector) and a joint block's text (154 x 1536) and image (1536) streams, for the portrait vocabulary (28 concepts)
and the default's 4 members of 128 hidden units.

    python benchmarks/bench_file_size.py [--data demo,sparse,dense24,wide] [--world ~/.cache/ssae/world]
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import _common as C
import torch
from bench_time_to_quality import SETS, ensure

MB = 1e6


def ssae1_bytes(K: int, H: int, F: int) -> int:
    """Tensor bytes of an ssae/1 default file: embed, W1, b1, a float32 readout [K + H, F], b, shift, scale."""
    return 4 * (K + K * H + H + (K + H) * F + 3 * F)


def ssae2_bytes(K: int, H: int, F: int, kept: int) -> int:
    """Tensor bytes of an ssae/2 default file: the readout in float16 over the `kept` columns, b, shift and scale
    of those, an int32 index of them and the fill of all F (when some are dropped)."""
    dropped = 4 * kept + 4 * F if kept < F else 0
    return 4 * (K + K * H + H) + 2 * (K + H) * kept + 12 * kept + dropped


def world_conditioning(world: Path, out: Path) -> Path | None:
    """The world's conditioning of every combination (train: the 142 the world trains on; test: the 50 that hold
    a held-out pair), as SSAE Capture Conditioning records it; None without a built world."""
    clip = world / "models" / "text_encoders" / "world_clip_l.safetensors"
    if not clip.is_file():
        return None
    if out.exists():
        return out
    import ssae
    from ssae.world.scene import make_world
    from ssae.world.text import TextEncoder, comfy_conditioning
    w = make_world()
    prompts = [w.prompt(c) for c in w.combinations]
    hidden, pooled = comfy_conditioning(*TextEncoder.load(clip).encode(prompts))
    x = torch.cat([hidden.flatten(1), pooled], 1)
    return ssae.save_features(out, x, w.vocabulary, [list(c) for c in w.combinations], w.split(), prompts,
                              "conditioning", {"clip": [77, 4096], "pooled_output": [2048]})


def measure(name: str, path: Path) -> dict:
    import ssae
    from ssae.metrics import evaluate
    from ssae.train import PRESETS, train, with_overrides
    data = ssae.load_features(path)
    model = train(data, with_overrides(PRESETS["default"], device="cpu")).ssae
    folder = Path(tempfile.mkdtemp())
    half, full = model.save(folder / "half.safetensors"), model.save(folder / "full.safetensors", half=False)
    ev_half = evaluate(ssae.SSAE.load(half), data, "test")["explained_variance"]
    ev_full = evaluate(ssae.SSAE.load(full), data, "test")["explained_variance"]
    K, H = data.vocabulary.n_concepts, model.model.cfg.hidden
    return {"set": name, "site": data.site, "shape": data.feature_shape, "F": data.n_features,
            "kept": model.model.cfg.n_features, "K": K, "H": H, "ssae1_mb": ssae1_bytes(K, H, data.n_features) / MB,
            "float32_mb": full.stat().st_size / MB, "ssae2_mb": half.stat().st_size / MB,
            "ev_float32": ev_full, "ev_half": ev_half, "ev_change": ev_half - ev_full}


def sd35_rows(K: int = 28, H: int = 512) -> list[dict]:
    cond_F = 154 * 4096 + 2048
    sites = [("SD3.5 Medium conditioning", "154 x 4096 + 2048", cond_F, cond_F - 77 * 2048 - 2048),
             ("SD3.5 Medium joint block, text stream", "154 x 1536", 154 * 1536, 154 * 1536),
             ("SD3.5 Medium joint block, image stream (token mean)", "1536", 1536, 1536)]
    return [{"site": s, "shape": shape, "F": F, "kept": kept, "K": K, "H": H, "ssae1_mb": ssae1_bytes(K, H, F) / MB,
             "ssae2_mb": ssae2_bytes(K, H, F, kept) / MB} for s, shape, F, kept in sites]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="demo,sparse,dense24,wide", help=f"comma-separated, of {', '.join(SETS)}")
    ap.add_argument("--folder", default="/tmp/ssae_bench", help="where the MiniLM feature sets are cached")
    ap.add_argument("--world", default=os.environ.get("SSAE_WORLD_CACHE", str(Path.home() / ".cache/ssae/world")))
    a = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    cond = world_conditioning(Path(a.world), Path(a.folder) / "world_conditioning.safetensors")
    if cond is not None:
        rows.append(measure("world conditioning", cond))
    for name in filter(None, a.data.split(",")):
        rows.append(measure(name, ensure(name, Path(a.folder))))
    measured = C.md_table(["set", "site, shape", "values", "kept (not constant)", "ssae/1 MB", "ssae/2 MB",
                           "ssae/2 float32 MB", "held-out EV float32", "half precision changes it by"],
                          [[r["set"], f"{r['site']} {r['shape']}", r["F"], r["kept"], round(r["ssae1_mb"], 1),
                            round(r["ssae2_mb"], 1), round(r["float32_mb"], 1), round(r["ev_float32"], 4),
                            f"{r['ev_change']:+.1e}"] for r in rows])
    computed = C.md_table(["site", "shape", "values", "kept", "ssae/1 MB", "ssae/2 MB"],
                          [[r["site"], r["shape"], r["F"], r["kept"], round(r["ssae1_mb"]), round(r["ssae2_mb"])]
                           for r in sd35_rows()])
    print(measured + "\n\n" + computed)
    out = C.save_json("bench_file_size", {"measured": rows, "sd35": sd35_rows(), "tables": [measured, computed]})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
