"""Dense-CRF refiner: the coarse map as a softened unary (`confidence` on the coarse class, the
rest spread over the others), refined by mean-field inference of a fully connected CRF
(Krähenbühl & Koltun, NIPS 2011) whose pairwise terms are a smoothness kernel on position
and an appearance kernel on position and colour, so labels spread across similar-looking
neighbours and stop at colour edges.

Inference is `pydensecrf2` 1.1 (PyPI, Dec 2024: the maintained fork of pydensecrf, the Cython
binding of Krähenbühl's permutohedral-lattice code; an sdist that `make install` compiles with
the system C++ compiler, works with numpy<2 on Python 3.11; pinned in engine/requirements.txt).
It is imported when a CRF model is loaded, so every other model works without it.

Pixels the image does not cover get a large extra feature, which puts them out of reach of
every kernel: NoData and padding neither take nor pass on labels.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..errors import InputError
from .classical import ClassicalRefiner, normalise
from .registry import register_refiner

APART = 1e4  # feature offset of invalid pixels: exp(-APART²/2) is 0 for every kernel


@register_refiner("crf")
class CrfRefiner(ClassicalRefiner):
    """confidence: probability given to the coarse class; iterations: mean-field steps;
    smooth_sxy/smooth_weight: position kernel (px); sxy/srgb/weight: appearance kernel
    (px, 0-255 colour units)."""

    defaults: ClassVar[dict[str, Any]] = {
        "confidence": 0.8, "iterations": 5, "smooth_sxy": 3.0, "smooth_weight": 3.0,
        "sxy": 20.0, "srgb": 10.0, "weight": 3.0,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        p = self.params
        if not 0 < p["confidence"] < 1 or p["iterations"] < 1 or min(p["smooth_sxy"], p["sxy"], p["srgb"]) <= 0:
            raise InputError(f"crf: need 0 < confidence < 1, iterations >= 1 and positive kernel widths, got {p}")
        try:
            import pydensecrf.densecrf as dcrf
        except ImportError as e:
            raise InputError("the crf refiner needs the pydensecrf2 package (pip install pydensecrf2)") from e
        self._dcrf = dcrf

    def refine_tile(self, image: np.ndarray, prior: np.ndarray, valid: np.ndarray, known: np.ndarray) -> np.ndarray:
        p, dcrf = self.params, self._dcrf
        k, h, w = prior.shape
        if k < 2:
            return prior
        soft = np.where(prior == 1.0, p["confidence"], (1.0 - p["confidence"]) / (k - 1))
        soft = np.where(known, soft, 1.0 / k)
        crf = dcrf.DenseCRF(h * w, k)
        crf.setUnaryEnergy(np.ascontiguousarray(-np.log(soft).reshape(k, -1), dtype=np.float32))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        apart = np.where(valid, 0.0, APART).astype(np.float32)
        smooth = np.stack([yy / p["smooth_sxy"], xx / p["smooth_sxy"], apart])
        appearance = np.concatenate([np.stack([yy / p["sxy"], xx / p["sxy"]]), image * (255.0 / p["srgb"]),
                                     apart[None]])
        for feats, weight in ((smooth, p["smooth_weight"]), (appearance, p["weight"])):
            crf.addPairwiseEnergy(np.ascontiguousarray(feats.reshape(len(feats), -1), dtype=np.float32),
                                  compat=weight, kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NORMALIZE_SYMMETRIC)
        q = np.asarray(crf.inference(p["iterations"]), np.float32).reshape(k, h, w)
        return normalise(q, prior)
