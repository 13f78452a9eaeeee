"""Region metrics from one confusion matrix summed over a whole dataset.

Summing counts before dividing (rather than averaging per-tile scores) is the convention of
mmsegmentation and of the IDGBR paper's tables: a tile with three pixels of a class weighs three
pixels, not one tile.

A class absent from both the ground truth and the prediction (no TP, FP or FN) has no IoU/F1:
it is reported as NaN and left out of the means. A class predicted but absent from the ground
truth scores 0 and counts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ConfusionScores:
    """Scores of one confusion matrix; per-class arrays are indexed by class id."""

    iou: np.ndarray
    f1: np.ndarray
    miou: float
    mf1: float
    oa: float
    kappa: float
    fwiou: float


class ConfusionMatrix:
    """Accumulates a K×K confusion matrix (rows: ground truth, columns: prediction).

    Pixels whose ground truth equals `ignore_index`, or that `mask` excludes, are not counted.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None):
        if num_classes < 1:
            raise ValueError("num_classes must be at least 1")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> None:
        if pred.shape != gt.shape:
            raise ValueError(f"shape mismatch: prediction {pred.shape}, ground truth {gt.shape}")
        keep = np.ones(gt.shape, dtype=bool) if mask is None else mask.astype(bool, copy=True)
        if self.ignore_index is not None:
            keep &= gt != self.ignore_index
        g = gt[keep].astype(np.int64)
        p = pred[keep].astype(np.int64)
        k = self.num_classes
        check_class_ids("ground truth", g, k)
        check_class_ids("prediction", p, k)
        self.matrix += np.bincount(g * k + p, minlength=k * k).reshape(k, k)

    def scores(self) -> ConfusionScores:
        return confusion_scores(self.matrix)


def confusion_scores(matrix: np.ndarray) -> ConfusionScores:
    """IoU, F1, their means, overall accuracy, Cohen's kappa and frequency-weighted IoU.

    An empty matrix gives NaN everywhere. Kappa is 1 when chance agreement is total (a single
    class in both maps, hence perfect agreement) instead of 0/0.
    """
    m = matrix.astype(np.float64)
    n = m.sum()
    tp = np.diag(m)
    gt_count = m.sum(axis=1)
    pred_count = m.sum(axis=0)
    union = gt_count + pred_count - tp
    present = union > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(present, tp / union, np.nan)
        f1 = np.where(present, 2 * tp / (gt_count + pred_count), np.nan)
    if n == 0:
        nan = float("nan")
        return ConfusionScores(iou, f1, nan, nan, nan, nan, nan)
    oa = float(tp.sum() / n)
    chance = float((gt_count * pred_count).sum() / n**2)
    kappa = 1.0 if chance == 1.0 else (oa - chance) / (1.0 - chance)
    fwiou = float(np.sum((gt_count / n)[present] * iou[present]))
    return ConfusionScores(iou, f1, nanmean(iou), nanmean(f1), oa, float(kappa), fwiou)


def check_class_ids(name: str, ids: np.ndarray, num_classes: int) -> None:
    """ValueError naming `name` if an id lies outside 0..num_classes-1."""
    if ids.size == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"{name} has class id {hi if hi >= num_classes else lo}, but there are "
                         f"{num_classes} classes (0–{num_classes - 1}); check the number of "
                         "classes and the ignore index")


def nanmean(values: np.ndarray) -> float:
    """Mean over the finite entries; NaN (without a warning) when there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")
