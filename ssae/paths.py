"""Names that users and workflows give resolve inside their folder, never outside it."""
from __future__ import annotations

import os

from .errors import PathError


def inside(base: str | os.PathLike, name: str) -> str:
    """`name` resolved under `base` (links followed); '../', absolute paths and links that lead out are refused."""
    base_real = os.path.realpath(base)
    path = os.path.realpath(os.path.join(base_real, name))
    if os.path.isabs(name) or os.path.commonpath([base_real, path]) != base_real:
        raise PathError(f"{name!r} is outside {base}: give a name inside that folder")
    return path
