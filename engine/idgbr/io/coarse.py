"""Bring the coarse classification onto the image grid, whatever its CRS, resolution, extent
and kind, as a uint8 GeoTIFF (`coarse.tif`) the tiles are then read from.

- Raster: warped with nearest resampling (GDAL WarpedVRT); its NoData stays NoData.
- Vector: reprojected and rasterized strip by strip; the integer `class_field` gives the class
  (without a field every feature is class `class_value`, 1 by default); pixels inside the
  layer's bounding box but outside every polygon are background (class 0); where polygons
  overlap, the smaller feature wins (a building drawn over a parcel keeps its pixels, whatever
  the order of the layer's features). With `instances_path`, the number of the feature that
  owns each pixel (row + 1 of `CoarseStats.features.frame`, 0 for none) is written there too,
  so refined pixels can be given back to the features they came from (idgbr.features).
Outside the coarse layer's extent, and outside the AOI polygon when one is given, the value is
NO_COARSE: "no coarse data", which the pipeline leaves NoData in every output.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioIOError
from rasterio.features import geometry_mask, rasterize
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window, bounds as window_bounds

from ..errors import InputError
from ..models.base import NO_COARSE
from .grid import Grid, boxes_intersect
from .image import reading
from .layers import read_vector, split_source

STRIP_ROWS = 1024
MASK_PIXELS = 1024  # longest side of the decimated mask read that finds a raster's data extent


@dataclass
class PolygonFeatures:
    """A polygon layer's features; feature i (row i of `frame`) is instance i + 1 on the grid."""

    frame: gpd.GeoDataFrame  # as read: the layer's CRS, its fids as the index, every attribute
    geoms: np.ndarray  # the same features made valid, in the grid's CRS
    classes: np.ndarray  # class id of each feature (int64)
    name: str  # the layer, for messages


@dataclass
class CoarseStats:
    """What staging saw: pixel counts per class id (NO_COARSE excluded), and for a polygon layer
    its features."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    features: PolygonFeatures | None = None

    @property
    def max_class(self) -> int:
        present = np.nonzero(self.counts[:NO_COARSE])[0]
        return int(present.max()) if present.size else -1


def coarse_bounds(source: str | Path, crs: CRS) -> tuple[float, float, float, float] | None:
    """Where the coarse layer has data, as a box in `crs`: a vector layer's extent, or a raster's
    valid-data extent (from a decimated read of its mask: any valid pixel in a block counts).
    None when that cannot be told cheaply; staging then says what is wrong with the layer."""
    path, layer = split_source(source)
    if not path.exists():
        return None
    ds = _open_as_raster(source)
    if ds is not None:
        with ds:
            if ds.crs is None:
                return None
            box, src_crs = _data_bounds(ds), ds.crs
    else:
        try:
            if layer is None and len(pyogrio.list_layers(path)) > 1:
                return None  # staging asks which layer
            info = pyogrio.read_info(path, layer=layer, force_total_bounds=True)
        except (RuntimeError, OSError, ValueError):
            return None
        if info.get("crs") is None or info.get("total_bounds") is None or not info.get("features"):
            return None
        box, src_crs = tuple(info["total_bounds"]), CRS.from_user_input(info["crs"])
    if box is None or not all(np.isfinite(box)):
        return None
    try:
        return tuple(transform_bounds(src_crs, crs, *box, densify_pts=21))
    except Exception:  # noqa: BLE001 — PROJ raises several types; staging reports the real problem
        return None


def _open_as_raster(source: str | Path) -> rasterio.DatasetReader | None:
    """The coarse layer opened as a raster, or None when it is a vector layer (or unreadable)."""
    if "|" in str(source):
        return None
    try:
        return rasterio.open(split_source(source)[0])
    except RasterioIOError:
        return None


def _data_bounds(ds: rasterio.DatasetReader) -> tuple[float, float, float, float] | None:
    if ds.mask_flag_enums[0] == [MaskFlags.all_valid]:
        return tuple(ds.bounds)
    step = max(1, math.ceil(max(ds.width, ds.height) / MASK_PIXELS))
    shape = (math.ceil(ds.height / step), math.ceil(ds.width / step))
    with reading("coarse raster", ds.name):
        mask = ds.read_masks(1, out_shape=shape, resampling=Resampling.average) > 0
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if rows.size == 0:
        return None
    # One decimated block of margin on each side: the average may blur an edge by that much.
    c0, c1 = max(0, (cols[0] - 1) * step), min(ds.width, (cols[-1] + 2) * step)
    r0, r1 = max(0, (rows[0] - 1) * step), min(ds.height, (rows[-1] + 2) * step)
    return window_bounds(Window(c0, r0, c1 - c0, r1 - r0), ds.transform)


def stage_coarse(
    source: str | Path,
    grid: Grid,
    out_path: Path,
    *,
    class_field: str | None = None,
    class_value: int = 1,
    num_classes: int | None = None,
    aoi: shapely.Geometry | None = None,
    image_valid: Callable[[int, int], np.ndarray] | None = None,
    cancel: Callable[[], None] = lambda: None,
    instances_path: Path | None = None,
) -> CoarseStats:
    """Write the coarse layer on `grid` to `out_path`; check its class ids against the model.
    `image_valid(row, height)`: where the image has data in those rows of the grid; elsewhere
    coarse.tif is NoData too, like every output. For a polygon layer, also write its features'
    numbers to `instances_path` when given."""
    path, _ = split_source(source)
    if not path.exists():
        raise InputError(f"coarse layer {path} does not exist")
    ds = _open_as_raster(source)
    if ds is not None:
        with ds:
            strips = _raster_strips(ds, grid, str(source))
            return _write(strips, grid, out_path, num_classes, aoi, image_valid, cancel, f"coarse raster {path}")
    features = read_polygons(source, grid, class_field, class_value)
    stats = _write(_vector_strips(features, grid), grid, out_path, num_classes, aoi, image_valid, cancel,
                   f"field {class_field!r} of {path}" if class_field else f"class value of {path}",
                   instances_path)
    stats.features = features
    return stats


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
            with reading("coarse raster", name):
                data = vrt.read(1, window=((row, row + strip.height), (0, grid.width)))
                valid = vrt.read_masks(1, window=((row, row + strip.height), (0, grid.width))) > 0
            yield row, strip, data, valid


def read_polygons(source: str | Path, grid: Grid, class_field: str | None, class_value: int) -> PolygonFeatures:
    """The polygon layer's non-empty features with their class ids; InputError on anything else."""
    df = read_vector(source, "coarse layer")
    name = str(split_source(source)[0])
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
    geoms = shapely.make_valid(np.asarray(df.to_crs(grid.crs).geometry.values))
    if not boxes_intersect(tuple(shapely.total_bounds(geoms)), grid.bounds):
        raise InputError(f"coarse layer {name} does not overlap the image (area to refine)")
    return PolygonFeatures(df, geoms, values, name)


