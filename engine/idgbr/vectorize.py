"""Class raster → polygons in a GeoPackage layer, the way a GIS analyst expects them.

    areas = vectorize("refined.tif", "out.gpkg", "refined", skip_classes=(0,), simplify=1.0,
                      min_area_m2=20.0, regularize_classes=(1,))

Design, and why:

* Memory does not grow with the raster's height: it is read, sieved and polygonized in strips
  of rows. Polygons that touch the line between two strips stay pending until the next strip
  has been polygonized, are then dissolved with their same-class neighbours across the line,
  and are written as soon as they no longer touch the line below.
* Geometry is built in pixel coordinates (column, row), where every vertex is an integer, and
  turned into map coordinates with the raster's transform only when written: a pixel corner gets
  bit-identical coordinates in every strip, so edges shared across a strip line match exactly
  (per-strip map transforms round differently from strip to strip).
* NoData, skipped classes and (for the changes layer) unchanged pixels are polygonized too and
  dropped only when writing, so the polygons always form a full coverage in which every edge is
  shared by two polygons. Simplification works on that coverage's edges (_simplify_coverage):
  each edge between two junctions is simplified once for both of its polygons, so neighbours stay
  gapless and without overlaps. (shapely's coverage_simplify needs GEOS 3.12; inside QGIS on
  Debian 12 the engine runs on GEOS 3.11, hence our own.) Each strip is simplified with its
  border fixed; polygons dissolved across a strip line are simplified again, which removes the
  kinks pinned at that line (already simplified edges do not change: Douglas-Peucker is
  idempotent).
* Small regions are removed before polygonizing with GDAL's sieve (merged into their largest
  neighbour, no holes). Each strip is sieved with a halo of rows at least the size threshold, so
  small regions are always measured whole (for thresholds up to MAX_HALO_ROWS pixels); which
  neighbour absorbs one can still differ from a whole-raster sieve when two neighbours are both
  cut by the halo, hence a minimum halo of MIN_HALO_ROWS.
* area_m2 and perimeter_m are geodesic, on the CRS's ellipsoid: metres in any CRS.
* A strip is polygonized, simplified, and its polygons that touch no strip line squared, measured
  and made ready to write on its own (_Layer.polygonize); only the merge across strip lines is
  sequential (_Seams). With `bands` (a Dask cluster), workers polygonize bands of whole strips of
  the same strip layout and this process merges and writes: the layer is the in-process one,
  feature for feature.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
import shapely
from affine import Affine
from pyproj import CRS, Geod, Transformer
from rasterio.errors import RasterioIOError
from rasterio.features import shapes, sieve
from rasterio.windows import Window
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely import Polygon

from .errors import Cancelled, InputError
from .models.card import ClassInfo, default_classes

Progress = Callable[[float, str], None]
CancelCheck = Callable[[], bool]

NONE = np.iinfo(np.int32).min  # value of pixels that are never written (NoData, unchanged)
CLASS_DTYPES = ("uint8", "int8", "uint16", "int16", "int32")
# Default strip: about STRIP_PIXELS pixels (polygonizing takes ~150 bytes a pixel), within
# MIN_STRIP_ROWS..MAX_STRIP_ROWS rows.
STRIP_PIXELS, MIN_STRIP_ROWS, MAX_STRIP_ROWS = 1_500_000, 128, 1024
MIN_HALO_ROWS, MAX_HALO_ROWS = 64, 1024
REGULARIZE_MIN_EDGE_PX = 2.0  # wall runs shorter than this are folded into their neighbours
REGULARIZE_MAX_AREA_CHANGE = 0.3
REGULARIZE_MARGIN_PX = 8.0  # a squared outline stays within this distance of the original's box
CHANGE_BITS = 15  # a change is polygonized as the value from_class << CHANGE_BITS | to_class


# ---------------------------------------------------------------------------------------------
# Public API


def vectorize(class_raster: str | Path, out_path: str | Path, layer: str = "refined", *,
              classes: list[ClassInfo] | None = None, skip_classes: tuple[int, ...] = (),
              simplify: float = 0.0, simplify_units: str = "px", min_area_m2: float = 0.0,
              regularize_classes: tuple[int, ...] = (), progress: Progress | None = None,
              cancel: CancelCheck | None = None, strip_rows: int | None = None,
              bands: Bands | None = None) -> dict[int, float]:
    """Write the polygons of a class raster to `layer` of the GeoPackage `out_path` (other layers
    of an existing file are kept; a layer of that name is replaced). Returns the area in m² of
    what was written, per class id. With `bands` (a Dask cluster: distributed.DaskBands), the
    strips are polygonized there (see _write_layer): the same layer."""
    if simplify < 0 or min_area_m2 < 0:
        raise InputError("simplify tolerance and minimum area must not be negative")
    if simplify_units not in ("px", "map"):
        raise InputError(f"simplify units must be 'px' or 'map', got {simplify_units!r}")
    job = ClassPolygons(str(class_raster), tuple(classes) if classes is not None else None, min_area_m2,
                        frozenset(int(c) for c in skip_classes), frozenset(int(c) for c in regularize_classes),
                        simplify, simplify_units)
    areas: dict[int, float] = {}

    def written(columns: dict[str, np.ndarray]) -> None:
        for v, a in zip(columns["class_id"].tolist(), columns["area_m2"].tolist()):
            areas[v] = areas.get(v, 0.0) + a
    _write_layer(job, out_path, layer, strip_rows, bands, written, progress, cancel)
    return dict(sorted(areas.items()))


def vectorize_changes(refined_raster: str | Path, coarse_raster: str | Path, out_path: str | Path,
                      layer: str = "changes", *, classes: list[ClassInfo] | None = None,
                      min_area_m2: float = 0.0, progress: Progress | None = None,
                      cancel: CancelCheck | None = None, strip_rows: int | None = None,
                      bands: Bands | None = None) -> int:
    """Write polygons where the refined class differs from the coarse class (same grid; pixels
    NoData in either are ignored). Change polygons smaller than `min_area_m2` are dropped rather
    than merged into a neighbour, so no change is attributed to the wrong classes. Returns the
    number of features written. `bands`: as for vectorize."""
    if min_area_m2 < 0:
        raise InputError("minimum area must not be negative")
    with _open_class_raster(refined_raster) as ref, _open_class_raster(coarse_raster) as coarse:
        if (ref.shape, ref.transform, ref.crs) != (coarse.shape, coarse.transform, coarse.crs):
            raise InputError(f"{refined_raster} and {coarse_raster} are not on the same grid")
    count = [0]

    def written(columns: dict[str, np.ndarray]) -> None:
        count[0] += len(columns["area_m2"])
    _write_layer(ChangePolygons(str(refined_raster), tuple(classes) if classes is not None else None, min_area_m2,
                                str(coarse_raster)), out_path, layer, strip_rows, bands, written, progress, cancel)
    return count[0]


def regularize(polygon: Polygon, min_edge: float = REGULARIZE_MIN_EDGE_PX,
               max_area_change: float = REGULARIZE_MAX_AREA_CHANGE) -> Polygon:
    """Square a building outline: rotate it so that its minimum-area rectangle is axis-aligned,
    replace each run of mostly-horizontal (mostly-vertical) edges by one horizontal (vertical)
    line at the run's length-weighted mean position, fold runs shorter than `min_edge` into their
    neighbours, and rotate back. Returns `polygon` itself when the result is invalid or its area
    differs by more than `max_area_change` (a fraction)."""
    if polygon.area <= 0:
        return polygon
    angle = math.degrees(_rectangle_direction(polygon))
    origin = polygon.centroid
    aligned = shapely.affinity.rotate(polygon, -angle, origin=origin)
    shell = _orthogonal_ring(np.asarray(aligned.exterior.coords), min_edge)
    if shell is None:
        return polygon
    holes = [h for h in (_orthogonal_ring(np.asarray(r.coords), min_edge) for r in aligned.interiors)
             if h is not None]
    squared = shapely.affinity.rotate(Polygon(shell, holes), angle, origin=origin)
    if not squared.is_valid or abs(squared.area - polygon.area) > max_area_change * polygon.area:
        return polygon
    return squared


# ---------------------------------------------------------------------------------------------
# Layers (class polygons, changes), strip by strip, here or on workers


@dataclass(frozen=True)
class _Job:
    """What polygonizing a strip of a layer needs (plain values: sent to workers)."""

    raster: str
    classes: tuple[ClassInfo, ...] | None
    min_area_m2: float

    def open(self, files: contextlib.ExitStack) -> _Layer:
        """The job on its open rasters (closed with `files`)."""
        raise NotImplementedError


@dataclass(frozen=True)
class ClassPolygons(_Job):
    """The polygons of each class of `raster` (vectorize)."""

    skip: frozenset[int]
    squared: frozenset[int]  # classes regularized
    simplify: float
    simplify_units: str

    def open(self, files: contextlib.ExitStack) -> _ClassLayer:
        return _ClassLayer(self, files.enter_context(_open_class_raster(self.raster)))


@dataclass(frozen=True)
class ChangePolygons(_Job):
    """The regions where `raster` differs from `coarse` (vectorize_changes)."""

    coarse: str

    def open(self, files: contextlib.ExitStack) -> _ChangeLayer:
        return _ChangeLayer(self, files.enter_context(_open_class_raster(self.raster)),
                            files.enter_context(_open_class_raster(self.coarse)))


@dataclass
class StripPolygons:
    """A strip polygonized on its own: its final polygons as features ready to write (map
    coordinates, the layer's columns), and in pixel coordinates the polygons that cross a strip
    line, for _Seams. Pickled with the geometries as WKB, in bulk (results of Dask tasks)."""

    r0: int
    r1: int
    final: np.ndarray
    columns: dict[str, np.ndarray]
    values: np.ndarray
    geoms: np.ndarray

    def __getstate__(self) -> dict[str, object]:
        return {**vars(self), "final": shapely.to_wkb(self.final), "geoms": shapely.to_wkb(self.geoms)}

    def __setstate__(self, state: dict[str, object]) -> None:
        vars(self).update(state, final=shapely.from_wkb(state["final"]), geoms=shapely.from_wkb(state["geoms"]))


class Bands(Protocol):
    """Runs polygonize_band on bands of whole strips elsewhere (distributed.DaskBands)."""

    pixels: int  # a band holds about this many pixels, at least one strip

    def map(self, fn: Callable[[_Job, list[tuple[int, int]]], list[StripPolygons]], job: _Job,
            bands: list[list[tuple[int, int]]],
            cancel: CancelCheck | None) -> Generator[list[StripPolygons], None, None]:
        """fn(job, band) for every band, the results in band order."""
        ...


def polygonize_band(job: _Job, strips: list[tuple[int, int]]) -> list[StripPolygons]:
    """Polygonize a band of strips (a worker's task): each strip exactly as _write_layer does."""
    with contextlib.ExitStack() as files:
        layer = job.open(files)
        return [layer.polygonize(r0, r1) for r0, r1 in strips]


def _write_layer(job: _Job, out_path: str | Path, name: str, strip_rows: int | None, bands: Bands | None,
                 written: Callable[[dict[str, np.ndarray]], None], progress: Progress | None,
                 cancel: CancelCheck | None) -> None:
    """Polygonize the job's raster (merged_strips) and write the layer; `written` sees the columns
    of every chunk written."""
    with contextlib.ExitStack() as files:
        here = job.open(files)
        writer = files.enter_context(_LayerWriter(out_path, name, here.src.crs.to_wkt(), here.fields))
        for strip, merged in files.enter_context(contextlib.closing(
                merged_strips(here, job, strip_rows, bands, progress, cancel))):
            for geoms, columns in ((strip.final, strip.columns), merged):
                writer.write(geoms, columns)
                written(columns)


def merged_strips(here: _Layer, job: _Job, strip_rows: int | None, bands: Bands | None,
                  progress: Progress | None, cancel: CancelCheck | None
                  ) -> Generator[tuple[StripPolygons, tuple[np.ndarray, dict[str, np.ndarray]]], None, None]:
    """Each strip of the job's raster, top to bottom, with the features its strip line settled:
    (the strip, here.features of what _Seams.merge settled). The strips are polygonized `here`
    one by one, or with `bands` on workers in bands of whole strips of the same layout; the
    polygons that cross a strip line are merged here, in order: the same strips and the same
    merges, so the same features. Closing it (a failure or a cancel in the caller) stops the
    bands still running."""
    width, height = here.src.width, here.src.height
    rows = strip_rows or _default_strip_rows(width)
    strips = [(r0, min(r0 + rows, height)) for r0 in range(0, height, rows)]
    if bands is None:
        polygonized: Generator[list[StripPolygons], None, None] = ([here.polygonize(r0, r1)] for r0, r1 in strips)
    else:
        per_band = max(1, round(bands.pixels / (width * rows)))
        polygonized = bands.map(polygonize_band, job, [strips[i:i + per_band]
                                                       for i in range(0, len(strips), per_band)], cancel)
    with contextlib.closing(polygonized):
        seams = _Seams(width, height, here.tol_px, here.hidden, here.squared)
        for band in polygonized:
            for strip in band:
                if cancel is not None and cancel():
                    raise Cancelled("vectorizing cancelled")
                yield strip, here.features(*seams.merge(strip.r0, strip.r1, strip.values, strip.geoms))
                if progress is not None:
                    progress(strip.r1 / height, f"vectorized {strip.r1} of {height} rows")


class _Layer:
    """A job on its open rasters: strips to polygonize, and the features written of a batch."""

    fields: dict[str, object]  # the layer's columns, for _LayerWriter

    def __init__(self, job: _Job, src: rasterio.DatasetReader) -> None:
        self.src, self.ground, self.name = src, _Ground(src), _namer(list(job.classes or ()))
        self.tol_px, self.hidden, self.squared = 0.0, {int(NONE)}, set()  # see _Seams

    def read(self, r0: int, r1: int) -> np.ndarray:
        raise NotImplementedError

    def features(self, values: np.ndarray, geoms: np.ndarray,
                 complete: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The complete polygons of a batch that are written, in map coordinates, with their columns."""
        raise NotImplementedError

    def polygonize(self, r0: int, r1: int) -> StripPolygons:
        values, geoms, crossing = _strip_polygons(self.read, r0, r1, self.src.height, self.tol_px)
        final, columns = self.features(values, geoms, ~crossing)
        return StripPolygons(r0, r1, final, columns, values[crossing], geoms[crossing])


class _ClassLayer(_Layer):
    """Class polygons: strips sieved (with a halo), simplified, buildings squared."""

    fields = {"class_id": "int32", "class_name": str, "area_m2": float, "perimeter_m": float}

    def __init__(self, job: ClassPolygons, src: rasterio.DatasetReader) -> None:
        super().__init__(job, src)
        self.skip, self.squared = set(job.skip), set(job.squared)
        self.hidden |= self.skip
        self.tol_px = job.simplify if job.simplify_units == "px" else job.simplify / self.ground.pixel_size_map
        self.sieve_px = math.ceil(job.min_area_m2 / self.ground.pixel_area_m2) if job.min_area_m2 > 0 else 0
        self.halo = min(max(self.sieve_px, MIN_HALO_ROWS), MAX_HALO_ROWS) if self.sieve_px > 1 else 0

    def read(self, r0: int, r1: int) -> np.ndarray:
        h0, h1 = max(0, r0 - self.halo), min(self.src.height, r1 + self.halo)
        window = Window(0, h0, self.src.width, h1 - h0)
        values = self.src.read(1, window=window).astype(np.int32)
        valid = self.src.read_masks(1, window=window) > 0
        if self.sieve_px > 1:
            values = sieve(values, self.sieve_px, mask=valid, connectivity=4)
        values[~valid] = NONE
        return values[r0 - h0:r1 - h0]

    def features(self, values: np.ndarray, geoms: np.ndarray,
                 complete: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        keep = complete & ~np.isin(values, list(self.hidden))
        out = _regularized(values, geoms, keep, self.squared, self.skip, self.ground.aspect) if self.squared \
            else geoms[keep]
        map_geoms = self.ground.to_map(out)
        area, perimeter = self.ground.measure(map_geoms)
        ids = values[keep]
        return map_geoms, {"class_id": ids, "class_name": np.array([self.name(v) for v in ids], dtype=object),
                           "area_m2": area, "perimeter_m": perimeter}


class _ChangeLayer(_Layer):
    """Change polygons: each changed pixel polygonized as from_class << CHANGE_BITS | to_class;
    those under the minimum area dropped."""

    fields = {"from_class": "int32", "to_class": "int32", "from_name": str, "to_name": str, "area_m2": float}
    LIMIT = 1 << CHANGE_BITS

    def __init__(self, job: ChangePolygons, src: rasterio.DatasetReader, coarse: rasterio.DatasetReader) -> None:
        super().__init__(job, src)
        self.coarse, self.min_area_m2 = coarse, job.min_area_m2

    def read(self, r0: int, r1: int) -> np.ndarray:
        window = Window(0, r0, self.src.width, r1 - r0)
        to, fro = (ds.read(1, window=window).astype(np.int32) for ds in (self.src, self.coarse))
        valid = (self.src.read_masks(1, window=window) > 0) & (self.coarse.read_masks(1, window=window) > 0)
        changed = valid & (to != fro)
        if changed.any() and not (0 <= min(to[changed].min(), fro[changed].min())
                                  and max(to[changed].max(), fro[changed].max()) < self.LIMIT):
            raise InputError(f"class values must lie in 0..{self.LIMIT - 1} to map changes")
        return np.where(changed, fro << CHANGE_BITS | to, NONE).astype(np.int32)

    def features(self, values: np.ndarray, geoms: np.ndarray,
                 complete: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        keep = complete & (values != NONE)
        map_geoms = self.ground.to_map(geoms[keep])
        area, _ = self.ground.measure(map_geoms)
        big = area >= self.min_area_m2
        fro, to = values[keep][big] >> CHANGE_BITS, values[keep][big] & (self.LIMIT - 1)
        return map_geoms[big], {"from_class": fro, "to_class": to,
                                "from_name": np.array([self.name(v) for v in fro], dtype=object),
                                "to_name": np.array([self.name(v) for v in to], dtype=object),
                                "area_m2": area[big]}


# ---------------------------------------------------------------------------------------------
# Strip-wise polygonization


def _strip_polygons(read: Callable[[int, int], np.ndarray], r0: int, r1: int, height: int,
                    tol_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The polygons of rows r0..r1 on their own: (values, polygons, crossing), `crossing` marking
    those that touch a strip line and wait for the neighbouring strip (_Seams). Depends on this
    strip alone: the part of the work that runs anywhere, in any order. All 4-connected regions
    (NONE included) are polygonized with the strip's window transform on the pixel grid, so that
    vertices are exact integers."""
    found = [(int(v), shapely.geometry.shape(g))
             for g, v in shapes(read(r0, r1), connectivity=4, transform=Affine.translation(0, r0))]
    geoms = np.empty(len(found), dtype=object)
    geoms[:] = [g for _, g in found]
    values = np.array([v for v, _ in found], dtype=np.int32)
    if tol_px > 0:
        values, geoms = _simplify_coverage(values, geoms, tol_px)
    _, top, _, bottom = shapely.bounds(geoms).T
    return values, geoms, ((top == r0) & (r0 > 0)) | ((bottom == r1) & (r1 < height))


class _Seams:
    """The polygons that cross strip lines, merged strip after strip (in order, in one place):
    pending polygons, touching the line at the front, are dissolved with their same-class
    neighbours of the next strip and re-simplified; those no longer at the front are final."""

    def __init__(self, width: int, height: int, tol_px: float, hidden: set[int], squared: set[int]) -> None:
        self.width, self.height, self.tol_px, self.hidden, self.squared = width, height, tol_px, hidden, squared
        self.values, self.pending = np.empty(0, np.int32), np.empty(0, object)

    def merge(self, r0: int, r1: int, values: np.ndarray,
              geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Take the crossing polygons of strip r0..r1 (after the strips above it); returns the
        (values, polygons, complete) batch of what the merge settled: a coverage of part of the
        raster whose `complete` polygons are final (each polygon is final in exactly one batch), the
        others their context."""
        values, geoms = _dissolve(np.concatenate([self.values, values]), np.concatenate([self.pending, geoms]))
        if self.tol_px > 0 and len(geoms):
            values, geoms = _simplify_coverage(values, geoms, self.tol_px)
        at_front = (shapely.bounds(geoms)[:, 3] == r1) & (r1 < self.height)
        self.values, self.pending = values[at_front], _fill_holes(values[at_front], geoms[at_front], self.hidden,
                                                                  self.squared, self.width, r1)
        return values, geoms, ~at_front


def _dissolve(values: np.ndarray, geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union the same-class polygons that meet (groups of polygons that touch across a strip
    line) and split the unions into connected polygons; polygons meeting none pass unchanged."""
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    meet = (left < right) & (values[left] == values[right])
    n = len(geoms)
    _, group = connected_components(coo_matrix((np.ones(meet.sum()), (left[meet], right[meet])), shape=(n, n)))
    alone = np.bincount(group, minlength=n)[group] == 1
    out_values, out_geoms = [values[alone]], [geoms[alone]]
    joined = np.flatnonzero(~alone)
    joined = joined[np.argsort(group[joined], kind="stable")]
    for members in np.split(joined, np.flatnonzero(np.diff(group[joined])) + 1) if len(joined) else []:
        parts = shapely.get_parts(shapely.union_all(geoms[members]))
        out_values.append(np.full(len(parts), values[members[0]], np.int32))
        out_geoms.append(parts)
    return np.concatenate(out_values), np.concatenate(out_geoms)


def _fill_holes(values: np.ndarray, geoms: np.ndarray, hidden: set[int], squared: set[int],
                width: int, front: int) -> np.ndarray:
    """Fill the holes of pending polygons that are never written (background, NoData), which
    would otherwise grow with the raster, collecting a hole for every finished polygon. Nothing
    pending lies in a hole (a hole cannot reach the front line), so the filled polygon overlaps
    only finished ones. When buildings are squared, holes near the front or near a pending polygon
    to be squared stay: squared outlines may grow into hidden polygons, never into finished ones."""
    targets = np.flatnonzero(np.isin(values, list(hidden)) & (shapely.get_num_interior_rings(geoms) > 0))
    guards = None
    if squared:
        margin = REGULARIZE_MARGIN_PX
        boxes = shapely.bounds(geoms[np.isin(values, list(squared))]) + np.array([-1, -1, 1, 1]) * margin
        guards = shapely.STRtree(np.append(shapely.box(*boxes.T), shapely.box(0, front - margin, width, front)))
    out = geoms.copy()
    for i in targets:
        holes = shapely.get_interior_ring(geoms[i], np.arange(shapely.get_num_interior_rings(geoms[i])))
        kept = holes[np.unique(guards.query(holes)[0])] if guards is not None else []
        out[i] = Polygon(geoms[i].exterior, list(kept))
    return out


def _simplify_coverage(values: np.ndarray, geoms: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Simplify a coverage of polygons, its outline fixed, without gaps or overlaps. Its linework
    is noded and cut into edges between junctions; each edge shared by two polygons is simplified
    once (topology-preserving Douglas-Peucker, all edges together so none crosses another; the
    outline goes in as 2-point segments, which cannot change), and every polygon is rebuilt from
    its edges. A polygon thinner than `tol` between two junctions can collapse and vanish; its
    neighbours then share one edge. Should simplification still break the coverage (total area
    changed), the coverage is returned as it was."""
    edges = shapely.get_parts(shapely.line_merge(shapely.union_all(shapely.boundary(geoms))))
    # The polygons on either side of each edge, found with probes just off the middle of its first
    # segment (vertices are whole pixel corners: no polygon is thinner than the offset there).
    a, b = (shapely.get_coordinates(shapely.get_point(edges, i)) for i in (0, 1))
    normal = (b - a)[:, ::-1] * [-1.0, 1.0] / np.hypot(*(b - a).T)[:, None]
    probes = shapely.points(np.concatenate([(a + b) / 2 + 1e-6 * normal, (a + b) / 2 - 1e-6 * normal]))
    polygon, probe = shapely.STRtree(probes).query(geoms, predicate="contains")  # polygons prepared: fast
    edge = probe % len(edges)
    shared = np.bincount(edge, minlength=len(edges)) == 2
    outline = edges[~shared]
    coords, line = shapely.get_coordinates(outline, return_index=True)
    same = line[1:] == line[:-1]
    segments = shapely.linestrings(np.stack([coords[:-1][same], coords[1:][same]], axis=1))
    lines = np.concatenate([edges[shared], segments])
    simplified = shapely.get_parts(shapely.simplify(shapely.multilinestrings(lines), tol, preserve_topology=True))
    if len(simplified) != len(lines):
        return values, geoms
    edges = edges.copy()
    edges[shared] = simplified[:shared.sum()]
    order = np.argsort(polygon, kind="stable")
    own_edges = shapely.multilinestrings(edges[edge[order]], indices=polygon[order], out=np.empty(len(geoms), object))
    parts, index = shapely.get_parts(shapely.build_area(own_edges), return_index=True)
    if not shapely.is_valid(parts).all() or \
            not math.isclose(shapely.area(parts).sum(), shapely.area(geoms).sum(), rel_tol=1e-9):
        return values, geoms
    return values[index], parts


# ---------------------------------------------------------------------------------------------
# Regularization


def _regularized(values: np.ndarray, geoms: np.ndarray, keep: np.ndarray, squared: set[int],
                 skip: set[int], aspect: float) -> np.ndarray:
    """The kept polygons of a batch, those of the `squared` classes regularized. A squared
    outline may take over skipped-class area (background) but no other polygon's, so nothing
    written overlaps. Squaring works on ground-proportional pixels (rows scaled by `aspect`)."""
    out = geoms[keep].copy()
    free = geoms[np.isin(values, list(skip))]
    tree = shapely.STRtree(free)
    for i in np.flatnonzero(np.isin(values[keep], list(squared))):
        polygon = out[i]
        ground = shapely.affinity.scale(polygon, 1, aspect, origin=(0, 0))
        square = regularize(ground)
        if square is ground:
            continue
        square = shapely.affinity.scale(square, 1, 1 / aspect, origin=(0, 0))
        reach = shapely.box(*(np.asarray(polygon.bounds) + np.array([-1, -1, 1, 1]) * REGULARIZE_MARGIN_PX))
        # Clip the free polygons first: the background can be huge, a union with it slow.
        allowed = shapely.union_all([polygon, *shapely.intersection(free[tree.query(reach)], reach)])
        parts = shapely.get_parts(shapely.intersection(square, allowed))
        parts = parts[shapely.get_type_id(parts) == shapely.GeometryType.POLYGON]
        if len(parts):
            best = parts[np.argmax(shapely.area(parts))]
            if abs(best.area - polygon.area) <= REGULARIZE_MAX_AREA_CHANGE * polygon.area:
                out[i] = best
    return out


def _rectangle_direction(polygon: Polygon) -> float:
    """Direction (radians) of a side of the minimum-area rectangle around `polygon`: one of its
    convex hull's edges (rotating calipers; shapely's oriented_envelope gives the minimum-width
    rectangle instead on GEOS < 3.12)."""
    hull = np.asarray(polygon.convex_hull.exterior.coords)
    sides = np.diff(hull, axis=0)
    angles = np.arctan2(sides[:, 1], sides[:, 0])
    cos, sin = np.cos(angles), np.sin(angles)
    along = hull[:, :1] * cos + hull[:, 1:] * sin  # hull points × candidate directions
    across = hull[:, 1:] * cos - hull[:, :1] * sin
    return float(angles[np.argmin(np.ptp(along, axis=0) * np.ptp(across, axis=0))])


def _orthogonal_ring(coords: np.ndarray, min_edge: float) -> np.ndarray | None:
    """A closed ring of horizontal and vertical edges following the closed ring `coords`, or
    None when it does not have two runs of each direction."""
    points = coords[:-1]
    edges = np.roll(points, -1, axis=0) - points
    horizontal = np.abs(edges[:, 0]) >= np.abs(edges[:, 1])
    starts = np.flatnonzero(horizontal != np.roll(horizontal, 1))
    if len(starts) < 4:
        return None
    middles = points + edges / 2
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    runs: list[list] = []  # [horizontal?, length-weighted sum of positions, length]
    for i in np.roll(np.arange(len(points)), -starts[0]):
        position = middles[i, 1] if horizontal[i] else middles[i, 0]
        if runs and runs[-1][0] == horizontal[i]:
            runs[-1][1] += position * lengths[i]
            runs[-1][2] += lengths[i]
        else:
            runs.append([bool(horizontal[i]), position * lengths[i], lengths[i]])
    positions = [r[1] / r[2] for r in runs]
    while len(runs) > 4:  # runs alternate direction: a run's side spans its two neighbours' lines
        sides = [abs(positions[(k + 1) % len(runs)] - positions[k - 1]) for k in range(len(runs))]
        k = int(np.argmin(sides))
        if sides[k] >= min_edge:
            break
        j = (k + 1) % len(runs)  # fold run k: its two neighbours become one run
        runs[k - 1][1] += runs[j][1]
        runs[k - 1][2] += runs[j][2]
        positions[k - 1] = runs[k - 1][1] / runs[k - 1][2]
        for i in sorted((k, j), reverse=True):
            del runs[i], positions[i]
    corners = []
    for k, run in enumerate(runs):  # the corner between run k and run k + 1
        after = positions[(k + 1) % len(runs)]
        corners.append((after, positions[k]) if run[0] else (positions[k], after))
    return np.array(corners + corners[:1])


# ---------------------------------------------------------------------------------------------
# Raster input, ground measures, GeoPackage output


def _open_class_raster(path: str | Path) -> rasterio.DatasetReader:
    """Open a single-band integer raster with a CRS, or raise InputError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        src = rasterio.open(path)
    except RasterioIOError as e:
        raise InputError(f"{path} is not a raster GDAL can read ({e})") from e
    problem = None
    if src.crs is None:
        problem = "has no coordinate reference system"
    elif src.count != 1:
        problem = f"has {src.count} bands; a class raster has one"
    elif src.dtypes[0] not in CLASS_DTYPES:
        problem = f"holds {src.dtypes[0]} values; class ids must be {', '.join(CLASS_DTYPES)}"
    if problem:
        src.close()
        raise InputError(f"{path} {problem}")
    return src


def _default_strip_rows(width: int) -> int:
    return max(MIN_STRIP_ROWS, min(MAX_STRIP_ROWS, STRIP_PIXELS // width))


def _namer(classes: list[ClassInfo] | None) -> Callable[[int], str]:
    """Class id → name, from `classes` or else the default names."""
    names = {c.id: c.name for c in classes or ()}

    def name(class_id: int) -> str:
        class_id = int(class_id)
        if class_id not in names:
            names[class_id] = default_classes(class_id + 1)[-1].name if class_id >= 0 else f"class {class_id}"
        return names[class_id]
    return name


class _Ground:
    """Map coordinates and geodesic measures on the grid of a raster."""

    def __init__(self, src: rasterio.DatasetReader) -> None:
        self.transform = src.transform
        crs = CRS.from_wkt(src.crs.to_wkt())
        geodetic = crs.geodetic_crs
        if geodetic is None:
            raise InputError(f"{src.name}: its CRS ({crs.name}) has no ellipsoid to measure ground areas on")
        self._to_lonlat = Transformer.from_crs(crs, geodetic, always_xy=True)
        self._geod = Geod(a=geodetic.ellipsoid.semi_major_metre, b=geodetic.ellipsoid.semi_minor_metre)
        self.pixel_size_map = math.sqrt(abs(self.transform.determinant))
        # A pixel near the centre: its ground area (min area → pixels) and the ratio of its ground
        # height to width (so that squared buildings have right angles on the ground).
        col, row = src.width // 2, src.height // 2
        pixel = self.to_map(np.array([shapely.box(col, row, col + 1, row + 1)], dtype=object))
        self.pixel_area_m2 = float(self.measure(pixel)[0][0])
        (x0, y0), (x1, y1), (x2, y2) = (self._to_lonlat.transform(*(self.transform * p))
                                        for p in ((col, row), (col + 1, row), (col, row + 1)))
        self.aspect = self._geod.inv(x0, y0, x2, y2)[2] / self._geod.inv(x0, y0, x1, y1)[2]

    def to_map(self, geoms: np.ndarray) -> np.ndarray:
        """Pixel-coordinate polygons in map coordinates, shells counter-clockwise."""
        t = self.transform
        return shapely.orient_polygons(shapely.transform(geoms, lambda p: np.column_stack(
            (t.a * p[:, 0] + t.b * p[:, 1] + t.c, t.d * p[:, 0] + t.e * p[:, 1] + t.f))))

    def measure(self, map_geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Geodesic area (m²) and perimeter (m, holes included) of map-coordinate polygons."""
        lonlat = shapely.orient_polygons(shapely.transform(
            map_geoms, lambda p: np.column_stack(self._to_lonlat.transform(p[:, 0], p[:, 1]))))
        area, perimeter = np.zeros(len(lonlat)), np.zeros(len(lonlat))
        for i, polygon in enumerate(lonlat):
            for ring in (polygon.exterior, *polygon.interiors):  # holes are clockwise: negative
                a, p = self._geod.polygon_area_perimeter(*ring.xy)
                area[i] += a
                perimeter[i] += p
        return np.abs(area), perimeter


class _LayerWriter:
    """Writes polygons to one GeoPackage layer in chunks of about FLUSH_FEATURES (each write
    reopens the file, which costs ~0.1 s): the first chunk replaces a layer of that name (other
    layers stay), later ones append. The layer is created even when empty."""

    FLUSH_FEATURES = 20_000

    def __init__(self, path: str | Path, layer: str, crs_wkt: str, fields: dict[str, object],
                 geometry_type: str = "Polygon", empty: gpd.GeoDataFrame | None = None,
                 flush_features: float | None = None) -> None:
        self.path, self.layer, self.crs, self.fields = str(path), layer, crs_wkt, fields
        self.geometry_type, self.empty = geometry_type, empty  # empty: the schema of an empty layer
        self.flush_features = flush_features or self.FLUSH_FEATURES
        self.buffered: list[gpd.GeoDataFrame] = []
        self.count = 0
        self.started = False

    def __enter__(self) -> "_LayerWriter":
        return self

    def write(self, geoms: np.ndarray, columns: dict[str, object]) -> None:
        if not len(geoms):
            return
        data = {k: np.asarray(columns[k], dtype=object if t is str else t) for k, t in self.fields.items()}
        self.write_frame(gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(geoms, crs=self.crs)))

    def write_frame(self, frame: gpd.GeoDataFrame) -> None:
        """Buffer ready-made features (write_frame's caller owns the schema; a column "fid" sets the
        GeoPackage fid, but only when the whole layer is written at once: flush_features=inf)."""
        if not len(frame):
            return
        self.buffered.append(frame)
        self.count += len(frame)
        if self.count >= self.flush_features:
            self._flush()

    def _flush(self) -> None:
        frame = pd.concat(self.buffered, ignore_index=True) if self.buffered else self.empty if \
            self.empty is not None else gpd.GeoDataFrame({k: [] for k in self.fields}, geometry=gpd.GeoSeries([], crs=self.crs))
        pyogrio.write_dataframe(frame, self.path, layer=self.layer, driver="GPKG", append=self.started,
                                geometry_type=self.geometry_type)
        self.buffered, self.count, self.started = [], 0, True

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None and (self.count or not self.started):
            self._flush()
