"""Inputs at the model's scale: a model trained at 0.15–0.3 m sees a 0.075 m orthophoto's
buildings twice too large and its boundary band half too narrow. When the image GSD lies
outside the card's `gsd_range_m`, each tile is resampled to the nearest GSD of that range
before the refiner runs, and the probabilities are brought back to the input grid."""
from __future__ import annotations

from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from .base import Refiner, TileBatch

def ground_gsd_m(crs: CRS, transform: Affine, width: int, height: int) -> float:
    """Ground size in metres of a pixel at the centre of a grid (mean of its two sides),
    measured geodesically: CRS units can lie about ground size (web-mercator metres are
    1/cos(latitude) too long; degrees are no metres at all)."""
    from pyproj import Geod
    from rasterio.warp import transform as warp

    cx, cy = width / 2, height / 2
    pts = [transform * (cx, cy), transform * (cx + 1, cy), transform * (cx, cy + 1)]
    lon, lat = warp(crs, "EPSG:4326", [p[0] for p in pts], [p[1] for p in pts])
    geod = Geod(ellps="WGS84")
    sides = [geod.inv(lon[0], lat[0], lon[i], lat[i])[2] for i in (1, 2)]
    return float(np.mean(sides))


def scale_for(gsd_m: float, gsd_range_m: list[float] | None) -> float:
    """Factor by which tiles must be resized (new pixels per old pixel) to reach the range;
    1.0 inside it, or when the card gives none. Within 5 % of a limit counts as inside."""
    if not gsd_range_m:
        return 1.0
    lo, hi = sorted(gsd_range_m)
    target = min(max(gsd_m, lo), hi)
    return 1.0 if abs(target - gsd_m) <= 0.05 * gsd_m else gsd_m / target


class ResampledRefiner:
    """`inner` run on tiles resized by `factor` (coarse maps and validity by nearest neighbour,
    images by area averaging or bilinear), its probabilities resized back (bilinear)."""

    def __init__(self, inner: Refiner, factor: float) -> None:
        self.inner = inner
        self.factor = factor
        self.card = inner.card

    def __getattr__(self, name: str) -> Any:  # nfe_per_tile, describe, … of the wrapped refiner
        return getattr(self.inner, name)

    def bind_classes(self, num_classes: int) -> None:
        self.inner.bind_classes(num_classes)

    def predict(self, batch: TileBatch) -> np.ndarray:
        return self._back(self.inner.predict(self._there(batch)), batch)

    def predict_with_uncertainty(self, batch: TileBatch) -> tuple[np.ndarray, np.ndarray]:
        probs, unc = self.inner.predict_with_uncertainty(self._there(batch))
        return self._back(probs, batch), self._back(unc[:, None], batch, normalise=False)[:, 0]

    def _there(self, batch: TileBatch) -> TileBatch:
        import torch
        import torch.nn.functional as F

        h, w = batch.coarse.shape[1:]
        size = (max(8, round(h * self.factor)), max(8, round(w * self.factor)))
        image = torch.from_numpy(np.ascontiguousarray(batch.image, np.float32))
        image = F.interpolate(image, size=size, mode="area" if self.factor < 1 else "bilinear",
                              **({} if self.factor < 1 else {"align_corners": False}))
        coarse = F.interpolate(torch.from_numpy(batch.coarse[:, None].astype(np.float32)), size=size, mode="nearest")
        valid = F.interpolate(torch.from_numpy(batch.valid[:, None].astype(np.float32)), size=size, mode="nearest")
        return TileBatch(image.numpy(), coarse[:, 0].numpy().astype(np.uint8), valid[:, 0].numpy() > 0, batch.origins)

    @staticmethod
    def _back(probs: np.ndarray, batch: TileBatch, normalise: bool = True) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        out = F.interpolate(torch.from_numpy(np.ascontiguousarray(probs, np.float32)), size=batch.coarse.shape[1:],
                            mode="bilinear", align_corners=False).clamp(min=0)
        if normalise:
            out = out / out.sum(1, keepdim=True).clamp(min=1e-8)
        return out.numpy()
