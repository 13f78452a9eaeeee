"""Repair vs preservation (the IoU_RFm / IoU_RTm split of the IDGBR README): how well the
refined map does where the coarse map was wrong, and whether it keeps what the coarse map had
right. A refiner that only redraws edges scores high preservation; one that also fixes wrong
patches raises repair.
"""
from __future__ import annotations

import numpy as np

from .confusion import ConfusionMatrix


class RepairPreservation:
    """Two dataset-wide confusion matrices of refined vs GT: one over the pixels where the coarse
    map differs from the GT (repair), one over the pixels where it agrees (preservation)."""

    def __init__(self, num_classes: int, ignore_index: int | None = None):
        self.repair = ConfusionMatrix(num_classes, ignore_index)
        self.preserve = ConfusionMatrix(num_classes, ignore_index)

    def update(self, refined: np.ndarray, gt: np.ndarray, coarse: np.ndarray) -> None:
        if coarse.shape != gt.shape:
            raise ValueError(f"shape mismatch: coarse {coarse.shape}, ground truth {gt.shape}")
        wrong = coarse != gt
        self.repair.update(refined, gt, mask=wrong)
        self.preserve.update(refined, gt, mask=~wrong)

    def compute(self) -> dict[str, float]:
        """{"repair_iou", "preserve_iou"}: mIoU inside each region; NaN if a region is empty."""
        return {"repair_iou": self.repair.scores().miou, "preserve_iou": self.preserve.scores().miou}
