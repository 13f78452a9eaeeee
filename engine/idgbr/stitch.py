"""Blend overlapping tile predictions without seams, in strips, so memory does not grow with
the raster: only K × tile_size × width floats are kept, never a full-raster K×H×W array.

Each tile's probabilities are weighted by a window that is flat inside and falls off with a
squared-sine ramp across the overlap; where two tiles overlap their ramps sum to one. The
accumulated sums are divided by the summed weights, so a constant field comes back unchanged.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def blend_window(tile_size: int, ramp: int) -> np.ndarray:
    """(tile_size, tile_size) float32 weights, > 0 everywhere (edge pixels of the raster are
    covered by a single tile and must keep its value after normalisation)."""
    ramp = int(min(max(ramp, 1), tile_size // 2))
    w = np.ones(tile_size, np.float64)
    t = (np.arange(ramp) + 0.5) / ramp
    w[:ramp] = np.sin(0.5 * np.pi * t) ** 2
    w[tile_size - ramp:] = w[:ramp][::-1]
    return np.outer(w, w).astype(np.float32)


class StripAccumulator:
    """Weighted sums of probabilities for rows [top, top + tile_size) of a window.

    Tiles must arrive in row-of-tiles order; `release(row)` hands back the finished rows above
    `row` (normalised probabilities and the weight sum, 0 where no tile contributed) and
    slides the buffer down.
    """

    def __init__(self, num_classes: int, width: int, tile_size: int) -> None:
        self.top = 0
        self.sums = np.zeros((num_classes, tile_size, width), np.float32)
        self.weights = np.zeros((tile_size, width), np.float32)

    def add(self, probs: np.ndarray, weight: np.ndarray, row: int, col: int) -> None:
        """Add a (K, h, w) prediction whose top-left pixel is (row, col) in the window."""
        k, h, w = probs.shape
        y = row - self.top
        if y < 0 or y + h > self.weights.shape[0]:
            raise ValueError(f"tile at row {row} is outside the buffered strip starting at {self.top}")
        self.sums[:, y:y + h, col:col + w] += probs * weight
        self.weights[y:y + h, col:col + w] += weight

    def release(self, row: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (first_row, probs (K, n, W), weight_sum (n, W)) for rows [top, row), then
        move the buffer so that `row` becomes its top."""
        n = row - self.top
        if n <= 0:
            return
        wsum = self.weights[:n]
        probs = self.sums[:, :n] / np.maximum(wsum, 1e-12)
        yield self.top, probs, wsum.copy()
        self.sums = np.roll(self.sums, -n, axis=1)
        self.weights = np.roll(self.weights, -n, axis=0)
        self.sums[:, -n:] = 0.0
        self.weights[-n:] = 0.0
        self.top = row
