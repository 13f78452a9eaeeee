"""The coarse stage of the pipeline, for when the analyst brings no classification: a coarse
segmentor predicts the same tiles the refiner will see, its probabilities are blended strip by
strip exactly as the refiner's are (stitch.py), and the argmax is written as `coarse.tif` on
the image grid, so the refiner then reads it like any staged coarse layer.

Pixels that are image NoData, or outside the AOI polygon, are NO_COARSE (NoData downstream).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.features import geometry_mask
from rasterio.windows import Window

from .errors import InputError
from .io.coarse import CoarseStats
from .io.grid import Grid
from .io.image import ImageReader
from .logs import quiet_libraries
from .models.base import NO_COARSE
from .models.card import ClassInfo
from .stitch import StripAccumulator, blend_window
from .tiling import Tile

Progress = Callable[[float, str], None]


def run_coarse_model(
    model: str | os.PathLike,
    reader: ImageReader,
    origin: Window,
    grid: Grid,
    rows: list[list[Tile]],
    tile_size: int,
    overlap: float,
    batch_size: int,
    device: str,
    out_path: Path,
    *,
    num_classes: int | None = None,
    aoi: shapely.Geometry | None = None,
    cancel: Callable[[], None] = lambda: None,
    progress: Progress = lambda f, m: None,
) -> tuple[CoarseStats, list[ClassInfo]]:
    """Predict `coarse.tif` with the coarse model `model` (name, folder or cached hub id) over
    the tiles `rows` of `grid` (window `origin` of the image). `num_classes`: the refiner's,
    which the coarse model must match. Returns the class counts and the model's classes."""
    from .segment import load_segmentor

    with quiet_libraries():
        segmentor = load_segmentor(model, device)
    classes = list(segmentor.card.classes or [])
    if num_classes is not None and num_classes != len(classes):
        raise InputError(f"coarse model {segmentor.card.name!r} has {len(classes)} classes, the refiner "
                         f"{num_classes}: pick a coarse model made for the refiner's classes")
    window_w = blend_window(tile_size, int(round(tile_size * overlap)))
    acc = StripAccumulator(len(classes), grid.width, tile_size)
    stats = CoarseStats()
    total = sum(len(r) for r in rows)
    done = 0
    profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=1, dtype="uint8", crs=grid.crs,
                   transform=grid.transform, nodata=NO_COARSE, tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate")
    with rasterio.open(out_path, "w", **profile) as dst:
        def write(first: int, probs: np.ndarray, wsum: np.ndarray) -> None:
            valid = wsum > 0
            if aoi is not None:
                strip = grid.strip(first, probs.shape[1])
                valid &= ~geometry_mask([aoi], out_shape=valid.shape, transform=strip.transform)
            labels = np.where(valid, probs.argmax(axis=0), NO_COARSE).astype(np.uint8)
            stats.counts += np.bincount(labels[valid], minlength=256)[:256]
            dst.write(labels, 1, window=Window(0, first, grid.width, labels.shape[0]))

        for r, row in enumerate(rows):
            for start in range(0, len(row), batch_size):
                cancel()
                tiles = row[start:start + batch_size]
                reads = [reader.read(Window(origin.col_off + t.col, origin.row_off + t.row, tile_size, tile_size),
                                     tile_size) for t in tiles]
                keep = [i for i, (_, valid) in enumerate(reads) if valid.any()]
                if keep:
                    probs = segmentor.predict(np.stack([reads[i][0] for i in keep]))
                    for j, i in enumerate(keep):
                        tile = tiles[i]
                        h = min(tile_size, grid.height - tile.row)
                        w = min(tile_size, grid.width - tile.col)
                        acc.add(probs[j][:, :h, :w], window_w[:h, :w] * reads[i][1][:h, :w], tile.row, tile.col)
                done += len(tiles)
                progress(done / total, f"coarse model: tile {done}/{total}")
            next_top = rows[r + 1][0].row if r + 1 < len(rows) else grid.height
            for first, probs, wsum in acc.release(next_top):
                write(first, probs, wsum)
    if stats.counts.sum() == 0:
        raise InputError("the coarse model found no valid image pixels inside the area to refine")
    return stats, classes
