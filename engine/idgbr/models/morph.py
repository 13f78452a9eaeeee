"""Morphological refiner: a per-class majority (mode) filter on the coarse map, repeated a few
times. It ignores the image: it removes speckle, fills pinholes and rounds stair-stepped
or jagged outlines, which is what an analyst would otherwise do with a sieve and a smoothing
pass. The output probabilities are the class shares in each pixel's window.

Only valid pixels with a known coarse class vote, so NoData and unknown areas never spread.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .classical import ClassicalRefiner, normalise
from .registry import register_refiner


@register_refiner("morph")
class MorphRefiner(ClassicalRefiner):
    """radius: half-size in px of the square voting window; iterations: filter passes."""

    defaults: ClassVar[dict[str, Any]] = {"radius": 3, "iterations": 2}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.params["radius"] < 1 or self.params["iterations"] < 1:
            raise InputError(f"morph: radius and iterations must be >= 1, got {self.params}")

    def refine_tile(self, image: np.ndarray, prior: np.ndarray, valid: np.ndarray, known: np.ndarray) -> np.ndarray:
        voters = (valid & known).astype(np.float32)
        size = (1, 2 * self.params["radius"] + 1, 2 * self.params["radius"] + 1)
        votes = prior * voters
        for _ in range(self.params["iterations"]):
            shares = ndimage.uniform_filter(votes, size, mode="constant")
            # a pixel keeps its own class on ties, so the filter does not drift
            winner = (shares + 1e-4 * votes).argmax(0)
            votes = np.eye(prior.shape[0], dtype=np.float32)[winner].transpose(2, 0, 1) * voters
        return normalise(shares, prior)
