"""The class, confidence and uncertainty rasters of a run: tiled, compressed GeoTIFFs on the
grid of the area refined, the class raster with the model's colours and class names. Written by
windows, so a run streams strips (in-process) or blocks (distributed) into them."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from ..models.card import ClassInfo
from .grid import Grid

NODATA = 255
BLOCK_PX = 256  # the GeoTIFFs' internal tile size


class ResultRasters:
    """Open for writing within `stack`; `write` puts a window of classes, confidence and
    (when the run has one) uncertainty."""

    def __init__(self, stack: contextlib.ExitStack, grid: Grid, classes: list[ClassInfo], refined: Path,
                 confidence: Path, uncertainty: Path | None) -> None:
        profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=1, crs=grid.crs,
                       transform=grid.transform, tiled=True, blockxsize=BLOCK_PX, blockysize=BLOCK_PX,
                       compress="deflate")
        self.refined = stack.enter_context(rasterio.open(refined, "w", dtype="uint8", nodata=NODATA, **profile))
        float_profile = dict(dtype="float32", nodata=-1.0, predictor=3, **profile)
        self.confidence = stack.enter_context(rasterio.open(confidence, "w", **float_profile))
        self.uncertainty = stack.enter_context(rasterio.open(uncertainty, "w", **float_profile)) \
            if uncertainty else None
        self.refined.write_colormap(1, {c.id: c.rgba() for c in classes})
        self.refined.update_tags(1, **{f"class_{c.id}": c.name for c in classes})

    def write(self, window: Window, labels: np.ndarray, confidence: np.ndarray,
              uncertainty: np.ndarray | None) -> None:
        self.refined.write(labels, 1, window=window)
        self.confidence.write(confidence, 1, window=window)
        if self.uncertainty is not None:
            self.uncertainty.write(uncertainty, 1, window=window)
