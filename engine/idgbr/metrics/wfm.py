"""Weighted F-measure (Margolin, Zelnik-Manor & Tal, CVPR 2014) and the IDGBR paper's
"WFm (3px B)" boundary score built on it.

`weighted_fmeasure` follows the authors' MATLAB reference `WFb.m` step by step, so its numbers
can be compared with published ones (and with PySODMetrics, which ports the same file). Ties in
the nearest-foreground search are broken by scipy's Euclidean distance transform, as PySODMetrics
and the IDGBR evaluation do; MATLAB's `bwdist` may pick another of two equidistant pixels.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

_EPS = np.spacing(1.0)  # MATLAB's eps, as in WFb.m
_SIGMA = 5.0
_RADIUS = 3  # fspecial('gaussian', 7, 5)


def _gaussian_7x7() -> np.ndarray:
    """The normalised 1-D factor of MATLAB's fspecial('gaussian', 7, 5); the 2-D kernel is its
    outer product, so filtering separably gives the same result in 14 instead of 49 taps."""
    x = np.arange(-_RADIUS, _RADIUS + 1, dtype=np.float64)
    k = np.exp(-(x**2) / (2 * _SIGMA**2))
    return k / k.sum()


_KERNEL_1D = _gaussian_7x7()


def weighted_fmeasure(pred: np.ndarray, gt: np.ndarray, beta: float = 1.0) -> float:
    """Weighted F-measure of a foreground map `pred` (bool, or float in [0, 1]) against a binary
    ground truth `gt`.

    Empty ground truth (undefined in WFb.m): 1.0 when the prediction is empty too (all zero),
    0.0 otherwise — predicting foreground where there is none is simply wrong.
    """
    g = np.asarray(gt).astype(bool)
    p = np.asarray(pred, dtype=np.float64)
    if p.shape != g.shape:
        raise ValueError(f"shape mismatch: prediction {p.shape}, ground truth {g.shape}")
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError("prediction values must lie in [0, 1]")
    if not g.any():
        return 1.0 if not p.any() else 0.0
    outside = ~g
    err = np.abs(p - g)
    # Errors outside the object are judged at the nearest object pixel ("pixel dependency").
    dist, (iy, ix) = ndimage.distance_transform_edt(outside, return_indices=True)
    err_t = err[iy, ix]
    # imfilter default: correlation, zero padding, same size.
    blurred = ndimage.correlate1d(err_t, _KERNEL_1D, axis=0, mode="constant", cval=0.0)
    blurred = ndimage.correlate1d(blurred, _KERNEL_1D, axis=1, mode="constant", cval=0.0)
    err_min = np.where(g, np.minimum(err, blurred), err)
    # Errors far from the object cost up to twice as much ("pixel importance").
    weight = np.where(outside, 2.0 - np.exp(np.log(0.5) / 5.0 * dist), 1.0)
    err_w = err_min * weight
    inside_err = err_w[g]
    tp_w = g.sum() - inside_err.sum()
    fp_w = err_w[outside].sum()
    recall = 1.0 - inside_err.mean()
    precision = tp_w / (_EPS + tp_w + fp_w)
    return float((1 + beta**2) * recall * precision / (_EPS + recall + beta * precision))


def boundary_band(labels: np.ndarray, size: int = 3) -> np.ndarray:
    """Class-free boundary band of a class-index map, as the IDGBR evaluation draws it: pixels
    where the 3×3 Sobel gradient of the class ids is non-zero, dilated once by a size×size square.

    Borders: the authors call cv2.Sobel with its default BORDER_REFLECT_101; scipy's
    mode='mirror' is the same reflection, so tile edges never create a boundary. Dilation pads
    with background (cv2.dilate's default). Being computed on raw ids, a step between two classes
    whose Sobel responses cancel out is missed exactly as in the authors' code.
    """
    ids = np.asarray(labels).astype(np.int32)
    gx = ndimage.sobel(ids, axis=1, mode="mirror")
    gy = ndimage.sobel(ids, axis=0, mode="mirror")
    edges = (gx != 0) | (gy != 0)
    return ndimage.binary_dilation(edges, structure=np.ones((size, size), dtype=bool))


class WFmBand:
    """Dataset accumulator of "WFm (size px B)".

    Per tile, the band and non-band classes are scored with `weighted_fmeasure` (band mask vs GT
    band mask, and complement vs complement). Each class is averaged over tiles, and the score is
    the minimum of the class averages.

    - `paper`: as the authors' evaluation — a class is scored only on tiles where the GT has it,
      and class averages that are 0 are left out of the minimum. A tile whose GT has no boundary
      thus only checks the non-band class, which barely notices a few hallucinated edges.
    - `strict`: both classes are scored on every tile with the empty-GT rule of
      `weighted_fmeasure` (a predicted band on a boundary-free tile scores 0 for the band class),
      and the minimum takes every class average.

    `ignore` (optional bool mask) marks pixels that count as correctly predicted: the GT there is
    replaced by the prediction before the bands are drawn, so they add neither edges nor errors.
    """

    def __init__(self, size: int = 3):
        self.size = size
        # [class (0 non-band, 1 band)]: sums and counts, paper and strict rules.
        self._sum = np.zeros(2)
        self._count = np.zeros(2, dtype=np.int64)
        self._sum_strict = np.zeros(2)
        self._count_strict = np.zeros(2, dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> None:
        if ignore is not None:
            gt = np.where(ignore, pred, gt)
        pred_band = boundary_band(pred, self.size)
        gt_band = boundary_band(gt, self.size)
        for cls, p, g in ((0, ~pred_band, ~gt_band), (1, pred_band, gt_band)):
            score = weighted_fmeasure(p, g)
            self._sum_strict[cls] += score
            self._count_strict[cls] += 1
            if g.any():
                self._sum[cls] += score
                self._count[cls] += 1

    def compute(self) -> dict[str, float]:
        """{"paper", "strict", "band", "non_band"}: the last two are the paper-rule class
        averages. NaN where nothing was scored."""
        with np.errstate(divide="ignore", invalid="ignore"):
            avg = self._sum / self._count
            avg_strict = self._sum_strict / self._count_strict
        valid = avg[np.isfinite(avg) & (avg > 0)]
        paper = float(valid.min()) if valid.size else (0.0 if self._count.any() else float("nan"))
        strict = float(avg_strict.min()) if self._count_strict.all() else float("nan")
        return {"paper": paper, "strict": strict, "non_band": float(avg[0]), "band": float(avg[1])}
