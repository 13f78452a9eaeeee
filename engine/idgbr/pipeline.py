"""The refine job: read → tile → refine → stitch → vectorize → write. This module only
orchestrates; each arrow lives in its own module."""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import rasterio
from rasterio.windows import Window

from .device import resolve_device
from .errors import Cancelled, InputError
from .features import FeatureSummary
from .io.aoi import parse_aoi
from .io.coarse import stage_coarse
from .io.grid import Grid
from .io.image import ImageReader, open_raster
from .io.outputs import OutputFolder
from .models import NO_COARSE, ClassInfo, TileBatch, default_classes, load_refiner
from .stitch import StripAccumulator, blend_window
from .tiling import tile_rows

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
OUTPUT_NAMES = ("refined.tif", "confidence.tif", "uncertainty.tif", "coarse.tif", "refined.gpkg", "preview.png")
NODATA = 255
# Share of the progress bar per stage (staging the coarse layer, tiles, vectorizing).
STAGES = {"coarse": 0.05, "tiles": 0.80, "vectorize": 0.15}


@dataclass
class RefineResult:
    """What a run produced. Paths are final (the run succeeded)."""

    out_dir: Path
    refined: Path
    confidence: Path
    uncertainty: Path | None  # only when several samples were drawn per tile
    coarse: Path
    vectors: Path
    preview: Path | None
    classes: list[ClassInfo]
    class_areas_m2: dict[str, float]
    tiles: int
    tiles_skipped: int
    device: str
    timings_s: dict[str, float] = field(default_factory=dict)
    features: FeatureSummary | None = None  # a polygon coarse layer: what happened to its features


