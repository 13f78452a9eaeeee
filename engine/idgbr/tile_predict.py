"""Tiles → weighted predictions: read each tile's image and coarse classes, run the refiner on
batches, and hand back every tile that has data with its probabilities and blend weight, both
cut to the window. The in-process run (strips) and the blocks of a distributed run share this,
so both blend the very same numbers."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import rasterio
from rasterio.windows import Window

from .io.image import ImageReader
from .models import NO_COARSE, TileBatch
from .tiling import Tile

# (tile, probabilities (K[+1], h, w), weight (h, w)); h, w: the tile's part inside the window
Prediction = tuple[Tile, np.ndarray, np.ndarray]


def predict_batches(reader: ImageReader, origin: Window, coarse_ds: rasterio.DatasetReader, tiles: Sequence[Tile],
                    tile_size: int, batch_size: int, refiner, with_uncertainty: bool, blend: np.ndarray,
                    check_cancel: Callable[[], None]) -> Iterator[tuple[int, list[Prediction]]]:
    """For each batch of `tiles` (in order): (tiles in the batch, predictions of those with data).
    `origin` is the window of the image that the coarse raster's grid covers; uncertainty, when
    asked for, comes as one more channel after the class probabilities."""
    height, width = coarse_ds.height, coarse_ds.width
    for start in range(0, len(tiles), batch_size):
        check_cancel()
        batch_tiles = tiles[start:start + batch_size]
        images, coarses, valids = [], [], []
        for tile in batch_tiles:
            img, valid = reader.read(Window(origin.col_off + tile.col, origin.row_off + tile.row,
                                            tile_size, tile_size), tile_size)
            c = read_coarse(coarse_ds, tile.row, tile.col, tile_size)
            images.append(img)
            coarses.append(c)
            valids.append(valid & (c != NO_COARSE))
        keep = [i for i, v in enumerate(valids) if v.any()]
        out: list[Prediction] = []
        if keep:
            batch = TileBatch(np.stack([images[i] for i in keep]), np.stack([coarses[i] for i in keep]),
                              np.stack([valids[i] for i in keep]),
                              np.array([(batch_tiles[i].row, batch_tiles[i].col) for i in keep], np.int64))
            if with_uncertainty:
                probs, unc = refiner.predict_with_uncertainty(batch)
                probs = np.concatenate([probs, unc[:, None]], axis=1)
            else:
                probs = refiner.predict(batch)
            for j, i in enumerate(keep):
                tile = batch_tiles[i]
                h, w = min(tile_size, height - tile.row), min(tile_size, width - tile.col)
                out.append((tile, probs[j][:, :h, :w], blend[:h, :w] * valids[i][:h, :w]))
        yield len(batch_tiles), out


def read_coarse(ds: rasterio.DatasetReader, row: int, col: int, size: int) -> np.ndarray:
    """A (size, size) tile of the staged coarse raster, NO_COARSE beyond its edge."""
    h, w = min(size, ds.height - row), min(size, ds.width - col)
    out = np.full((size, size), NO_COARSE, np.uint8)
    out[:h, :w] = ds.read(1, window=Window(col, row, w, h))
    return out
