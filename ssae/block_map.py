"""Which joint block carries which concept: a table of block sites x categories and its heat map.

In the concept world (`ssae.world.block_map`) an SSAE edit at each site is read in pixels
(`success_per_category`). On any real model, where nothing reads a concept from pixels, the SSAE Block Map node
reads the sampled latents, all from one noise: how far each edit moves the sample from the unedited one
(`movement_per_category`; an edit of strength 0 is the identity, so the unedited sample is the strength-0
reference), and, given the text encoder, how far it goes toward the sample of the edited prompt
(`toward_prompt_per_category`: 1 lands on it, 0 stays put, below 0 moves away), which tells an edit that lands
from one that only moves the image. Pure functions, no ComfyUI: the swaps to make, the readings, the table and
its picture.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .block_edit import BlockSite, parse_block_site
from .concepts import ConceptChoice
from .errors import SSAEError
from .safefile import atomic_write_bytes, atomic_write_text
from .vocab import Vocabulary

MOVEMENT = "movement_per_category"
MOVEMENT_TITLE = "how far an edit moves the sample, per block and category"
TOWARD = "toward_prompt_per_category"
TOWARD_TITLE = "how far an edit goes toward the edited prompt's sample, per block and category"
STREAM_TITLES = {"txt_in": "text stream, block input", "txt": "text stream, block output",
                 "img_in": "image stream, block input", "img": "image stream, block output"}


@dataclass(frozen=True)
class Swap:
    """One edit of a map: the prompt's concept `old` of `category` replaced by `new`."""

    category: str
    old: str
    new: str

    @property
    def choice(self) -> ConceptChoice:
        return ConceptChoice("edit", {self.new: 1.0}, {self.old: 1.0})


def category_swaps(vocabulary: Vocabulary, concepts: list[str], per_category: int,
                   untrained: set[str] = frozenset()) -> tuple[list[Swap], list[str]]:
    """For each category the prompt names (`concepts`, one per category at most), its concept swapped for the next
    `per_category` concepts of the category, in vocabulary order and wrapping round, skipping `untrained` ones (an
    SSAE cannot edit them); and notes on the categories left without a swap."""
    if per_category < 1:
        raise SSAEError(f"swaps per category must be 1 or more, got {per_category}")
    swaps, notes = [], []
    for category, options in vocabulary.categories.items():
        held = [c for c in concepts if c in options]
        if not held:
            continue
        i = options.index(held[0])
        targets = [options[(i + k) % len(options)] for k in range(1, len(options))]
        targets = [c for c in targets if c not in untrained][:per_category]
        if held[0] in untrained or not targets:
            notes.append(f"{category}: no swap ({held[0] if held[0] in untrained else 'every other concept'} is "
                         "untrained in an SSAE of the map)")
            continue
        swaps += [Swap(category, held[0], new) for new in targets]
    if not swaps:
        raise SSAEError("the prompt names no concept of the SSAE's vocabulary that the SSAEs can swap: write the "
                        "prompt (or its concepts) in the context" + (f" ({'; '.join(notes)})" if notes else ""))
    return swaps, notes


def relative_distance(reference: torch.Tensor, edited: torch.Tensor) -> float:
    """||edited - reference|| / ||reference||: how far an edit moved a sample, as a share of the sample's size."""
    ref = reference.float()
    return float((edited.float() - ref).norm() / ref.norm().clamp_min(1e-12))


def toward_target(reference: torch.Tensor, edited: torch.Tensor, target: torch.Tensor) -> float:
    """1 - ||edited - target|| / ||reference - target||: how much of the way from the unedited sample to the edited
    prompt's sample (`target`, same noise) an edit went; 1 on it, 0 no nearer, below 0 farther."""
    gap = (reference.float() - target.float()).norm().clamp_min(1e-12)
    return float(1 - (edited.float() - target.float()).norm() / gap)


def swapped_prompt(prompt: str, swap: Swap) -> str | None:
    """The prompt with the swap's old phrase replaced by its new one, or None when the old phrase is not in the
    prompt exactly once (a context of concept names, or a phrase written another way)."""
    return prompt.replace(swap.old, swap.new) if prompt.count(swap.old) == 1 else None


def per_category(swaps: list[Swap], values: list[float]) -> dict[str, float]:
    """{category: mean of its swaps' values}; `values` one per swap, in the order of `swaps`."""
    if len(values) != len(swaps):
        raise ValueError(f"{len(values)} values for {len(swaps)} swaps")
    per: dict[str, list[float]] = {}
    for s, v in zip(swaps, values):
        per.setdefault(s.category, []).append(v)
    return {c: float(np.mean(v)) for c, v in per.items()}