def refine(
    image: str | Path,
    coarse: str | Path | None = None,
    model: str | Path = "identity",
    out_dir: str | Path = "idgbr_out",
    *,
    class_field: str | None = None,
    class_value: int = 1,
    aoi: str | Path | tuple[float, float, float, float] | None = None,
    bands: tuple[int, ...] | None = None,
    tile_size: int | None = None,
    overlap: float | None = None,
    batch_size: int = 4,
    device: str = "auto",
    seed: int | None = None,
    simplify: float = 1.0,
    simplify_units: str = "px",
    min_area_m2: float = 0.0,
    regularize_classes: Sequence[int] | None = None,
    overwrite: bool = False,
    preview: bool = False,
    refiner_options: dict[str, Any] | None = None,
    coarse_model: str | Path | None = None,
    instances: bool = False,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> RefineResult:
    """Refine the classification `coarse` over `image` with `model`; write the results to
    `out_dir` (see OUTPUT_NAMES) and return where they are and what they hold.

    coarse: integer raster, or polygon layer (`path` or `path|layername=NAME`) with an integer
    `class_field` (without one, every polygon is `class_value`). aoi: a polygon layer or a
    'minx,miny,maxx,maxy' box in the image CRS. simplify: tolerance in pixels (or map units
    with simplify_units='map'); regularize_classes: classes whose outlines get right angles
    (default: the model card's building classes; () for none). coarse_model: the coarse
    segmentor run first when `coarse` is None (default: the one the model card names).
    A polygon `coarse` layer comes back feature by feature (layers `refined`, `removed`, `new`;
    see idgbr.features); instances=True does the same for a raster's connected regions.
    """
    timings: dict[str, float] = {}
    report = progress or (lambda f, m: None)

    def check_cancel() -> None:
        if cancel is not None and cancel():
            raise Cancelled("refinement cancelled")

    if coarse is not None and coarse_model is not None:
        raise InputError("give a coarse layer (--coarse) or a coarse model (--coarse-model), not both")
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    t0 = time.perf_counter()
    device = resolve_device(device)
    options = dict(refiner_options or {})
    if seed is not None:
        options["seed"] = seed
    refiner = load_refiner(model, device=device, **options)
    card = refiner.card
    # Without a coarse layer, a coarse model (named by the card or the caller) makes one.
    coarse_model = coarse_model or (card.coarse_model if coarse is None else None)
    if coarse is None and coarse_model is None:
        raise InputError(f"no coarse layer given, and model {card.name!r} names no coarse model; pass the "
                         "classification to refine (--coarse) or a coarse model (--coarse-model)")
    tile_size = int(tile_size or card.tile_size)
    overlap = card.overlap if overlap is None else float(overlap)
    with_uncertainty = int((refiner_options or {}).get("samples") or 1) > 1
    if with_uncertainty and not hasattr(refiner, "predict_with_uncertainty"):
        raise InputError(f"model {card.name!r} is deterministic: it cannot draw several samples")

    with open_raster(image) as ds:
        window, aoi_geom = parse_aoi(aoi, ds.crs, ds.transform, ds.width, ds.height)
        grid = Grid.of_window(ds.crs, ds.transform, window)
    rows = tile_rows(grid.height, grid.width, tile_size, overlap)
    reader = ImageReader.open(image, bands, window)
    timings["load"] = time.perf_counter() - t0

    try:
        with OutputFolder(out_dir, OUTPUT_NAMES, overwrite) as out:
            t = time.perf_counter()
            report(0.0, "reading the coarse layer onto the image grid")
            coarse_classes = None
            if coarse is None:
                from .coarse_stage import run_coarse_model

                stats, coarse_classes = run_coarse_model(
                    coarse_model, reader, window, grid, rows, tile_size, overlap, batch_size, device,
                    out.path("coarse.tif"), num_classes=card.num_classes, aoi=aoi_geom, cancel=check_cancel,
                    progress=lambda f, m: report(STAGES["coarse"] * f, m))
            else:
                stats = stage_coarse(coarse, grid, out.path("coarse.tif"), class_field=class_field,
                                     class_value=class_value, num_classes=card.num_classes, aoi=aoi_geom,
                                     cancel=check_cancel, instances_path=out.staging / "instances.tif")
            if instances and stats.features is None:
                stats.features = _regions_as_features(out, grid, card, aoi_geom, check_cancel)
            classes = card.classes or coarse_classes
            num_classes = len(classes) if classes else max(stats.max_class + 1, 2)
            refiner.bind_classes(num_classes)
            classes = classes or default_classes(num_classes)
            timings["coarse"] = time.perf_counter() - t

            t = time.perf_counter()
            done, skipped = _run_tiles(reader, window, grid, rows, tile_size, overlap, batch_size, refiner, classes,
                                       out.path("coarse.tif"), out.path("refined.tif"), out.path("confidence.tif"),
                                       out.path("uncertainty.tif") if with_uncertainty else None,
                                       report, check_cancel)
            timings["refine"] = time.perf_counter() - t

            t = time.perf_counter()
            regularize = card.building_classes if regularize_classes is None else list(regularize_classes)
            areas, feature_summary = _vectorize(out, classes, card, simplify, simplify_units, min_area_m2,
                                                regularize, stats.features, report, check_cancel)
            timings["vectorize"] = time.perf_counter() - t
            if preview:
                from .preview import before_after

                before_after(reader, window, out.path("coarse.tif"), out.path("refined.tif"), classes,
                             out.path("preview.png"))
            check_cancel()
    finally:
        reader.close()
    timings["total"] = time.perf_counter() - t0
    report(1.0, f"done in {timings['total']:.1f} s")
    final = out.final
    return RefineResult(out.out_dir, final("refined.tif"), final("confidence.tif"),
                        final("uncertainty.tif") if with_uncertainty else None, final("coarse.tif"),
                        final("refined.gpkg"), final("preview.png") if preview else None, classes,
                        {c.name: areas[c.id] for c in classes if c.id in areas}, done, skipped, device, timings,
                        feature_summary)


def _run_tiles(reader: ImageReader, origin: Window, grid: Grid, rows, tile_size: int, overlap: float, batch_size: int,
               refiner, classes: list[ClassInfo], coarse_path: Path, refined_path: Path,
               confidence_path: Path, uncertainty_path: Path | None, report: Progress,
               check_cancel: Callable[[], None]) -> tuple[int, int]:
    """Predict every tile, blend them strip by strip, and write the class, confidence (and,
    with several samples per tile, uncertainty) rasters. `origin` is the window of the image
    raster that `grid` covers. Uncertainty is blended like one more probability channel."""
    num_classes = len(classes)
    window_w = blend_window(tile_size, int(round(tile_size * overlap)))
    acc = StripAccumulator(num_classes + (uncertainty_path is not None), grid.width, tile_size)
    total = sum(len(r) for r in rows)
    done = skipped = 0
    started = time.perf_counter()
    profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=1, crs=grid.crs,
                   transform=grid.transform, tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    with contextlib.ExitStack() as files:
        coarse_ds = files.enter_context(rasterio.open(coarse_path))
        refined_ds = files.enter_context(rasterio.open(refined_path, "w", dtype="uint8", nodata=NODATA, **profile))
        float_profile = dict(dtype="float32", nodata=-1.0, predictor=3, **profile)
        conf_ds = files.enter_context(rasterio.open(confidence_path, "w", **float_profile))
        unc_ds = files.enter_context(rasterio.open(uncertainty_path, "w", **float_profile)) if uncertainty_path else None
        refined_ds.write_colormap(1, {c.id: c.rgba() for c in classes})
        refined_ds.update_tags(1, **{f"class_{c.id}": c.name for c in classes})

        def write(first: int, blended: np.ndarray, wsum: np.ndarray) -> None:
            valid = wsum > 0
            probs = blended[:num_classes]
            labels = np.where(valid, probs.argmax(axis=0), NODATA).astype(np.uint8)
            win = Window(0, first, grid.width, labels.shape[0])
            refined_ds.write(labels, 1, window=win)
            conf_ds.write(np.where(valid, probs.max(axis=0), -1.0).astype(np.float32), 1, window=win)
            if unc_ds is not None:
                unc_ds.write(np.where(valid, blended[num_classes], -1.0).astype(np.float32), 1, window=win)

        for r, row in enumerate(rows):
            for start in range(0, len(row), batch_size):
                check_cancel()
                tiles = row[start:start + batch_size]
                images, coarses, valids = [], [], []
                for tile in tiles:
                    img, valid = reader.read(Window(origin.col_off + tile.col, origin.row_off + tile.row,
                                                    tile_size, tile_size), tile_size)
                    c = _read_coarse(coarse_ds, tile.row, tile.col, tile_size)
                    images.append(img)
                    coarses.append(c)
                    valids.append(valid & (c != NO_COARSE))
                keep = [i for i, v in enumerate(valids) if v.any()]
                skipped += len(tiles) - len(keep)
                if keep:
                    batch = TileBatch(np.stack([images[i] for i in keep]), np.stack([coarses[i] for i in keep]),
                                      np.stack([valids[i] for i in keep]))
                    if unc_ds is None:
                        probs = refiner.predict(batch)
                    else:
                        probs, unc = refiner.predict_with_uncertainty(batch)
                        probs = np.concatenate([probs, unc[:, None]], axis=1)
                    for j, i in enumerate(keep):
                        tile = tiles[i]
                        h = min(tile_size, grid.height - tile.row)
                        w = min(tile_size, grid.width - tile.col)
                        weight = window_w[:h, :w] * valids[i][:h, :w]
                        acc.add(probs[j][:, :h, :w], weight, tile.row, tile.col)
                done += len(tiles)
                elapsed = time.perf_counter() - started
                eta = elapsed / done * (total - done)
                report(STAGES["coarse"] + STAGES["tiles"] * done / total, f"tile {done}/{total} · ETA {eta:.0f} s")
            next_top = rows[r + 1][0].row if r + 1 < len(rows) else grid.height
            for first, probs, wsum in acc.release(next_top):
                write(first, probs, wsum)
    return done - skipped, skipped


def _read_coarse(ds: rasterio.DatasetReader, row: int, col: int, size: int) -> np.ndarray:
    h, w = min(size, ds.height - row), min(size, ds.width - col)
    out = np.full((size, size), NO_COARSE, np.uint8)
    out[:h, :w] = ds.read(1, window=Window(col, row, w, h))
    return out


def _regions_as_features(out: OutputFolder, grid: Grid, card, aoi, check_cancel: Callable[[], None]):
    """The coarse raster's connected regions (background excluded) as polygon features, with the
    instance raster that numbers them: the raster's instance mode."""
    from .vectorize import vectorize

    regions = out.staging / "regions.gpkg"
    skip = () if card.background_class is None else (card.background_class,)
    vectorize(out.path("coarse.tif"), regions, "regions", skip_classes=skip, cancel=lambda: _cancelled(check_cancel))
    return stage_coarse(regions, grid, out.staging / "regions.tif", class_field="class_id", aoi=aoi,
                        cancel=check_cancel, instances_path=out.staging / "instances.tif").features


def _vectorize(out: OutputFolder, classes: list[ClassInfo], card, simplify: float, simplify_units: str,
               min_area_m2: float, regularize: list[int], features, report: Progress,
               check_cancel: Callable[[], None]) -> tuple[dict[int, float], FeatureSummary | None]:
    """The `refined` layer (class polygons, or the input's features when there are some) and the
    `changes` layer; returns the areas per class and what happened to the features."""
    from .features import vectorize_features
    from .vectorize import vectorize, vectorize_changes

    base = STAGES["coarse"] + STAGES["tiles"]

    def sub(lo: float, hi: float) -> Progress:
        return lambda f, m: report(base + STAGES["vectorize"] * (lo + (hi - lo) * f), m)

    skip = () if card.background_class is None else (card.background_class,)
    summary = None
    if features is None:
        areas = vectorize(out.path("refined.tif"), out.path("refined.gpkg"), "refined", classes=classes,
                          skip_classes=skip, simplify=simplify, simplify_units=simplify_units,
                          min_area_m2=min_area_m2, regularize_classes=regularize,
                          progress=sub(0.0, 0.7), cancel=lambda: _cancelled(check_cancel))
    else:
        summary = vectorize_features(out.path("refined.tif"), out.staging / "instances.tif", features,
                                     out.path("refined.gpkg"), classes=classes, skip_classes=skip,
                                     simplify=simplify, simplify_units=simplify_units, min_area_m2=min_area_m2,
                                     regularize_classes=tuple(regularize), progress=sub(0.0, 0.7),
                                     cancel=lambda: _cancelled(check_cancel))
        areas = summary.class_areas_m2
        log.info("refined layer: %s; %d new polygons", ", ".join(f"{n} {s}" for s, n in summary.statuses.items()),
                 summary.new_polygons)
    vectorize_changes(out.path("refined.tif"), out.path("coarse.tif"), out.path("refined.gpkg"), "changes",
                      classes=classes, min_area_m2=min_area_m2, progress=sub(0.7, 1.0),
                      cancel=lambda: _cancelled(check_cancel))
    return areas, summary


def _cancelled(check_cancel: Callable[[], None]) -> bool:
    try:
        check_cancel()
    except Cancelled:
        return True
    return False
