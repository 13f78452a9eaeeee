"""The tile grid: overlapping square tiles that cover every pixel of a window.

Tiles advance by `stride = tile_size·(1 − overlap)`; the last tile of a row or column is
shifted back inside the raster so no tile hangs over its edge. A raster smaller than a tile
gets one tile, padded by the reader.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError


@dataclass(frozen=True)
class Tile:
    """A tile's top-left corner (row, col) in window pixels; its size is the grid's."""

    row: int
    col: int


def tile_starts(length: int, tile_size: int, stride: int) -> list[int]:
    """Start offsets along one axis: regular steps, the last one flush with the end."""
    if length <= tile_size:
        return [0]
    starts = list(range(0, length - tile_size, stride))
    starts.append(length - tile_size)
    return starts


def stride_for(tile_size: int, overlap: float) -> int:
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap must be in [0, 1), got {overlap}")
    if tile_size < 16:
        raise InputError(f"tile size must be at least 16 pixels, got {tile_size}")
    return max(1, int(round(tile_size * (1.0 - overlap))))


def tile_rows(height: int, width: int, tile_size: int, overlap: float) -> list[list[Tile]]:
    """Tiles grouped by row of tiles, top to bottom, so stitching can stream in strips."""
    stride = stride_for(tile_size, overlap)
    cols = tile_starts(width, tile_size, stride)
    return [[Tile(r, c) for c in cols] for r in tile_starts(height, tile_size, stride)]
