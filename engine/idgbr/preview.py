"""A before/after PNG an analyst can judge at a glance: the orthophoto with the coarse class
outlines on the left and the refined ones on the right, at most PREVIEW_PX wide per panel. The
refined panel shows what the feature layers hold: regions under the run's minimum mapping unit
are merged into their neighbour there (as the vectorizer's sieve does), not drawn as specks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from PIL import Image, ImageDraw
from rasterio.features import sieve
from rasterio.windows import Window

from .io.image import ImageReader
from .models import ClassInfo

PREVIEW_PX = 1024


def outline(labels: np.ndarray, nodata: int) -> np.ndarray:
    """Pixels whose right or lower neighbour has another class (NoData edges excluded)."""
    edge = np.zeros(labels.shape, bool)
    dx = (labels[:, 1:] != labels[:, :-1]) & (labels[:, 1:] != nodata) & (labels[:, :-1] != nodata)
    dy = (labels[1:] != labels[:-1]) & (labels[1:] != nodata) & (labels[:-1] != nodata)
    edge[:, 1:] |= dx
    edge[1:] |= dy
    return edge


def _panel(rgb: np.ndarray, labels: np.ndarray, classes: list[ClassInfo], nodata: int) -> np.ndarray:
    out = rgb.copy()
    edge = outline(labels, nodata)
    lut = np.zeros((256, 3), np.uint8)
    for c in classes:
        lut[c.id] = c.rgba()[:3]
    # An edge pixel takes the larger class id of itself and its left/upper neighbours, so
    # building or field outlines (ids > background) keep their colour.
    top = np.where(labels == nodata, 0, labels).astype(np.int32)
    owner = top.copy()
    owner[:, 1:] = np.maximum(owner[:, 1:], top[:, :-1])
    owner[1:] = np.maximum(owner[1:], top[:-1])
    out[edge] = lut[owner[edge]]
    return out


def before_after(reader: ImageReader, window: Window, coarse_tif: Path, refined_tif: Path,
                 classes: list[ClassInfo], out_png: Path, sieve_px: int = 0) -> None:
    """`sieve_px`: the minimum mapping unit in image pixels (0: none)."""
    scale = max(1.0, max(window.width, window.height) / PREVIEW_PX)
    shape = (max(1, int(window.height / scale)), max(1, int(window.width / scale)))
    data = reader.ds.read(reader.bands, window=window, out_shape=(len(reader.bands),) + shape).astype(np.float32)
    rgb = np.clip((data - reader.lo[:, None, None]) / (reader.hi - reader.lo)[:, None, None], 0, 1)
    rgb = (rgb[np.arange(3) % len(reader.bands)].transpose(1, 2, 0) * 255).astype(np.uint8)
    panels = []
    for path, title in ((coarse_tif, "coarse"), (refined_tif, "refined")):
        with rasterio.open(path) as ds:
            labels = ds.read(1, out_shape=shape, resampling=rasterio.enums.Resampling.nearest)
            size = round(sieve_px / scale ** 2)
            if title == "refined" and size > 1:
                valid = labels != ds.nodata
                labels = np.where(valid, sieve(labels.astype(np.int32), size, mask=valid, connectivity=4), labels)
            panel = Image.fromarray(_panel(rgb, labels, classes, int(ds.nodata)))
        ImageDraw.Draw(panel).text((8, 6), title, fill=(255, 255, 0))
        panels.append(np.asarray(panel))
    gap = np.full((shape[0], 8, 3), 255, np.uint8)
    Image.fromarray(np.concatenate([panels[0], gap, panels[1]], axis=1)).save(out_png)
