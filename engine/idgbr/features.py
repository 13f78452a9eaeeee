"""Refined polygons that keep the input layer's features: each feature of a polygon coarse layer
comes back with its fid, its attributes and a refined geometry, plus columns saying what happened.

    summary = vectorize_features("refined.tif", "instances.tif", stats.features, "refined.gpkg",
                                 classes=classes, skip_classes=(0,), simplify=1.0)

How, and why:

* `instances.tif` (written while the coarse layer is rasterized, idgbr.io.coarse) holds for each
  pixel the number of the feature that owns it; where features overlap, the smaller one does
  (the overlap is reported per feature in `overlap_m2`).
* A refined pixel of class c belongs to the feature that owned it when that feature is of class
  c. Refined pixels of class c that no class-c feature owned (the refiner moved a boundary) form
  regions; a region is shared among the class-c features it touches by growing them through it
  (breadth first, one pixel a step, ties broken by a fixed neighbour order) when that reaches
  every pixel of it within `reach_px` steps. A region cut off from every class-c feature, or
  with pixels out of reach (a building the layer lacked, even one adjoining another), is no
  feature's and goes whole to the layer `new` instead of being slipped into one.
* The resulting feature-number raster is polygonized with vectorize's strip machinery, so
  touching features share their boundary exactly (a coverage, simplified edge by edge) and
  memory does not grow with the raster's height: a feature is written as soon as the strips
  have passed its last possible row (its input's bottom row + `reach_px`).
* A strip's part (reading with its halo, owners, pixel counts, polygons that touch no strip
  line) depends on that strip alone, so with a Dask cluster workers do it in bands of strips
  (FeaturePolygons, vectorize.polygonize_band); the merge across strip lines, each feature's
  measures and the writing stay here, in order: the same layers as in-process.
* Buildings are squared part by part into background only, never into a neighbour.
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from pyproj import CRS
from scipy import ndimage
from rasterio.windows import Window

from .errors import InputError
from .io.coarse import PolygonFeatures, draw_ranks
from .models.card import ClassInfo
from .vectorize import (NONE, Bands, CancelCheck, Progress, StripPolygons, _Ground, _Job, _Layer, _LayerWriter,
                        _open_class_raster, _regularized, merged_strips)

log = logging.getLogger(__name__)

STATUSES = ("unchanged", "refined", "split", "merged", "removed")
REACH_PX = 16
BACKGROUND = NONE + 1  # pixels of skipped classes: never written, room for squared buildings
ADDED_COLUMNS = ("refine_status", "iou_to_input", "area_change_m2", "max_shift_m", "area_m2", "perimeter_m",
                 "overlap_m2")
NEW_FIELDS = {"class_id": "int32", "class_name": str, "area_m2": float, "perimeter_m": float}


@dataclass
class FeatureSummary:
    """What vectorize_features wrote: features per status, `new` polygons, areas per class."""

    statuses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    new_polygons: int = 0
    overlapping: int = 0  # input features that lost area to a smaller overlapping feature
    class_areas_m2: dict[int, float] = field(default_factory=dict)


def vectorize_features(refined_raster: str | Path, instances_raster: str | Path, features: PolygonFeatures,
                       out_path: str | Path, *, classes: list[ClassInfo] | None = None,
                       skip_classes: tuple[int, ...] = (), simplify: float = 0.0, simplify_units: str = "px",
                       min_area_m2: float = 0.0, regularize_classes: tuple[int, ...] = (),
                       reach_px: int = REACH_PX, progress: Progress | None = None,
                       cancel: CancelCheck | None = None, strip_rows: int | None = None,
                       bands: Bands | None = None) -> FeatureSummary:
    """Write layers `refined` (every input feature that kept pixels, in the input's CRS, with
    its fid and attributes and ADDED_COLUMNS), `removed` (features that lost all their pixels,
    input geometry) and `new` (refined regions of no feature) to the GeoPackage `out_path`.
    With `bands` (a Dask cluster: distributed.DaskBands), the strips are read, shared out among
    the features and polygonized there, as for vectorize: the same layers."""
    if simplify < 0 or min_area_m2 < 0 or reach_px < 0:
        raise InputError("simplify tolerance, minimum area and reach must not be negative")
    if simplify_units not in ("px", "map"):
        raise InputError(f"simplify units must be 'px' or 'map', got {simplify_units!r}")
    job = FeaturePolygons(str(refined_raster), tuple(classes) if classes is not None else None, min_area_m2,
                          str(instances_raster), np.concatenate([[-1], features.classes]).astype(np.int64),
                          frozenset(int(c) for c in skip_classes), frozenset(int(c) for c in regularize_classes),
                          simplify, simplify_units, reach_px)
    with contextlib.ExitStack() as files:
        here = job.open(files)
        writer = _FeatureWriter(features, here.ground, CRS.from_wkt(here.src.crs.to_wkt()),
                                _PixelCounts(len(features.frame)), min_area_m2, reach_px, here.name)
        new_layer = files.enter_context(_LayerWriter(out_path, "new", features.frame.crs.to_wkt(), NEW_FIELDS))
        files.enter_context(writer.open(out_path))
        for strip, merged in files.enter_context(contextlib.closing(
                merged_strips(here, job, strip_rows, bands, progress, cancel))):
            writer.counts.add_taken(strip.counts)
            # A feature is written once the strips have passed its last possible row.
            for geoms, columns in ((strip.final, strip.columns), merged):
                numbers = columns["number"]
                writer.add_parts(numbers[numbers > 0], geoms[numbers > 0])
                writer.write_new(new_layer, -1 - numbers[numbers < 0], geoms[numbers < 0])
                writer.flush(strip.r0)
        writer.flush(math.inf)
    writer.summary.overlapping = int((writer.overlap_m2 > 0).sum())
    if writer.summary.overlapping:
        log.warning("%d features of %s overlap a smaller feature, which keeps the shared area (column overlap_m2)",
                    writer.summary.overlapping, features.name)
    return writer.summary


@dataclass(frozen=True)
class FeaturePolygons(_Job):
    """The polygons of the features of a polygon coarse layer in `raster` (vectorize_features):
    plain values, sent to workers with each band."""

    instances: str  # instances.tif: the feature number owning each pixel of the input
    number_class: np.ndarray = field(compare=False)  # class id per feature number (0: none, -1)
    skip: frozenset[int]
    squared: frozenset[int]  # classes regularized
    simplify: float
    simplify_units: str
    reach_px: int

    def open(self, files: contextlib.ExitStack) -> _FeatureLayer:
        return _FeatureLayer(self, files.enter_context(_open_class_raster(self.raster)),
                             files.enter_context(rasterio.open(self.instances)))


@dataclass
class FeatureStrip(StripPolygons):
    """A strip of feature polygons (`columns`: the feature number, or -1 - class of a region of
    no feature) and what its rows added to the pixel counts (_PixelCounts.take)."""

    counts: tuple[np.ndarray, np.ndarray]


class _FeatureLayer(_Layer):
    """Feature numbers polygonized: each strip read with a halo of `reach_px` rows, its refined
    pixels shared out among the features (assign_owners), counted, polygonized and simplified;
    buildings squared into background only. Written by _FeatureWriter, not as a layer of its own."""

    def __init__(self, job: FeaturePolygons, src: rasterio.DatasetReader, numbers: rasterio.DatasetReader) -> None:
        super().__init__(job, src)
        if (src.shape, src.transform) != (numbers.shape, numbers.transform):
            raise InputError(f"{job.raster} and {job.instances} are not on the same grid")
        self.numbers, self.number_class, self.reach_px = numbers, job.number_class, job.reach_px
        self.skip = sorted(job.skip)
        self.tol_px = job.simplify if job.simplify_units == "px" else job.simplify / self.ground.pixel_size_map
        self.squared_classes = set(job.squared)
        self.squared = ({int(i) for i in np.flatnonzero(np.isin(job.number_class, list(job.squared))) if i > 0}
                        | {-1 - c for c in job.squared})
        self.hidden = {int(NONE), int(BACKGROUND)}
        self.counts = _PixelCounts(len(job.number_class) - 1)

    def read(self, r0: int, r1: int) -> np.ndarray:
        h0, h1 = max(0, r0 - self.reach_px), min(self.src.height, r1 + self.reach_px)
        window = Window(0, h0, self.src.width, h1 - h0)
        refined = self.src.read(1, window=window).astype(np.int64)
        valid = self.src.read_masks(1, window=window) > 0
        numbers = self.numbers.read(1, window=window).astype(np.int64)
        skipped = np.isin(refined, self.skip)
        owner = assign_owners(refined, valid & ~skipped, numbers, self.number_class, self.reach_px)
        core = slice(r0 - h0, r1 - h0)
        self.counts.add(numbers[core], owner[core], valid[core])
        out = np.where(owner > 0, owner, -1 - refined)
        out[skipped] = BACKGROUND
        out[~valid] = NONE
        return out[core].astype(np.int32)

    def features(self, values: np.ndarray, geoms: np.ndarray,
                 complete: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The complete polygons of features and of regions of no feature, in pixel coordinates."""
        keep = complete & ~np.isin(values, list(self.hidden))
        out = (_regularized(values, geoms, keep, self.squared, {int(BACKGROUND)}, self.ground.aspect)
               if self.squared_classes else geoms[keep])
        return out, {"number": values[keep]}

    def polygonize(self, r0: int, r1: int) -> FeatureStrip:
        strip = super().polygonize(r0, r1)
        return FeatureStrip(**vars(strip), counts=self.counts.take())


