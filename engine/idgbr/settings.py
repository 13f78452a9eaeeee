"""Allowed ranges of a run's settings, checked before any work starts. A value out of range is
refused with the range it must be in, rather than silently meaning the default (a tile size of
0), planning ten thousand tiles for a megapixel (overlap 0.99) or allocating tens of GiB (a tile
size of 100 000)."""
from __future__ import annotations

import math

from .errors import InputError

# name: (lowest, highest, command-line option, what it is)
RANGES: dict[str, tuple[float, float, str, str]] = {
    "tile_size": (32, 4096, "--tile-size", "pixels per tile side"),
    "overlap": (0.0, 0.9, "--overlap", "the share of a tile its neighbours also cover"),
    "batch_size": (1, 256, "--batch-size", "tiles per batch"),
    "class_value": (0, 254, "--class-value", "the class of polygons without a class field"),
    "simplify": (0.0, math.inf, "--simplify", "the simplification tolerance"),
    "min_area_m2": (0.0, math.inf, "--min-area", "m²"),
    "seed": (0, 2**32 - 1, "--seed", "the random seed"),
    "steps": (1, 1000, "--steps", "sampling steps"),
    "guidance": (0.0, 50.0, "--guidance", "the guidance weight"),
    "samples": (1, 64, "--samples", "samples per tile"),
}


def check_settings(**values: float | None) -> None:
    """Raise InputError for the first value outside its range (None: not given, the default)."""
    for name, value in values.items():
        if value is None:
            continue
        lo, hi, option, what = RANGES[name]
        if not lo <= value <= hi:  # also refuses NaN
            allowed = f"at least {lo:g}" if math.isinf(hi) else f"between {lo:g} and {hi:g}"
            raise InputError(f"{option} must be {allowed} ({what}), got {value:g}")
