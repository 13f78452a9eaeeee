"""The orthophoto: opening, band choice, scaling to [0, 1], and padded tile reads.

Scaling is fixed for the whole raster (never per tile, which would make seams):
- uint8: value / 255.
- any other type: per band, the 2nd–98th percentile of the valid pixels (from a decimated read
  of at most ~1024² pixels over the area being refined) is stretched to [0, 1] and clipped.
  This is what QGIS's default "cumulative cut" rendering shows an analyst for uint16 or float
  imagery (Sentinel-2 reflectance, pan-sharpened 11-bit, …).
An image with fewer than three selected bands is repeated to three (panchromatic → grey RGB).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.windows import Window

from ..errors import InputError

STATS_PIXELS = 1024


@contextmanager
def reading(what: str, path: str | Path) -> Iterator[None]:
    """GDAL failing to read a user's raster (a truncated download, a corrupt tile) becomes an
    InputError naming the file: the file opened, so only its pixels can be at fault."""
    try:
        yield
    except (RasterioError, CPLE_BaseError) as e:
        cause = e.__cause__ or e  # rasterio's "Read failed" wraps GDAL's own message
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise InputError(f"{what} {path} is damaged or truncated: GDAL cannot read its pixels ({detail}); "
                         "re-export or download it again") from e


def open_raster(path: str | Path, what: str = "image") -> rasterio.DatasetReader:
    """Open a GDAL raster with errors a user can act on."""
    p = Path(path)
    if not str(path).startswith(("/vsi", "http")) and not p.exists():
        raise InputError(f"{what} {p} does not exist")
    try:
        ds = rasterio.open(path)
    except RasterioIOError as e:
        raise InputError(f"{what} {p} is not a raster GDAL can read ({e})") from e
    if ds.crs is None:
        ds.close()
        raise InputError(f"{what} {p} has no coordinate reference system; assign one in QGIS "
                         "(Raster ▸ Projections ▸ Assign Projection) first")
    return ds


@dataclass
class ImageReader:
    """Reads scaled (3, h, w) float32 tiles and their validity from an opened raster."""

    ds: rasterio.DatasetReader
    bands: tuple[int, ...]
    lo: np.ndarray  # per selected band
    hi: np.ndarray

    @classmethod
    def open(cls, path: str | Path, bands: tuple[int, ...] | None, window: Window) -> "ImageReader":
        ds = open_raster(path)
        if bands is None:
            bands = tuple(range(1, min(ds.count, 3) + 1))
        bad = [b for b in bands if not 1 <= b <= ds.count]
        if bad or not 1 <= len(bands) <= 3:
            ds.close()
            raise InputError(f"image {path}: bands {list(bands)} are not 1–3 bands among its {ds.count}")
        dtype = np.dtype(ds.dtypes[bands[0] - 1])
        if dtype == np.uint8:
            lo, hi = np.zeros(len(bands)), np.full(len(bands), 255.0)
        else:
            lo, hi = _percentile_stretch(ds, bands, window)
        return cls(ds, tuple(bands), lo.astype(np.float32), hi.astype(np.float32))

    def read(self, window: Window, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Scaled image (3, size, size) and validity (size, size) for a window whose top-left
        is inside the raster; what lies beyond the raster is zero and invalid."""
        h = min(size, self.ds.height - int(window.row_off))
        w = min(size, self.ds.width - int(window.col_off))
        win = Window(window.col_off, window.row_off, w, h)
        with reading("image", self.ds.name):
            data = self.ds.read(self.bands, window=win).astype(np.float32)
            masks = self.ds.read_masks(self.bands, window=win)
        img = np.zeros((3, size, size), np.float32)
        scaled = np.clip((data - self.lo[:, None, None]) / (self.hi - self.lo)[:, None, None], 0.0, 1.0)
        img[:, :h, :w] = scaled[np.arange(3) % len(self.bands)]
        valid = np.zeros((size, size), bool)
        valid[:h, :w] = masks.any(axis=0)
        img[:, ~valid] = 0.0
        return img, valid

    def valid_rows(self, origin: Window, row: int, height: int) -> np.ndarray:
        """Where the image has data in rows [row, row + height) of window `origin`, (height, width)."""
        win = Window(origin.col_off, origin.row_off + row, origin.width, height)
        with reading("image", self.ds.name):
            return self.ds.read_masks(self.bands, window=win).any(axis=0)

    def close(self) -> None:
        self.ds.close()


def _percentile_stretch(ds: rasterio.DatasetReader, bands: tuple[int, ...], window: Window) -> tuple[np.ndarray, np.ndarray]:
    scale = max(window.width, window.height) / STATS_PIXELS
    shape = (max(1, int(window.height / max(scale, 1))), max(1, int(window.width / max(scale, 1))))
    with reading("image", ds.name):
        data = ds.read(bands, window=window, out_shape=(len(bands),) + shape, masked=True).astype(np.float64)
    lo, hi = np.zeros(len(bands)), np.ones(len(bands))
    for i, band in enumerate(data):
        vals = band.compressed()
        if vals.size == 0:
            raise InputError(f"image band {bands[i]} has no valid pixels in the area to refine")
        lo[i], hi[i] = np.percentile(vals, [2, 98])
        if hi[i] <= lo[i]:
            hi[i] = lo[i] + 1.0
    return lo, hi
