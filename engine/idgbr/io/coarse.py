"""Bring the coarse classification onto the image grid, whatever its CRS, resolution, extent
and kind, as a uint8 GeoTIFF (`coarse.tif`) the tiles are then read from.

- Raster: warped with nearest resampling (GDAL WarpedVRT); its NoData stays NoData.
- Vector: reprojected and rasterized strip by strip; the integer `class_field` gives the class
  (without a field every feature is class `class_value`, 1 by default); pixels inside the
  layer's bounding box but outside every polygon are background (class 0); where polygons
  overlap, the later feature wins.
Outside the coarse layer's extent, and outside the AOI polygon when one is given, the value is
NO_COARSE: "no coarse data", which the pipeline leaves NoData in every output.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import rasterio
import shapely
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.features import geometry_mask, rasterize
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds

from ..errors import InputError
from ..models.base import NO_COARSE
from .grid import Grid, boxes_intersect
from .layers import read_vector, split_source

STRIP_ROWS = 1024


@dataclass
class CoarseStats:
    """What staging saw: pixel counts per class id (NO_COARSE excluded)."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))

    @property
    def max_class(self) -> int:
        present = np.nonzero(self.counts[:NO_COARSE])[0]
        return int(present.max()) if present.size else -1


def stage_coarse(
    source: str | Path,
    grid: Grid,
    out_path: Path,
    *,
    class_field: str | None = None,
    class_value: int = 1,
    num_classes: int | None = None,
    aoi: shapely.Geometry | None = None,
    cancel: Callable[[], None] = lambda: None,
) -> CoarseStats:
    """Write the coarse layer on `grid` to `out_path`; check its class ids against the model."""
    path, _ = split_source(source)
    if not path.exists():
        raise InputError(f"coarse layer {path} does not exist")
    try:
        ds = rasterio.open(path) if "|" not in str(source) else None
    except RasterioIOError:
        ds = None
    if ds is not None:
        with ds:
            strips = _raster_strips(ds, grid, str(source))
            return _write(strips, grid, out_path, num_classes, aoi, cancel, f"coarse raster {path}")
    strips = _vector_strips(source, grid, class_field, class_value)
    return _write(strips, grid, out_path, num_classes, aoi, cancel,
                  f"field {class_field!r} of {path}" if class_field else f"class value of {path}")


def _raster_strips(ds: rasterio.DatasetReader, grid: Grid, name: str):
    if ds.crs is None:
        raise InputError(f"coarse raster {name} has no coordinate reference system")
    if not np.issubdtype(np.dtype(ds.dtypes[0]), np.integer):
        raise InputError(f"coarse raster {name} holds {ds.dtypes[0]} values; it must hold integer class ids")
    if not boxes_intersect(transform_bounds(ds.crs, grid.crs, *ds.bounds), grid.bounds):
        raise InputError(f"coarse raster {name} does not overlap the image (area to refine)")
    with WarpedVRT(ds, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                   resampling=Resampling.nearest, nodata=-1, dtype="int32") as vrt:
        for row, strip in grid.strips(STRIP_ROWS):
            data = vrt.read(1, window=((row, row + strip.height), (0, grid.width)))
            valid = vrt.read_masks(1, window=((row, row + strip.height), (0, grid.width))) > 0
            yield row, strip, data, valid


def _vector_strips(source: str | Path, grid: Grid, class_field: str | None, class_value: int):
    df = read_vector(source, "coarse layer")
    name = split_source(source)[0]
    df = df[df.geometry.notna() & ~df.geometry.is_empty]
    kinds = set(df.geom_type)
    if kinds - {"Polygon", "MultiPolygon"}:
        raise InputError(f"coarse layer {name} must hold polygons, it holds {', '.join(sorted(kinds))}")
    if class_field is None:
        values = np.full(len(df), class_value, np.int64)
    else:
        if class_field not in df.columns:
            fields = ", ".join(c for c in df.columns if c != df.geometry.name)
            raise InputError(f"coarse layer {name} has no field {class_field!r} (fields: {fields})")
        col = df[class_field]
        if col.isna().any():
            raise InputError(f"field {class_field!r} of {name} is empty for {int(col.isna().sum())} features")
        numeric = np.asarray(col, dtype=object)
        try:
            values = np.array([float(v) for v in numeric])
        except (TypeError, ValueError):
            raise InputError(f"field {class_field!r} of {name} must hold integer class ids "
                             f"(found {numeric[0]!r})") from None
        if np.any(values != np.round(values)):
            raise InputError(f"field {class_field!r} of {name} must hold integer class ids, not fractions")
        values = values.astype(np.int64)
    if len(df) == 0:
        raise InputError(f"coarse layer {name} holds no polygons")
    geoms = df.to_crs(grid.crs).geometry.values
    geoms = shapely.make_valid(np.asarray(geoms))
    extent = shapely.total_bounds(geoms)
    if not boxes_intersect(tuple(extent), grid.bounds):
        raise InputError(f"coarse layer {name} does not overlap the image (area to refine)")
    tree = shapely.STRtree(geoms)
    extent_box = shapely.box(*extent)
    for row, strip in grid.strips(STRIP_ROWS):
        hits = np.sort(tree.query(shapely.box(*strip.bounds)))
        shape = (strip.height, strip.width)
        data = np.zeros(shape, np.int32)
        if hits.size:
            bad = values[hits][(values[hits] < 0) | (values[hits] >= NO_COARSE)]
            if bad.size:
                raise InputError(f"class id {int(bad[0])} in {name} is outside 0..{NO_COARSE - 1}")
            data = rasterize(zip(geoms[hits], values[hits]), out_shape=shape, transform=strip.transform,
                             fill=0, dtype="int32")
        valid = ~geometry_mask([extent_box], out_shape=shape, transform=strip.transform, all_touched=True)
        yield row, strip, data, valid


def _write(strips, grid: Grid, out_path: Path, num_classes: int | None, aoi, cancel, name: str) -> CoarseStats:
    stats = CoarseStats()
    profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=1, dtype="uint8",
                   crs=grid.crs, transform=grid.transform, nodata=NO_COARSE, tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate")
    with rasterio.open(out_path, "w", **profile) as dst:
        for row, strip, data, valid in strips:
            cancel()
            if aoi is not None:
                valid &= ~geometry_mask([aoi], out_shape=data.shape, transform=strip.transform)
            known = data[valid]
            if known.size:
                lo, hi = int(known.min()), int(known.max())
                limit = (num_classes - 1) if num_classes else NO_COARSE - 1
                if lo < 0 or hi > limit:
                    bad = lo if lo < 0 else hi
                    hint = " (a 0/255 mask? store classes as 0/1)" if bad == 255 else ""
                    raise InputError(f"class id {bad} in {name} is outside the model's range 0..{limit}{hint}")
                stats.counts += np.bincount(known, minlength=256)[:256]
            out = np.where(valid, data, NO_COARSE).astype(np.uint8)
            dst.write(out, 1, window=((row, row + strip.height), (0, grid.width)))
    if stats.counts.sum() == 0:
        raise InputError(f"the coarse layer ({name}) has no data inside the area to refine")
    return stats
