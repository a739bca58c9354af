"""Reading a scene's concepts back from pixels, deterministically and robust to imperfect samples.

Background: the median colour of the image border, nearest background palette entry. Object: how far each
pixel lies from the background towards the object's colour (the median of the pixels farthest from the
background), as a soft coverage in [0, 1]; its colour is the nearest object palette entry, its position the
nearest nominal centre (for the first world: the quadrant of its centroid), its shape the template (centred on the
centroid, scaled to the same area) that overlaps it most (soft intersection over union), and its size the
nominal radius nearest to the one its area gives for that shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .render import OUTLINE_AREA, coverage
from .scene import CONCEPT, WorldSpec

MIN_CONTRAST = 0.25
"""An image whose pixels all lie closer than this to the background colour (RGB distance in [0, 1] units)
has no object."""
MIN_AREA = 12
"""An object smaller than this many pixels (at 64 x 64) is not read."""


@dataclass(frozen=True)
class Reading:
    """What an image shows: a concept per category (None where no object could be read) and the evidence."""

    concepts: dict[str, str | None]
    area: float = 0.0
    centroid: tuple[float, float] = (0.0, 0.0)
    shape_iou: dict[str, float] = field(default_factory=dict)
    coverage: np.ndarray | None = field(default=None, repr=False, compare=False)
    """[H, W] share of each pixel the object covers (None: no object read)."""

    def matches(self, combo) -> dict[str, bool]:
        """Per category: does the image show the concept of `combo` (one concept per category, in order)?"""
        return {cat: self.concepts[cat] == c for cat, c in zip(self.concepts, combo)}

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """[H, W] the object's coverage (0 outside it, and everywhere where no object was read)."""
        return self.coverage if self.coverage is not None else np.zeros(shape)


def as_float_image(image) -> np.ndarray:
    """An RGB image [H, W, 3] (uint8, or float in [0, 1]; numpy or torch; ComfyUI's [1, H, W, 3]) as float64."""
    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {list(arr.shape)}")
    return arr.astype(np.float64) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float64)


def _nearest(value, palette: dict[str, tuple[float, ...] | float]) -> str:
    names = list(palette)
    dist = np.linalg.norm(np.asarray([palette[n] for n in names], np.float64).reshape(len(names), -1)
                          - np.reshape(value, (1, -1)), axis=1)
    return names[int(dist.argmin())]


def read_image(image, spec: WorldSpec = CONCEPT) -> Reading:
    """The concepts an image of a `spec` world shows, with the area, centroid, template overlaps and coverage
    they were read from."""
    img = as_float_image(image)
    h, w, _ = img.shape
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg = np.median(border, axis=0)
    concepts: dict[str, str | None] = dict.fromkeys(spec.categories)
    concepts["background"] = _nearest(bg, spec.backgrounds)
    dist = np.linalg.norm(img - bg, axis=-1)
    if dist.max() < MIN_CONTRAST:
        return Reading(concepts)
    obj = np.median(img[dist >= 0.6 * dist.max()], axis=0)
    axis = obj - bg
    alpha = np.clip((img - bg) @ axis / (axis @ axis), 0.0, 1.0)  # share of each pixel the object covers
    alpha[alpha < 0.25] = 0.0  # faint haze around an imperfect sample is not object
    area = float(alpha.sum())
    if area < MIN_AREA * h * w / 64 ** 2:
        return Reading(concepts, area, coverage=alpha)
    cx = float((alpha.sum(0) * (np.arange(w) + 0.5)).sum() / area)
    cy = float((alpha.sum(1) * (np.arange(h) + 0.5)).sum() / area)
    scale = 64 / w
    concepts["colour"] = _nearest(obj, spec.colours)
    concepts["position"] = _nearest((cx * scale, cy * scale), spec.positions)
    iou = {}
    for shape, outline in spec.shapes.items():
        template = coverage(outline, cx, cy, float(np.sqrt(area / OUTLINE_AREA[outline])), h)
        iou[shape] = float(np.minimum(template, alpha).sum() / np.maximum(template, alpha).sum())
    concepts["shape"] = max(iou, key=iou.get)
    if spec.sizes:
        radius = float(np.sqrt(area / OUTLINE_AREA[spec.shapes[concepts["shape"]]])) * scale
        concepts["size"] = _nearest(radius, spec.sizes)
    return Reading(concepts, area, (cx, cy), iou, alpha)


def measure(image, spec: WorldSpec = CONCEPT) -> dict[str, str | None]:
    """Category -> the concept an image shows (None where no object could be read)."""
    return read_image(image, spec).concepts


def object_mask(image) -> np.ndarray:
    """Bool [H, W]: the pixels the object covers at least half of (all False where there is no object)."""
    img = as_float_image(image)
    return read_image(img).mask(img.shape[:2]) >= 0.5


def fragments(mask: np.ndarray, min_pixels: int = MIN_AREA) -> int:
    """Connected pieces (4-neighbour) of a bool mask with at least `min_pixels` pixels: 1 for a whole object,
    more for an object broken into pieces."""
    labels = np.zeros(mask.shape, int)
    pieces = 0
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        pieces_label = labels.max() + 1
        stack, size = [start], 0
        labels[start] = pieces_label
        while stack:
            y, x = stack.pop()
            size += 1
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = pieces_label
                    stack.append((ny, nx))
        pieces += size >= min_pixels
    return pieces