def site_readings(swaps: list[Swap], reference: torch.Tensor, edited: list[torch.Tensor],
                  targets: list[torch.Tensor | None]) -> dict:
    """One site's row of the map from its edited samples (one per swap) and the swaps' edited-prompt samples (None
    where a swap has none): `movement` and, where there are targets, `toward_prompt`, each as a mean and per
    category."""
    moved = [relative_distance(reference, e) for e in edited]
    row = {"movement": float(np.mean(moved)), MOVEMENT: per_category(swaps, moved)}
    aimed = [(s, toward_target(reference, e, t)) for s, e, t in zip(swaps, edited, targets) if t is not None]
    if aimed:
        values = [v for _, v in aimed]
        row |= {"toward_prompt": float(np.mean(values)), TOWARD: per_category([s for s, _ in aimed], values)}
    return row


def best_sites(report: dict, key: str) -> dict[str, str]:
    """{category: the site whose `key` reading is largest}, for the categories the map read."""
    sites = report["sites"]
    read = {c for row in sites.values() for c in row.get(key, {})}
    return {c: max(sites, key=lambda site: sites[site].get(key, {}).get(c, -np.inf)) for c in sorted(read)}


def site_order(site: str) -> tuple[int, int]:
    """Sort key of a block site: by block, then text input, text output, image input, image output."""
    s = parse_block_site(site)
    return s.block, list(STREAM_TITLES).index(s.part)


def _sites(report: dict) -> list[BlockSite]:
    return [parse_block_site(s) for s in report["sites"]]


def map_streams(report: dict) -> list[str]:
    """The streams of the mapped sites ('txt_in', 'img', ...), in the order they first appear."""
    return list(dict.fromkeys(s.part for s in _sites(report)))


def map_blocks(report: dict) -> list[int]:
    """The blocks that hold a mapped site, in order."""
    return sorted({s.block for s in _sites(report)})


def site_grid(report: dict, stream: str, key: str = "success_per_category") -> np.ndarray:
    """[mapped blocks, categories] of one stream's `key` values (NaN where a site was not mapped or a category not
    swapped)."""
    blocks, categories = map_blocks(report), report["categories"]
    grid = np.full((len(blocks), len(categories)), np.nan)
    for r, i in enumerate(blocks):
        site = report["sites"].get(f"joint_blocks.{i}.{stream}")
        if site is not None:
            grid[r] = [site[key].get(c, np.nan) for c in categories]
    return grid


def heat_map(report: dict, key: str = "success_per_category", title: str = "edit success per block and category",
             vmax: float | None = 1.0, swaps: int | None = None) -> np.ndarray:
    """uint8 [H, W, 3]: `key` per block (rows) and category (columns), one panel per stream, each cell written
    out. `vmax` None, for readings with no common top (movement: a background moves more pixels than a shape):
    each category coloured by its share of that category's largest value, so each column shows its best site.
    `swaps`: the count in the title (default the report's `cases`)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    streams, blocks = map_streams(report), map_blocks(report)
    grids = [site_grid(report, s, key) for s in streams]
    if vmax is None:
        top = np.fmax.reduce(np.concatenate(grids), axis=0)  # NaN (no warning) for a category never swapped
        colours = [g / np.where(top > 0, top, 1.0) for g in grids]
        title += ", coloured per category"
    else:
        colours = [g / vmax for g in grids]
    fig, axes = plt.subplots(1, len(streams), figsize=(3.2 * len(streams) + 0.6, 0.5 * len(blocks) + 1.6), dpi=100,
                             squeeze=False)
    for ax, stream, grid, colour in zip(axes[0], streams, grids, colours):
        ax.imshow(colour, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, "–" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                    color="black" if colour[i, j] > 0.6 else "white", fontsize=9)
        ax.set_xticks(range(len(report["categories"])), report["categories"], fontsize=8, rotation=25, ha="right")
        ax.set_yticks(range(len(blocks)), [f"block {i}" for i in blocks], fontsize=8)
        ax.set_title(STREAM_TITLES.get(stream, stream), fontsize=9)
    fig.suptitle(f"{title} ({swaps or report['cases']} swaps)", fontsize=10)
    fig.tight_layout()
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img


def save_map(report: dict, image: np.ndarray, base: str | Path) -> None:
    """`base`.json (the report) and `base`.png (its heat map), each written whole or not at all."""
    import matplotlib.image
    png = io.BytesIO()
    matplotlib.image.imsave(png, image, format="png")
    atomic_write_text(json.dumps(report, indent=1) + "\n", f"{base}.json")
    atomic_write_bytes(png.getvalue(), f"{base}.png")
