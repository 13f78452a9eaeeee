"""Progress and time left over a whole run, not just its current stage: a run that says "ETA 0 s"
at the last tile and then vectorizes for minutes is what users complained about.

Each stage reports its own fraction done; the time left is the current stage's (from its own
rate so far) plus an estimate of the stages still to come. While a coarse model runs, the
refiner's speed is unknown, so the time left is shown as a lower bound ("ETA > …"). Vectorizing costs per pixel and
per boundary pixel of the class raster (polygonizing, simplifying and measuring follow the
outlines), so the tile stage counts boundary pixels as it writes strips and the estimate uses
the rates below (measured with `idgbr refine` on the 2-core development machine, see
docs/reliability.md); once vectorizing starts, its own rate by rows takes over. The bar's
fraction is time done over time done plus time left, never moving backwards.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

STAGE_ORDER = ("coarse", "tiles", "vectorize")
# Bar position per stage while no time estimate exists yet (before the first tile is done).
FALLBACK_SHARE = {"coarse": (0.0, 0.05), "tiles": (0.05, 0.85), "vectorize": (0.85, 1.0)}
VECTORIZE_S_PER_MPX = 0.05  # seconds per megapixel of the area refined
VECTORIZE_S_PER_KEDGE = 0.03  # seconds per thousand boundary pixels (refined and changes layers)


class RunClock:
    def __init__(self, report: Callable[[float, str], None], pixels: int) -> None:
        self.report = report
        self.pixels = pixels
        self.edges = 0
        self.started = time.perf_counter()
        self.stage_started: dict[str, float] = {}
        self.fraction = 0.0

    def count_edges(self, labels: np.ndarray) -> None:
        """Count the boundary pixels of a written strip of classes (for the vectorize estimate)."""
        self.edges += int(np.count_nonzero(labels[:, 1:] != labels[:, :-1]))
        self.edges += int(np.count_nonzero(labels[1:] != labels[:-1]))

    def vectorize_estimate(self) -> float:
        return VECTORIZE_S_PER_MPX * self.pixels / 1e6 + VECTORIZE_S_PER_KEDGE * self.edges / 1e3

    def left(self, stage: str, fraction: float) -> tuple[float, bool] | None:
        """Seconds left in the whole run and whether that is a lower bound (a coarse model runs
        and the refiner's speed is not known yet); None while the stage has no rate yet."""
        now = time.perf_counter()
        spent = now - self.stage_started.setdefault(stage, now)
        if fraction <= 0:
            return None
        left = spent / fraction * (1 - fraction)
        if stage in ("coarse", "tiles"):
            left += self.vectorize_estimate()
        return left, stage == "coarse"

    def stage(self, stage: str, fraction: float, message: str) -> None:
        """Report `fraction` (0–1) of `stage` done, with `message` and the time left."""
        fraction = min(max(fraction, 0.0), 1.0)
        estimate = self.left(stage, fraction)
        lo, hi = FALLBACK_SHARE[stage]
        if estimate is None or estimate[1]:
            overall = lo + (hi - lo) * fraction
        else:
            elapsed = time.perf_counter() - self.started
            overall = elapsed / max(elapsed + estimate[0], 1e-9)
        if estimate is not None:
            message = f"{message} · ETA {'> ' if estimate[1] else ''}{format_seconds(estimate[0])}"
        self.fraction = max(self.fraction, min(overall, 0.99))
        self.report(self.fraction, message)

    def sub(self, stage: str, lo: float, hi: float) -> Callable[[float, str], None]:
        """A progress callback for the part [lo, hi] of `stage`."""
        return lambda f, m: self.stage(stage, lo + (hi - lo) * f, m)


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
