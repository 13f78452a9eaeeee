"""Class-aware boundary metrics: boundary F-score at a pixel tolerance and Boundary IoU
(Cheng et al., CVPR 2021).

Conventions, chosen so that tiling a map does not change its boundaries:
- a class's 1-px boundary is the set of its pixels with a 4-neighbour of another class; the
  image border is not a boundary (erosion treats outside the tile as inside the mask);
- a boundary pixel matches at tolerance d when a boundary pixel of the other map lies within
  Euclidean distance d (dilation by a disk of radius d);
- the Boundary IoU band of width d is mask minus its d-fold erosion by a 3×3 square (as in
  Cheng et al.'s code, but again with the image border counted as inside);
- over a dataset, counts (matched / total boundary pixels, band intersections / unions) are
  summed per class before dividing, like mIoU; so a hallucinated edge on a boundary-free tile
  costs precision instead of being averaged away. Where both maps have no boundary pixels of a
  class that occurs, the score is 1; where only one has, 0; a class that never occurs is NaN and
  left out of the class means.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from .confusion import nanmean

_CROSS = ndimage.generate_binary_structure(2, 1)


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """1-px inner boundary of a boolean mask (tile edges excluded)."""
    mask = mask.astype(bool)
    return mask & ~ndimage.binary_erosion(mask, structure=_CROSS, border_value=1)


def _distance_to(target: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest `target` pixel (inf if there is none)."""
    if not target.any():
        return np.full(target.shape, np.inf)
    return ndimage.distance_transform_edt(~target)


def _f_counts(pred: np.ndarray, gt: np.ndarray, tolerances: Sequence[int], valid: np.ndarray | None) -> np.ndarray:
    """Per tolerance: [matched pred boundary, pred boundary, matched GT boundary, GT boundary]."""
    bp, bg = mask_boundary(pred), mask_boundary(gt)
    if valid is not None:
        bp_count, bg_count = bp & valid, bg & valid
    else:
        bp_count, bg_count = bp, bg
    to_gt = _distance_to(bg)[bp_count]
    to_pred = _distance_to(bp)[bg_count]
    tol = np.asarray(tolerances, dtype=np.float64)[:, None]
    out = np.empty((len(tolerances), 4), dtype=np.int64)
    out[:, 0] = (to_gt[None, :] <= tol).sum(axis=1)
    out[:, 1] = to_gt.size
    out[:, 2] = (to_pred[None, :] <= tol).sum(axis=1)
    out[:, 3] = to_pred.size
    return out


def _inner_depth(mask: np.ndarray) -> np.ndarray:
    """Chessboard distance of each mask pixel to the nearest non-mask pixel (0 outside the mask,
    a large number where the mask fills the tile): pixel p is in the width-d band iff 0 < depth ≤ d,
    which equals mask minus its d-fold 3×3 erosion with the border counted as inside."""
    if mask.all():
        return np.full(mask.shape, np.iinfo(np.int32).max, dtype=np.int32)
    return ndimage.distance_transform_cdt(mask, metric="chessboard")


def _iou_counts(pred: np.ndarray, gt: np.ndarray, widths: Sequence[int], valid: np.ndarray | None) -> np.ndarray:
    """Per band width: [intersection, union] of the inner bands."""
    dp, dg = _inner_depth(pred.astype(bool)), _inner_depth(gt.astype(bool))
    if valid is not None:
        dp, dg = dp[valid], dg[valid]
    out = np.empty((len(widths), 2), dtype=np.int64)
    for i, w in enumerate(widths):
        band_p = (dp > 0) & (dp <= w)
        band_g = (dg > 0) & (dg <= w)
        out[i] = np.count_nonzero(band_p & band_g), np.count_nonzero(band_p | band_g)
    return out


def _f_from_counts(counts: np.ndarray) -> np.ndarray:
    """F-score from [..., 4] counts, with the empty-boundary rules (both empty 1, one empty 0)."""
    pm, pn, gm, gn = (counts[..., i].astype(np.float64) for i in range(4))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision, recall = pm / pn, gm / gn
        f = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    f = np.where((pn == 0) | (gn == 0), 0.0, f)
    return np.where((pn == 0) & (gn == 0), 1.0, f)


def _iou_from_counts(counts: np.ndarray) -> np.ndarray:
    """IoU from [..., 2] counts; 1 where both bands are empty."""
    inter, union = counts[..., 0].astype(np.float64), counts[..., 1].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 1.0)


def boundary_fscore(pred_mask: np.ndarray, gt_mask: np.ndarray, tolerance: float = 3) -> float:
    """Boundary F-score of one binary mask pair at `tolerance` pixels."""
    return float(_f_from_counts(_f_counts(pred_mask, gt_mask, [tolerance], None)[0]))


def boundary_iou(pred_mask: np.ndarray, gt_mask: np.ndarray, width: int = 3) -> float:
    """Boundary IoU of one binary mask pair with inner bands `width` pixels wide."""
    return float(_iou_from_counts(_iou_counts(pred_mask, gt_mask, [width], None)[0]))


class BoundaryMetrics:
    """Dataset accumulator of per-class boundary F-scores and Boundary IoU.

    `update` takes class-index maps. Pixels whose GT is `ignore_index` take the predicted class
    (so the ignore region draws no edges) and are then left out of every count.
    """

    def __init__(self, num_classes: int, tolerances: Sequence[int] = (1, 2, 3, 5),
                 widths: Sequence[int] = (1, 3, 5), ignore_index: int | None = None):
        self.num_classes = num_classes
        self.tolerances = tuple(tolerances)
        self.widths = tuple(widths)
        self.ignore_index = ignore_index
        self._f = np.zeros((len(self.tolerances), num_classes, 4), dtype=np.int64)
        self._iou = np.zeros((len(self.widths), num_classes, 2), dtype=np.int64)
        self._present = np.zeros(num_classes, dtype=bool)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        valid = None
        if self.ignore_index is not None and np.any(gt == self.ignore_index):
            valid = gt != self.ignore_index
            gt = np.where(valid, gt, pred)
        present = self._classes_in(pred, valid) | self._classes_in(gt, valid)
        self._present |= present
        for c in np.flatnonzero(present):
            p, g = pred == c, gt == c
            self._f[:, c] += _f_counts(p, g, self.tolerances, valid)
            self._iou[:, c] += _iou_counts(p, g, self.widths, valid)

    def _classes_in(self, labels: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        ids = labels if valid is None else labels[valid]
        counts = np.bincount(ids.ravel().astype(np.int64), minlength=self.num_classes)
        if counts.size > self.num_classes:
            raise ValueError(f"class id {counts.size - 1} outside [0, {self.num_classes - 1}]")
        return counts > 0

    def compute(self) -> dict[str, dict[int, object]]:
        """{"f": {d: mean over classes}, "f_per_class": {d: array[K]}, "iou": {...},
        "iou_per_class": {...}}; classes that never occurred are NaN."""
        f = np.where(self._present, _f_from_counts(self._f), np.nan)
        iou = np.where(self._present, _iou_from_counts(self._iou), np.nan)
        return {
            "f": {d: nanmean(f[i]) for i, d in enumerate(self.tolerances)},
            "f_per_class": {d: f[i] for i, d in enumerate(self.tolerances)},
            "iou": {d: nanmean(iou[i]) for i, d in enumerate(self.widths)},
            "iou_per_class": {d: iou[i] for i, d in enumerate(self.widths)},
        }
