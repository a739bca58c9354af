"""Deterministic scene rendering: one anti-aliased shape on a flat background, as an RGB uint8 image.

Shapes are point-membership tests on unit coordinates (centre 0, radius 1), shared with the measurement's
templates; the renderer evaluates them on a supersampled grid and box-filters down, so edges are smooth
(easier for the autoencoder) and a shape's area scales with the square of its radius.
"""
from __future__ import annotations

import math

import numpy as np

from .scene import CONCEPT, IMAGE_SIZE, Scene, WorldSpec

SUPERSAMPLE = 4
"""Samples per pixel along each axis."""
_SQUARE_HALF = math.sqrt(math.pi) / 2  # a square of the unit circle's area
_TRIANGLE_R = 1.2  # circumradius of the upward equilateral triangle (centroid at 0)
_CROSS_ARM, _CROSS_WIDTH = 1.1, 1.1 / 3  # half-length and half-width of the plus sign's arms


def _circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 1.0


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= _SQUARE_HALF


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # apex up (v grows downwards): base at v = R/2, sides through the apex (0, -R)
    half_width_at = (v + _TRIANGLE_R) / math.sqrt(3)
    return (v <= _TRIANGLE_R / 2) & (np.abs(u) <= half_width_at)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    return ((au <= _CROSS_ARM) & (av <= _CROSS_WIDTH)) | ((av <= _CROSS_ARM) & (au <= _CROSS_WIDTH))


OUTLINES = {"circle": _circle, "square": _square, "triangle": _triangle, "cross": _cross}
"""Outline -> membership test on unit coordinates (u right, v down, radius 1); `WorldSpec.shapes` names one per
shape phrase."""
OUTLINE_AREA = {"circle": math.pi, "square": 4 * _SQUARE_HALF ** 2, "triangle": 3 * math.sqrt(3) / 4 * _TRIANGLE_R ** 2,
                "cross": 8 * _CROSS_ARM * _CROSS_WIDTH - 4 * _CROSS_WIDTH ** 2}
"""Area of each outline at radius 1, so that a measured area gives the radius of a matching template."""


def coverage(outline: str, cx: float, cy: float, radius: float, size: int = IMAGE_SIZE,
             supersample: int = SUPERSAMPLE) -> np.ndarray:
    """[size, size] share in [0, 1] of each pixel covered by `outline` centred at (cx, cy) (pixel units)."""
    n = size * supersample
    t = (np.arange(n, dtype=np.float64) + 0.5) / supersample  # sample positions in pixel units
    u = (t[None, :] - cx) / radius
    v = (t[:, None] - cy) / radius
    inside = OUTLINES[outline](u, v).astype(np.float32)
    return inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def render(scene: Scene, spec: WorldSpec = CONCEPT, size: int = IMAGE_SIZE) -> np.ndarray:
    """The scene of a `spec` world as an RGB uint8 image [size, size, 3]; the same scene always gives the same
    bytes (the object's size is the scene's jittered radius)."""
    c = spec.concepts_of(scene.combo)
    cx, cy = spec.positions[c["position"]]
    scale = size / IMAGE_SIZE
    alpha = coverage(spec.shapes[c["shape"]], (cx + scene.dx) * scale, (cy + scene.dy) * scale, scene.radius * scale,
                     size)[..., None]
    fg = np.clip(np.add(spec.colours[c["colour"]], scene.object_jitter), 0, 1)
    bg = np.clip(np.add(spec.backgrounds[c["background"]], scene.background_jitter), 0, 1)
    img = alpha * fg + (1 - alpha) * bg
    return np.round(img * 255).astype(np.uint8)
