"""The refiner protocol: a batch of image tiles and coarse class tiles in, per-class
probabilities out. Everything the pipeline knows about a model goes through this."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from .card import ModelCard

NO_COARSE = 255
"""Coarse tile value for pixels where the coarse layer says nothing (outside its extent)."""


@dataclass
class TileBatch:
    """Image and coarse tiles of one batch, all the same size.

    image: (B, 3, H, W) float32 in [0, 1] (the pipeline's scaling; refiners normalise further
    as their card says). coarse: (B, H, W) uint8 class ids, NO_COARSE where unknown.
    valid: (B, H, W) bool, False on image NoData and padding.
    origins: (B, 2) int64, each tile's (row, col) in the run's tile grid, or None (tiles not
    from a run's grid). Refiners that draw noise seed it from these, so a tile's result does not
    depend on its batch or on the order in which tiles (or a cluster's blocks) are computed.
    """

    image: np.ndarray
    coarse: np.ndarray
    valid: np.ndarray
    origins: np.ndarray | None = None

    def __len__(self) -> int:
        return self.image.shape[0]


@runtime_checkable
class Refiner(Protocol):
    """A loaded model. `num_classes` is fixed by the card, or by the data for class-agnostic
    refiners (the pipeline calls `bind_classes` before the first batch)."""

    card: ModelCard

    def bind_classes(self, num_classes: int) -> None:
        """Fix the number of classes; raises InputError when the model cannot do it."""

    def predict(self, batch: TileBatch) -> np.ndarray:
        """Per-class probabilities, (B, K, H, W) float32 summing to 1 over K."""


def one_hot(coarse: np.ndarray, num_classes: int) -> np.ndarray:
    """(B, H, W) class ids → (B, K, H, W) float32; NO_COARSE pixels get a uniform distribution
    so they carry no vote when tiles are blended."""
    out = np.zeros((coarse.shape[0], num_classes) + coarse.shape[1:], np.float32)
    known = coarse != NO_COARSE
    b, y, x = np.nonzero(known)
    out[b, coarse[known].astype(np.intp), y, x] = 1.0
    out.transpose(1, 0, 2, 3)[:, ~known] = 1.0 / num_classes
    return out
