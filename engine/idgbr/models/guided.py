"""Guided-filter refiner: the coarse one-hot probabilities filtered with the image as guide
(He, Sun & Tang, "Guided Image Filtering", 2010/2013). Within each window the output is an
affine function of the guide, so class boundaries snap to image edges that are stronger
than `eps` while flat areas are only smoothed. No training, a few box filters per tile.

The filter is normalised over the pixels that carry information (valid image, known coarse
class), so NoData, padding and areas without a coarse class neither guide nor vote.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .classical import ClassicalRefiner, normalise
from .registry import register_refiner

GREY = np.array([0.299, 0.587, 0.114], np.float32)


def guided_filter(guide: np.ndarray, src: np.ndarray, weight: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Filter `src` (K, H, W) with `guide` (C, H, W), both averaged over the pixels where
    `weight` (H, W, bool) is set, in (2·radius+1)² windows. Returns (K, H, W), 0 where no
    window around a pixel holds a weighted pixel."""
    w = weight.astype(np.float32)
    size = 2 * radius + 1
    norm = ndimage.uniform_filter(w, size, mode="constant")
    norm = np.maximum(norm, 1e-6)  # windows without a weighted pixel average to 0

    def mean(x: np.ndarray) -> np.ndarray:  # weighted box mean over the last two axes
        return ndimage.uniform_filter(x * w, (1,) * (x.ndim - 2) + (size, size), mode="constant") / norm

    c = guide.shape[0]
    mu_i, mu_p = mean(guide), mean(src)
    cov_ip = mean(guide[:, None] * src[None]) - mu_i[:, None] * mu_p[None]  # (C, K, H, W)
    pairs = guide[:, None] * guide[None]  # (C, C, H, W)
    var_i = mean(pairs.reshape(c * c, *guide.shape[1:])).reshape(c, c, *guide.shape[1:])
    var_i = var_i - mu_i[:, None] * mu_i[None] + eps * np.eye(c, dtype=np.float32)[:, :, None, None]
    # a = (Σ + εI)⁻¹ cov(I, p) per pixel, for every class at once
    a = (_inverse(var_i)[:, :, None] * cov_ip[None]).sum(1)  # (C, K, H, W)
    b = mu_p - (a * mu_i[:, None]).sum(0)
    mean_a = mean(a.reshape(-1, *guide.shape[1:])).reshape(a.shape)
    return (mean_a * guide[:, None]).sum(0) + mean(b)


def _inverse(m: np.ndarray) -> np.ndarray:
    """Per-pixel inverse of (C, C, H, W) symmetric positive-definite matrices, C = 1 or 3, in
    closed form (adjugate / determinant): a batched LAPACK solve is ~50x slower here."""
    if m.shape[0] == 1:
        return 1.0 / m
    a, b, c, d, e, f = m[0, 0], m[0, 1], m[0, 2], m[1, 1], m[1, 2], m[2, 2]
    adj = np.array([[d * f - e * e, c * e - b * f, b * e - c * d],
                    [c * e - b * f, a * f - c * c, b * c - a * e],
                    [b * e - c * d, b * c - a * e, a * d - b * b]])
    return adj / (a * adj[0, 0] + b * adj[0, 1] + c * adj[0, 2])


@register_refiner("guided")
class GuidedRefiner(ClassicalRefiner):
    """radius: window half-size in px (about the boundary error to correct); eps: edge
    threshold as a variance of [0, 1] intensities; guide: "rgb" or "grey"."""

    defaults: ClassVar[dict[str, Any]] = {"radius": 8, "eps": 0.01, "guide": "rgb"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.params["guide"] not in ("rgb", "grey") or self.params["radius"] < 1 or self.params["eps"] <= 0:
            raise InputError(f"guided: need guide 'rgb' or 'grey', radius >= 1 and eps > 0, got {self.params}")

    def refine_tile(self, image: np.ndarray, prior: np.ndarray, valid: np.ndarray, known: np.ndarray) -> np.ndarray:
        guide = image if self.params["guide"] == "rgb" else np.tensordot(GREY, image, 1)[None]
        out = guided_filter(guide.astype(np.float32), prior, valid & known, self.params["radius"], self.params["eps"])
        return normalise(out, prior)
