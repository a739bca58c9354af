"""Image grids and Markdown tables of measured images."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

OK_RGB, WRONG_RGB, NEUTRAL_RGB = (40, 170, 60), (210, 40, 40), (128, 128, 128)


def image_grid(images: Sequence[np.ndarray], columns: int, correct: Sequence[bool | None] | None = None,
               border: int = 2, scale: int = 2) -> np.ndarray:
    """Images [H, W, 3] uint8 in rows of `columns`, each framed green (correct), red (wrong) or grey (None)."""
    if not len(images):
        raise ValueError("no images to put in a grid")
    h, w, _ = images[0].shape
    rows = -(-len(images) // columns)
    cell_h, cell_w = h + 2 * border, w + 2 * border
    out = np.full((rows * cell_h, columns * cell_w, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        flag = None if correct is None else correct[i]
        frame = NEUTRAL_RGB if flag is None else OK_RGB if flag else WRONG_RGB
        out[r * cell_h:(r + 1) * cell_h, c * cell_w:(c + 1) * cell_w] = frame
        out[r * cell_h + border:r * cell_h + border + h, c * cell_w + border:c * cell_w + border + w] = img
    return out.repeat(scale, 0).repeat(scale, 1)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an RGB uint8 image as PNG (creating the folder)."""
    from PIL import Image
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows])
