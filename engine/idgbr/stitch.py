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


class WindowAccumulator:
    """Weighted sums of probabilities for the rectangle rows [row, row + height), columns
    [col, col + width) of a window: one block of a distributed run. Each pixel gets exactly the
    additions, in the same order, that `StripAccumulator` gives it when the block's tiles arrive
    in the same row-of-tiles order, so the blended result is bit-identical."""

    def __init__(self, num_classes: int, row: int, col: int, height: int, width: int) -> None:
        self.row, self.col = row, col
        self.sums = np.zeros((num_classes, height, width), np.float32)
        self.weights = np.zeros((height, width), np.float32)

    def add(self, probs: np.ndarray, weight: np.ndarray, row: int, col: int) -> None:
        """Add the part inside the rectangle of a (K, h, w) prediction whose top-left pixel is
        (row, col) in the window."""
        _, h, w = probs.shape
        bh, bw = self.weights.shape
        y0, y1 = max(row, self.row), min(row + h, self.row + bh)
        x0, x1 = max(col, self.col), min(col + w, self.col + bw)
        if y1 <= y0 or x1 <= x0:
            return
        tile = np.s_[y0 - row:y1 - row, x0 - col:x1 - col]
        mine = np.s_[y0 - self.row:y1 - self.row, x0 - self.col:x1 - self.col]
        self.sums[(slice(None), *mine)] += probs[(slice(None), *tile)] * weight[tile]
        self.weights[mine] += weight[tile]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(normalised probabilities (K, h, w), weight sum (h, w), 0 where no tile contributed)."""
        return self.sums / np.maximum(self.weights, 1e-12), self.weights


def class_layers(blended: np.ndarray, wsum: np.ndarray, num_classes: int,
                 nodata: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Blended probabilities (K classes, then an uncertainty channel when there is one) → the
    class (uint8, `nodata` where no tile contributed), its probability and the uncertainty
    (float32, -1 there)."""
    valid = wsum > 0
    probs = blended[:num_classes]
    labels = np.where(valid, probs.argmax(axis=0), nodata).astype(np.uint8)
    confidence = np.where(valid, probs.max(axis=0), -1.0).astype(np.float32)
    uncertainty = None
    if blended.shape[0] > num_classes:
        uncertainty = np.where(valid, blended[num_classes], -1.0).astype(np.float32)
    return labels, confidence, uncertainty
