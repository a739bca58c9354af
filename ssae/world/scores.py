"""Scores of edited and composed images, read in pixels: by category (what the image shows) and pixel by pixel
(what an edit must leave where it was, as editing benchmarks such as PIE-Bench measure it)."""
from __future__ import annotations

import numpy as np

from ..vocab import Combination
from .cases import EditCase
from .measure import Reading

GEOMETRY = ("shape", "position", "size")
"""Categories that move or reshape the object: an edit of none of them must leave the object's mask in place."""


def edit_scores(base: list[Reading], edited: list[Reading], cases: list[EditCase]) -> dict:
    """success: every swapped category reads as its new concept; preservation: every other category reads as in
    the unedited image; both: the two at once; per category: success of the edits that swap it."""
    success = [all(e.concepts[k] == new for k, new in zip(c.categories, c.new)) for e, c in zip(edited, cases)]
    kept = [all(e.concepts[k] == b.concepts[k] for k in b.concepts if k not in c.categories)
            for b, e, c in zip(base, edited, cases)]
    swapped = sorted({k for c in cases for k in c.categories}, key=list(base[0].concepts).index) if cases else []
    return {"success": _mean(success), "preservation": _mean(kept),
            "both": _mean([s and k for s, k in zip(success, kept)]), "n": len(cases),
            "success_per_category": {k: _mean([s for s, c in zip(success, cases) if k in c.categories])
                                     for k in swapped}}


def shows(readings: list[Reading], combos: list[Combination]) -> list[bool]:
    """Per image: does it show every concept of its combination?"""
    return [all(r.matches(c).values()) for r, c in zip(readings, combos)]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two object masks given as coverage in [0, 1] (soft: an edge pixel counts by the
    share of it the object covers, so a straight edge half across a row of pixels does not flip the whole row on
    a rounding error); 1 when both are empty."""
    union = np.maximum(a, b).sum()
    return float(np.minimum(a, b).sum() / union) if union else 1.0


def background_error(image_a: np.ndarray, image_b: np.ndarray, a: Reading, b: Reading) -> float:
    """Mean absolute colour difference (0-255, over channels) of the pixels that lie outside both images'
    objects (every pixel either reads as object, grown by one pixel to leave out anti-aliased edges)."""
    shape = image_a.shape[:2]
    objects = np.zeros(shape, bool)
    for r in (a, b):
        if r.coverage is not None:
            objects |= r.coverage > 0
    grown = objects.copy()
    grown[1:] |= objects[:-1]
    grown[:-1] |= objects[1:]
    grown[:, 1:] |= objects[:, :-1]
    grown[:, :-1] |= objects[:, 1:]
    outside = ~grown
    if not outside.any():
        return float("nan")
    diff = np.abs(image_a.astype(np.float64) - image_b.astype(np.float64))
    return float(diff[outside].mean())


def pixel_preservation(base_images: list[np.ndarray], edited_images: list[np.ndarray], base: list[Reading],
                       edited: list[Reading], cases: list[EditCase]) -> dict:
    """mask_iou: the object masks' IoU (`mask_iou`), unedited vs edited, over the cases that edit no shape, position
    or size; background_error: `background_error` over the cases that do not edit the background; each with its n."""
    ious = [mask_iou(b.mask(bi.shape[:2]), e.mask(ei.shape[:2]))
            for bi, ei, b, e, c in zip(base_images, edited_images, base, edited, cases)
            if not set(c.categories) & set(GEOMETRY)]
    errors = [background_error(bi, ei, b, e) for bi, ei, b, e, c in zip(base_images, edited_images, base, edited, cases)
              if "background" not in c.categories]
    errors = [x for x in errors if not np.isnan(x)]
    return {"mask_iou": _mean(ious), "mask_iou_n": len(ious), "background_error": _mean(errors),
            "background_error_n": len(errors)}


def sweep_scores(readings: dict[float, list[Reading]], cases: list[EditCase]) -> dict:
    """For edits made at each strength: the share whose swapped category reads as the new concept, and whether
    that share never falls as the strength grows."""
    strengths = sorted(readings)
    success = [_mean([all(r.concepts[k] == new for k, new in zip(c.categories, c.new))
                      for r, c in zip(readings[s], cases)]) for s in strengths]
    return {"strengths": strengths, "success": success, "n": len(cases),
            "monotonic": all(a <= b for a, b in zip(success, success[1:]))}


def _mean(values) -> float | None:
    """The mean of a list of numbers or booleans; None for an empty list (a measure with no case)."""
    return float(np.mean(values)) if len(values) else None