def assign_owners(refined: np.ndarray, free: np.ndarray, numbers: np.ndarray, number_class: np.ndarray,
                  reach_px: int) -> np.ndarray:
    """The feature each `free` refined pixel belongs to (0: none). A pixel keeps the feature that
    owned it if that feature's class is the pixel's refined class. The other free pixels form
    regions (4-connected, one class); a region is shared out among the features it touches by
    growing them through it, one pixel a step, when that reaches all of it within `reach_px`
    steps (a moved boundary); otherwise the whole region is no feature's (a building the layer
    lacked, even one that adjoins another). Regions are judged within this window of rows.
    Growing works on the changed pixels only, not on the whole window."""
    owner = np.where(free & (number_class[numbers] == refined), numbers, 0)
    unclaimed = free & (owner == 0)
    if not unclaimed.any():
        return owner
    height, width = owner.shape
    padded = np.zeros((height + 2, width + 2), np.int64)
    padded[1:-1, 1:-1] = owner
    flat = padded.ravel()
    rows, cols = np.nonzero(unclaimed)
    todo = (rows + 1) * (width + 2) + cols + 1
    wanted = refined[rows, cols]
    for _ in range(reach_px):
        best = np.zeros(todo.size, np.int64)
        for offset in (-(width + 2), -1, 1, width + 2):  # up, left, right, down: a fixed tie-break
            candidate = flat[todo + offset]
            take = (best == 0) & (candidate > 0) & (number_class[candidate] == wanted)
            best[take] = candidate[take]
        reached = best > 0
        if not reached.any():
            break
        flat[todo[reached]] = best[reached]
        todo, wanted = todo[~reached], wanted[~reached]
        if not todo.size:
            break
    owner = padded[1:-1, 1:-1]
    if todo.size:  # regions with pixels out of reach go whole
        regions = np.zeros(owner.shape, np.int64)
        count = 0
        for c in np.unique(refined[unclaimed]):
            labels, n = ndimage.label(unclaimed & (refined == c))
            regions[labels > 0] = labels[labels > 0] + count
            count += n
        far = np.unique(regions.ravel()[(todo // (width + 2) - 1) * width + todo % (width + 2) - 1])
        owner[np.isin(regions, far) & unclaimed] = 0
    return owner


class _PixelCounts:
    """Per feature number: input pixels (`own`, valid ones), of those still its own (`kept`),
    taken by another feature (`taken`), and pixels it gained from outside its input. Integer
    sums: the counts of strips add up in any order, here or from workers (take, add_taken)."""

    def __init__(self, count: int) -> None:
        self.size = count + 1
        self.totals = np.zeros((4, self.size), np.int64)
        self.own, self.kept, self.taken, self.gained = self.totals  # views: rows of totals

    def add(self, numbers: np.ndarray, owner: np.ndarray, valid: np.ndarray) -> None:
        mine = valid & (numbers > 0)
        same = owner == numbers
        for total, where, of in ((self.own, mine, numbers), (self.kept, mine & same, numbers),
                                 (self.taken, mine & ~same & (owner > 0), numbers),
                                 (self.gained, (owner > 0) & ~same, owner)):
            total += np.bincount(of[where], minlength=self.size)

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        """The counts added since the last take, and reset: (feature numbers with any, their
        4 × n counts); small, as a strip holds few of the features."""
        numbers = np.flatnonzero(self.totals.any(axis=0))
        counts = self.totals[:, numbers].copy()
        self.totals[:, numbers] = 0
        return numbers, counts

    def add_taken(self, taken: tuple[np.ndarray, np.ndarray]) -> None:
        numbers, counts = taken
        self.totals[:, numbers] += counts


class _FeatureWriter:
    """Collects the polygons of each feature and writes the feature once no strip to come can hold
    any of its pixels."""

    def __init__(self, features: PolygonFeatures, ground: _Ground, grid_crs: CRS, counts: _PixelCounts,
                 min_area_m2: float, reach_px: int, name: Callable[[int], str]) -> None:
        self.features, self.ground, self.grid_crs, self.counts = features, ground, grid_crs, counts
        self.min_area_m2, self.name = min_area_m2, name
        self.parts: dict[int, list[shapely.Geometry]] = {}
        self.summary = FeatureSummary()
        self.metres_per_unit = math.sqrt(ground.pixel_area_m2) / ground.pixel_size_map
        self.overlap_m2 = _overlap_lost(features.geoms) * self.metres_per_unit ** 2
        # Features in the order their last possible row is passed.
        last = _last_rows(features.geoms, ground.transform) + reach_px
        self.order = np.argsort(last, kind="stable")
        self.last = last[self.order]
        self.done = 0
        frame = features.frame.drop(columns=[c for c in ADDED_COLUMNS if c in features.frame.columns])
        fids = frame.index.to_numpy()
        # The fid goes back as the GeoPackage fid where it can be one (GeoPackage fids start at 1).
        self.fid_column = "fid" if frame.index.name == "fid" and np.issubdtype(fids.dtype, np.integer) \
            and (fids >= 1).all() else "input_fid"
        self.frame = frame.reset_index(names=self.fid_column) if self.fid_column not in frame.columns \
            else frame.reset_index(drop=True)

    def open(self, out_path: str | Path) -> "_FeatureWriter":
        crs = self.features.frame.crs.to_wkt()
        empty = self._frame(np.zeros(0, np.int64), np.zeros(0, object), {c: [] for c in ADDED_COLUMNS})
        # One write per layer: pyogrio sets GeoPackage fids from a "fid" column only when it
        # creates the layer, not when it appends. The features wait in memory (as the input does).
        self.refined = _LayerWriter(out_path, "refined", crs, {}, "MultiPolygon", empty, math.inf)
        self.removed = _LayerWriter(out_path, "removed", crs, {}, "MultiPolygon", empty, math.inf)
        return self

    def __enter__(self) -> "_FeatureWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.refined.__exit__(*exc)
        self.removed.__exit__(*exc)

    def add_parts(self, numbers: np.ndarray, geoms: np.ndarray) -> None:
        for number, geom in zip(numbers.tolist(), geoms):
            self.parts.setdefault(number, []).append(geom)

    def write_new(self, layer: _LayerWriter, class_ids: np.ndarray, geoms: np.ndarray) -> None:
        """Refined regions of no feature, at least `min_area_m2`, to the layer `new`."""
        map_geoms = self.ground.to_map(geoms)
        area, perimeter = self.ground.measure(map_geoms)
        big = area >= self.min_area_m2
        ids = class_ids[big].astype(np.int32)
        out = gpd.GeoSeries(map_geoms[big], crs=self.grid_crs).to_crs(self.features.frame.crs).values \
            if big.any() else map_geoms[big]
        layer.write(out, {"class_id": ids, "class_name": [self.name(v) for v in ids], "area_m2": area[big],
                          "perimeter_m": perimeter[big]})
        self.summary.new_polygons += int(big.sum())
        for v, a in zip(ids.tolist(), area[big].tolist()):
            self.summary.class_areas_m2[v] = self.summary.class_areas_m2.get(v, 0.0) + a

    def flush(self, front: float) -> None:
        """Write every feature whose last possible row lies above `front`."""
        end = self.done + int(np.searchsorted(self.last[self.done:], front, side="left"))
        if end == self.done:
            return
        numbers = self.order[self.done:end] + 1
        self.done = end
        geoms = np.empty(len(numbers), object)
        geoms[:] = [self._merge_parts(self.parts.pop(int(n), [])) for n in numbers]
        self._write(numbers, geoms)

    def _merge_parts(self, parts: list[shapely.Geometry]) -> shapely.Geometry | None:
        """A feature's polygons as one (multi)polygon, pixel coordinates; parts smaller than the
        minimum area go, but never the largest."""
        if not parts:
            return None
        polygons = shapely.get_parts(np.asarray(parts, dtype=object))
        area = shapely.area(polygons) * self.ground.pixel_area_m2
        polygons = polygons[(area >= self.min_area_m2) | (area == area.max())]
        return shapely.multipolygons(polygons)

    def _write(self, numbers: np.ndarray, pixel_geoms: np.ndarray) -> None:
        inputs = self.features.geoms[numbers - 1]
        have = np.array([g is not None for g in pixel_geoms])
        c = self.counts
        unseen = c.own[numbers] == 0  # outside the refined area: kept as they are
        status = np.where(shapely.get_num_geometries(np.where(have, pixel_geoms, None)) > 1, "split",
                          np.where((c.kept[numbers] == c.own[numbers]) & (c.gained[numbers] == 0), "unchanged",
                                   "refined")).astype(object)
        status[~have] = np.where(2 * c.taken[numbers[~have]] > c.own[numbers[~have]], "merged", "removed")
        status[unseen & ~have] = "unchanged"
        grid_geoms = np.where(have, None, inputs)
        grid_geoms[have] = self.ground.to_map(pixel_geoms[have])
        gone = ~have & ~unseen
        grid_geoms[gone] = inputs[gone]
        input_area, _ = _measure(self.ground, inputs)
        area, perimeter = _measure(self.ground, grid_geoms)
        iou = np.ones(len(numbers))
        iou[have] = shapely.area(shapely.intersection(inputs[have], grid_geoms[have])) / \
            shapely.area(shapely.union(inputs[have], grid_geoms[have]))
        iou[gone] = 0.0
        shift = np.zeros(len(numbers))
        with np.errstate(invalid="ignore"):  # GEOS trips the FPU's invalid flag on some inputs, result sound
            shift[have] = shapely.hausdorff_distance(inputs[have], grid_geoms[have]) * self.metres_per_unit
        shift[gone] = np.nan
        area[gone] = perimeter[gone] = 0.0
        added = {"refine_status": status, "iou_to_input": iou, "area_change_m2": area - input_area,
                 "max_shift_m": shift, "area_m2": area, "perimeter_m": perimeter,
                 "overlap_m2": self.overlap_m2[numbers - 1]}
        out = self._frame(numbers, grid_geoms, added)
        self.refined.write_frame(out[~gone])
        self.removed.write_frame(out[gone])
        for s in STATUSES:
            self.summary.statuses[s] += int((status == s).sum())
        for v, a in zip(self.features.classes[numbers - 1].tolist(), area.tolist()):
            self.summary.class_areas_m2[v] = self.summary.class_areas_m2.get(v, 0.0) + a

    def _frame(self, numbers: np.ndarray, grid_geoms: np.ndarray, added: dict) -> gpd.GeoDataFrame:
        """Input rows `numbers` (fid, attributes) with geometries in the input's CRS and `added`."""
        crs = self.features.frame.crs
        geoms = np.asarray(gpd.GeoSeries(list(grid_geoms), crs=self.grid_crs).to_crs(crs).values, dtype=object) \
            if len(grid_geoms) and not crs.equals(self.grid_crs) else grid_geoms
        rows = self.frame.iloc[numbers - 1]
        data = rows.drop(columns=[rows.geometry.name]).reset_index(drop=True)
        for key, values in added.items():
            data[key] = np.asarray(values, dtype=object if key == "refine_status" else float)
        return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(_multipolygons(geoms), crs=crs), crs=crs)


def _multipolygons(geoms: np.ndarray) -> np.ndarray:
    """Each geometry's polygons as one MultiPolygon (lines and points that make_valid may leave go)."""
    parts, index = shapely.get_parts(geoms, return_index=True)
    polygons = shapely.get_type_id(parts) == shapely.GeometryType.POLYGON
    return shapely.multipolygons(parts[polygons], indices=index[polygons], out=np.empty(len(geoms), object))


def _measure(ground: _Ground, geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Geodesic area and perimeter of (multi)polygons or collections, summed over their polygons."""
    parts, index = shapely.get_parts(geoms, return_index=True)
    polygons = shapely.get_type_id(parts) == shapely.GeometryType.POLYGON
    area, perimeter = ground.measure(parts[polygons])
    return (np.bincount(index[polygons], area, minlength=len(geoms)),
            np.bincount(index[polygons], perimeter, minlength=len(geoms)))


def _overlap_lost(geoms: np.ndarray) -> np.ndarray:
    """Per feature, the area (map units²) a smaller overlapping feature took from it."""
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    ranks = draw_ranks(geoms)
    later = ranks[right] > ranks[left]  # right is drawn over left
    left, right = left[later], right[later]
    lost = shapely.area(shapely.intersection(geoms[left], geoms[right]))
    return np.bincount(left, lost, minlength=len(geoms))


def _last_rows(geoms: np.ndarray, transform) -> np.ndarray:
    """The last raster row each geometry can reach (from its bounding box's corners)."""
    minx, miny, maxx, maxy = shapely.bounds(geoms).T
    inverse = ~transform
    rows = [inverse.d * x + inverse.e * y + inverse.f for x, y in ((minx, miny), (minx, maxy), (maxx, miny),
                                                                    (maxx, maxy))]
    return np.ceil(np.max(rows, axis=0)).astype(np.int64) + 1
