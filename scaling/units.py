"""Parsing of human-written counts such as ``3B``, ``12.8B`` or ``4k``."""

from __future__ import annotations

import math
import re

from scaling.errors import ClipscaleError

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)\s*$", re.IGNORECASE)


def parse_count(value: object, what: str) -> int:
    """Return a positive integer count from an int, a float or a string like '13B'."""
    if isinstance(value, bool):
        raise ClipscaleError(f"{what} must be a count, got {value!r}")
    if isinstance(value, int):
        number: float = value
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str) and (match := _COUNT.match(value)):
        number = float(match.group(1)) * _SUFFIX[match.group(2).lower()]
    else:
        raise ClipscaleError(f"{what} must be a count such as 3000000000, 3e9 or 3B, got {value!r}")
    if not math.isfinite(number) or number <= 0:
        raise ClipscaleError(f"{what} must be positive, got {value!r}")
    return round(number)


def format_count(n: float) -> str:
    """Short human form of a count: 12.8B, 64k, 3.26B."""
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"