def _vector_strips(features: PolygonFeatures, grid: Grid):
    """Rasterized strips: (row, strip grid, class ids, valid, feature numbers). Features are
    burnt largest first, so that where they overlap the smaller one keeps the pixels."""
    geoms, values, name = features.geoms, features.classes, features.name
    number_class = np.concatenate([[0], values]).astype(np.int32)
    draw_rank = draw_ranks(geoms)
    tree = shapely.STRtree(geoms)
    extent_box = shapely.box(*shapely.total_bounds(geoms))
    for row, strip in grid.strips(STRIP_ROWS):
        hits = tree.query(shapely.box(*strip.bounds))
        hits = hits[np.argsort(draw_rank[hits])]
        shape = (strip.height, strip.width)
        numbers = np.zeros(shape, np.int32)
        if hits.size:
            bad = values[hits][(values[hits] < 0) | (values[hits] >= NO_COARSE)]
            if bad.size:
                raise InputError(f"class id {int(bad[0])} in {name} is outside 0..{NO_COARSE - 1}")
            numbers = rasterize(zip(geoms[hits], hits + 1), out_shape=shape, transform=strip.transform,
                                fill=0, dtype="int32")
        valid = ~geometry_mask([extent_box], out_shape=shape, transform=strip.transform, all_touched=True)
        yield row, strip, number_class[numbers], valid, numbers


def draw_ranks(geoms: np.ndarray) -> np.ndarray:
    """The order in which features are burnt: largest first, so where two overlap the smaller
    one, drawn later, keeps the pixels (ties: the layer's order)."""
    ranks = np.empty(len(geoms), np.int64)
    ranks[np.argsort(-shapely.area(geoms), kind="stable")] = np.arange(len(geoms))
    return ranks


def _write(strips, grid: Grid, out_path: Path, num_classes: int | None, aoi, image_valid, cancel, name: str,
           instances_path: Path | None = None) -> CoarseStats:
    stats = CoarseStats()
    profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=1, dtype="uint8",
                   crs=grid.crs, transform=grid.transform, nodata=NO_COARSE, tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate")
    with contextlib.ExitStack() as files:
        dst = files.enter_context(rasterio.open(out_path, "w", **profile))
        numbers_dst = None if instances_path is None else files.enter_context(
            rasterio.open(instances_path, "w", **{**profile, "dtype": "int32", "nodata": None}))
        for row, strip, data, valid, *numbers in strips:
            cancel()
            if aoi is not None:
                valid &= ~geometry_mask([aoi], out_shape=data.shape, transform=strip.transform)
            if image_valid is not None:
                valid &= image_valid(row, strip.height)
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
            if numbers_dst is not None and numbers:
                numbers_dst.write(np.where(valid, numbers[0], 0), 1,
                                  window=((row, row + strip.height), (0, grid.width)))
    if stats.counts.sum() == 0:
        raise InputError(f"the coarse layer ({name}) has no data inside the area to refine")
    return stats
