"""How every configuration dataclass is validated and read back from a file.

One rule for every config stored in a file (an SSAE file's `ssae.model`, `ssae.preprocess`, a recipe):
unknown keys are ignored with a warning that names them (a file written by a newer ssae may add fields),
missing keys take their defaults, and the values are validated by the class on construction, so a bad
value is an `SSAEError` that names the field.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, TypeVar

from .errors import SSAEError

log = logging.getLogger(__name__)
C = TypeVar("C")


def from_dict(cls: type[C], data: Any, what: str = "", nested: dict[str, type] | None = None) -> C:
    """`cls(**data)` for a dict read from a file; `nested` maps a field to the config class of its value."""
    where = f"{what}: " if what else ""
    if not isinstance(data, dict):
        raise SSAEError(f"{where}{cls.__name__} must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        log.warning("%s%s: ignoring unknown keys %s (written by a newer ssae?)", where, cls.__name__,
                    ", ".join(unknown))
    kept = {k: v for k, v in data.items() if k in known}
    for name, sub in (nested or {}).items():
        if name in kept and not isinstance(kept[name], sub):
            kept[name] = from_dict(sub, kept[name], what)
    try:
        return cls(**kept)
    except TypeError as e:  # a missing required field
        raise SSAEError(f"{where}{cls.__name__} cannot be built from {sorted(kept)}: {e}") from e


def check_choice(owner: str, name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise SSAEError(f"{owner}.{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def check_int(owner: str, name: str, value: Any, minimum: int | None = None, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise SSAEError(f"{owner}.{name} must be an integer{bound}{' or None' if optional else ''}, got {value!r}")


def check_float(owner: str, name: str, value: Any, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'(' if low_open else '['}{low}"
        hi = "" if high is None else f"{high}{')' if high_open else ']'}"
        span = f" in {lo or '(-inf'}, {hi or 'inf)'}" if lo or hi else ""
        raise SSAEError(f"{owner}.{name} must be a finite number{span}, got {value!r}")


def check_bool(owner: str, name: str, value: Any, optional: bool = False) -> None:
    if not (isinstance(value, bool) or (optional and value is None)):
        raise SSAEError(f"{owner}.{name} must be true or false{' or None' if optional else ''}, got {value!r}")
