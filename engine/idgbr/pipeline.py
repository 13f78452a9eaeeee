"""The refine job: read → tile → refine → stitch → vectorize → write. This module only
orchestrates; each arrow lives in its own module."""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import rasterio
from rasterio.windows import Window

from .device import resolve_device
from .distributed import DEFAULT_BLOCK_SIZE, DistributedStats, check_block_size, parse_scheduler
from .errors import Cancelled, InputError
from .eta import RunClock
from .features import FeatureSummary
from .io.aoi import describe_bounds, parse_aoi, window_of
from .io.coarse import coarse_bounds, stage_coarse
from .io.grid import Grid, pixel_ground_area
from .io.image import ImageReader, open_raster
from .io.outputs import OutputFolder
from .io.result_rasters import NODATA, ResultRasters
from .logs import quiet_libraries
from .models import ClassInfo, ModelCard, default_classes, load_refiner, resolve_model_dir
from .models.defaults import AUTO, default_min_area, default_model, layer_kind
from .models.resample import ResampledRefiner, ground_gsd_m, scale_for
from .settings import check_settings
from .stitch import StripAccumulator, blend_window, class_layers
from .tile_predict import predict_batches
from .tiling import tile_rows
from .vectorize import Bands

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
OUTPUT_NAMES = ("refined.tif", "confidence.tif", "uncertainty.tif", "coarse.tif", "refined.gpkg", "preview.png")
# Disk space the outputs take per pixel of the area refined (the largest measured on the sample with
# `--model guided --min-area 0`, plus half; see docs/reliability.md): the free-space check refuses
# runs that cannot fit.
OUTPUT_BYTES_PER_PIXEL = {"refined.tif": 0.1, "coarse.tif": 0.1, "confidence.tif": 1.9, "uncertainty.tif": 1.9,
                          "refined.gpkg": 1.3}


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
    model: str = ""
    summary: list[str] = field(default_factory=list)  # what ran, with which settings, on which area
    features: FeatureSummary | None = None  # a polygon coarse layer: what happened to its features
    distributed: DistributedStats | None = None  # blocks, workers and their costs, when run on a Dask cluster


def refine(
    image: str | Path,
    coarse: str | Path | None = None,
    model: str | Path | None = AUTO,
    out_dir: str | Path = "idgbr_out",
    *,
    class_field: str | None = None,
    class_value: int = 1,
    aoi: str | Path | tuple[float, float, float, float] | None = None,
    aoi_crs: str | None = None,
    kind: str | None = None,
    bands: tuple[int, ...] | None = None,
    tile_size: int | None = None,
    overlap: float | None = None,
    batch_size: int = 4,
    device: str = "auto",
    seed: int | None = None,
    simplify: float = 1.0,
    simplify_units: str = "px",
    min_area_m2: float | None = None,
    regularize_classes: Sequence[int] | None = None,
    overwrite: bool = False,
    preview: bool = False,
    refiner_options: dict[str, Any] | None = None,
    coarse_model: str | Path | None = None,
    instances: bool = False,
    scheduler: str | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> RefineResult:
    """Refine the classification `coarse` over `image` with `model`; write the results to
    `out_dir` (see OUTPUT_NAMES) and return where they are and what they hold.

    coarse: integer raster, or polygon layer (`path` or `path|layername=NAME`) with an integer
    `class_field` (without one, every polygon is `class_value`). model: a name, folder or cached
    hub id; "auto" (or None) picks the installed default for the coarse layer's `kind` (guessed
    from its name when not given; see models/defaults.py). aoi: a polygon layer or a
    'minx,miny,maxx,maxy' box in the image CRS (or in `aoi_crs`); without one, the area where
    the coarse layer and the image overlap. simplify: tolerance in pixels (or map units with
    simplify_units='map'); min_area_m2: None takes the model card's minimum mapping unit;
    regularize_classes: classes whose outlines get right angles (default: the model card's
    building classes; () for none). coarse_model: the coarse segmentor run first when `coarse`
    is None (default: the one the model card names). scheduler: None or '' refines in this
    process; 'local:N' on a Dask LocalCluster of N worker processes; 'tcp://host:port' on an
    existing Dask cluster, in blocks of `block_size` pixels (see distributed.py). Every input is
    checked before torch or a model is loaded.
    A polygon `coarse` layer comes back feature by feature (layers `refined`, `removed`, `new`;
    see idgbr.features); instances=True does the same for a raster's connected regions.
    """
    report = progress or (lambda f, m: None)

    def check_cancel() -> None:
        if cancel is not None and cancel():
            raise Cancelled("refinement cancelled")

    t0 = time.perf_counter()
    distributed = None
    options = dict(refiner_options or {})
    if seed is not None:
        options["seed"] = seed
    check_settings(tile_size=tile_size, overlap=overlap, batch_size=batch_size, class_value=class_value,
                   simplify=simplify, min_area_m2=min_area_m2, seed=seed,
                   **{k: options.get(k) for k in ("steps", "guidance", "samples")})
    if coarse is not None and coarse_model is not None:
        raise InputError("give a coarse layer (--coarse) or a coarse model (--coarse-model), not both")
    card, chosen = _choose_model(model, coarse, coarse_model, kind)
    # Without a coarse layer, a coarse model (named by the card or the caller) makes one.
    coarse_model = coarse_model or (card.coarse_model if coarse is None else None)
    if coarse is None and coarse_model is None:
        raise InputError(f"no coarse layer given, and model {card.name!r} names no coarse model; pass the "
                         "classification to refine (--coarse) or a coarse model (--coarse-model)")
    overlap = card.overlap if overlap is None else float(overlap)
    with_uncertainty = int(options.get("samples") or 1) > 1
    cluster = parse_scheduler(scheduler)
    check_block_size(block_size)
    device_spec = device

    with open_raster(image) as ds:
        window, aoi_geom = parse_aoi(aoi, ds.crs, ds.transform, ds.width, ds.height, aoi_crs)
        window, cropped = _coarse_overlap(coarse, ds, window)
        grid = Grid.of_window(ds.crs, ds.transform, window)
        image_size = (ds.width, ds.height)
    scale, resampled = _model_scale(card, grid)
    tile_size = int(tile_size or round(card.tile_size / scale))
    rows = tile_rows(grid.height, grid.width, tile_size, overlap)
    reader = ImageReader.open(image, bands, window)
    estimate = int(grid.width * grid.height * sum(
        v for k, v in OUTPUT_BYTES_PER_PIXEL.items() if with_uncertainty or k != "uncertainty.tif"))
    summary = [f"model {card.name}: {chosen}"] + ([resampled] if resampled else [])
    if cropped:
        summary.append(f"area: {grid.width:,} × {grid.height:,} px where the coarse layer and the image overlap "
                       f"(the image is {image_size[0]:,} × {image_size[1]:,} px; --aoi sets another area)")

    try:
        # The cluster (when there is one) closes before the output folder is committed or removed.
        with OutputFolder(out_dir, OUTPUT_NAMES, overwrite, estimate_bytes=estimate) as out, \
                contextlib.ExitStack() as on_cluster:
            timings = {"load": time.perf_counter() - t0}
            clock = RunClock(report, grid.width * grid.height)
            t = time.perf_counter()
            clock.stage("coarse", 0.0, "reading the coarse layer onto the image grid")
            coarse_classes = None
            # The coarse layer is staged (and checked) before the refiner loads torch and weights.
            if coarse is None:
                from .coarse_stage import run_coarse_model

                device = resolve_device(device)
                stats, coarse_classes = run_coarse_model(
                    coarse_model, reader, window, grid, rows, tile_size, overlap, batch_size, device,
                    out.path("coarse.tif"), num_classes=card.num_classes, aoi=aoi_geom, cancel=check_cancel,
                    progress=lambda f, m: clock.stage("coarse", f, m))
            else:
                stats = stage_coarse(coarse, grid, out.path("coarse.tif"), class_field=class_field,
                                     class_value=class_value, num_classes=card.num_classes, aoi=aoi_geom,
                                     image_valid=lambda row, h: reader.valid_rows(window, row, h),
                                     cancel=check_cancel, instances_path=out.staging / "instances.tif")
            if instances and stats.features is None:
                stats.features = _regions_as_features(out, grid, card, aoi_geom, check_cancel)
            timings["coarse"] = time.perf_counter() - t
            t = time.perf_counter()
            device = resolve_device(device)
            with quiet_libraries():
                refiner = load_refiner(card.path or card.name, device=device, **options)
            if scale != 1.0:
                refiner = ResampledRefiner(refiner, scale)
            if with_uncertainty and not hasattr(refiner, "predict_with_uncertainty"):
                raise InputError(f"model {card.name!r} is deterministic: it cannot draw several samples")
            timings["load"] += time.perf_counter() - t
            classes = card.classes or coarse_classes
            num_classes = len(classes) if classes else max(stats.max_class + 1, 2)
            refiner.bind_classes(num_classes)
            classes = classes or default_classes(num_classes)
            if min_area_m2 is None:
                min_area_m2, mmu_source = default_min_area(card, classes, pixel_ground_area(grid))
            else:
                mmu_source = "given"
            summary[0] += "; " + _settings_text(refiner, tile_size, overlap, simplify, simplify_units,
                                                min_area_m2, mmu_source)
            for line in summary:
                log.info(line)

            t = time.perf_counter()
            uncertainty_path = out.path("uncertainty.tif") if with_uncertainty else None
            bands = None
            if cluster is None:
                done, skipped = _run_tiles(reader, window, grid, rows, tile_size, overlap, batch_size, refiner,
                                           classes, out.path("coarse.tif"), out.path("refined.tif"),
                                           out.path("confidence.tif"), uncertainty_path, clock, check_cancel)
            else:
                from .distributed import DaskBands, connect, make_job, run_blocks

                client = on_cluster.enter_context(connect(cluster))
                bands = DaskBands(client, block_size * block_size)
                job = make_job(image, reader, window, grid, tile_size, overlap, batch_size, card.path or card.name,
                               device_spec, options, scale, len(classes), with_uncertainty, out.path("coarse.tif"),
                               out.staging)
                done, skipped, distributed = run_blocks(client, time.perf_counter() - t, job, grid, rows, block_size,
                                                        classes, out.path("refined.tif"), out.path("confidence.tif"),
                                                        uncertainty_path, clock, check_cancel)
                summary.append(f"tiles refined on Dask ({scheduler}): {distributed.blocks} blocks of up to "
                               f"{block_size} px on {distributed.workers} workers")
            timings["refine"] = time.perf_counter() - t

            t = time.perf_counter()
            regularize = card.building_classes if regularize_classes is None else list(regularize_classes)
            areas, feature_summary = _vectorize(out, classes, card, simplify, simplify_units, min_area_m2,
                                                regularize, stats.features, clock, check_cancel, bands)
            timings["vectorize"] = time.perf_counter() - t
            if preview:
                from .preview import before_after

                before_after(reader, window, out.path("coarse.tif"), out.path("refined.tif"), classes,
                             out.path("preview.png"), math.ceil(min_area_m2 / pixel_ground_area(grid)))
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
                        card.name, summary, feature_summary, distributed)


def _model_scale(card: ModelCard, grid: Grid) -> tuple[float, str | None]:
    """(factor, what it means) for an image whose GSD lies outside the card's range: tiles are
    resized by `factor` for the model (`ResampledRefiner`) and cut so that the model sees its
    card's tile size; 1.0 and None inside the range."""
    gsd = ground_gsd_m(grid.crs, grid.transform, grid.width, grid.height)
    factor = scale_for(gsd, card.gsd_range_m)
    if factor == 1.0:
        return 1.0, None
    lo, hi = sorted(card.gsd_range_m)
    return factor, (f"image GSD {gsd:.3g} m is outside model {card.name!r}'s range {lo:g}-{hi:g} m: tiles "
                    f"resampled to {gsd / factor:.3g} m and the result back to the image grid")


def _choose_model(model: str | Path | None, coarse: str | Path | None, coarse_model: str | Path | None,
                  kind: str | None) -> tuple[ModelCard, str]:
    """The refiner's card (read without loading torch or weights) and why it runs."""
    if model is not None and str(model) != AUTO:
        card = ModelCard.load(resolve_model_dir(model))
        if card.is_coarse_segmentor:
            load_refiner(card.path)  # raises the message that says how to use a coarse segmentor
        return card, "chosen by the user"
    if kind is None:
        coarse_card = None if coarse_model is None else ModelCard.load(resolve_model_dir(coarse_model))
        kind = layer_kind(coarse, coarse_card)
    return default_model(kind)


def _coarse_overlap(coarse: str | Path | None, ds: rasterio.DatasetReader, window: Window) -> tuple[Window, bool]:
    """`window` cut to where the coarse layer has data (nothing is refined elsewhere: the outputs
    would be NoData there), and whether that made it smaller."""
    extent = coarse_bounds(coarse, ds.crs) if coarse is not None else None
    if extent is None:
        return window, False
    image_bounds = describe_bounds(ds.bounds, ds.crs)
    cw = window_of(extent, ds.transform, ds.width, ds.height)
    if cw is None:
        raise InputError(f"coarse layer {coarse} does not overlap the image: the layer covers "
                         f"{describe_bounds(extent, ds.crs)}, the image {image_bounds}")
    c0, r0 = max(window.col_off, cw.col_off), max(window.row_off, cw.row_off)
    c1 = min(window.col_off + window.width, cw.col_off + cw.width)
    r1 = min(window.row_off + window.height, cw.row_off + cw.height)
    if c1 <= c0 or r1 <= r0:
        raise InputError(f"coarse layer {coarse} does not overlap the AOI: the layer covers "
                         f"{describe_bounds(extent, ds.crs)}")
    cut = Window(int(c0), int(r0), int(c1 - c0), int(r1 - r0))
    return cut, (cut.width, cut.height) != (window.width, window.height)


def _settings_text(refiner: Any, tile_size: int, overlap: float, simplify: float, simplify_units: str,
                   min_area_m2: float, mmu_source: str) -> str:
    params = refiner.describe() if hasattr(refiner, "describe") else getattr(refiner, "params", {})
    shown = ", ".join(f"{k} {v}" for k, v in params.items() if k != "device")
    return (f"{shown + '; ' if shown else ''}tile {tile_size} px, overlap {overlap:g}, simplify {simplify:g} "
            f"{simplify_units}, min area {min_area_m2:.3g} m² ({mmu_source})")


def _run_tiles(reader: ImageReader, origin: Window, grid: Grid, rows, tile_size: int, overlap: float, batch_size: int,
               refiner, classes: list[ClassInfo], coarse_path: Path, refined_path: Path,
               confidence_path: Path, uncertainty_path: Path | None, clock: RunClock,
               check_cancel: Callable[[], None]) -> tuple[int, int]:
    """Predict every tile, blend them strip by strip, and write the class, confidence (and,
    with several samples per tile, uncertainty) rasters. `origin` is the window of the image
    raster that `grid` covers. Uncertainty is blended like one more probability channel."""
    num_classes = len(classes)
    window_w = blend_window(tile_size, int(round(tile_size * overlap)))
    acc = StripAccumulator(num_classes + (uncertainty_path is not None), grid.width, tile_size)
    total = sum(len(r) for r in rows)
    done = skipped = 0
    with contextlib.ExitStack() as files:
        coarse_ds = files.enter_context(rasterio.open(coarse_path))
        results = ResultRasters(files, grid, classes, refined_path, confidence_path, uncertainty_path)
        for r, row in enumerate(rows):
            for count, predictions in predict_batches(reader, origin, coarse_ds, row, tile_size, batch_size, refiner,
                                                      uncertainty_path is not None, window_w, check_cancel):
                for tile, probs, weight in predictions:
                    acc.add(probs, weight, tile.row, tile.col)
                skipped += count - len(predictions)
                done += count
                clock.stage("tiles", done / total, f"tile {done}/{total}")
            next_top = rows[r + 1][0].row if r + 1 < len(rows) else grid.height
            for first, probs, wsum in acc.release(next_top):
                labels, confidence, uncertainty = class_layers(probs, wsum, num_classes, NODATA)
                results.write(Window(0, first, grid.width, labels.shape[0]), labels, confidence, uncertainty)
                clock.count_edges(labels)
    return done - skipped, skipped


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
               min_area_m2: float, regularize: list[int], features, clock: RunClock,
               check_cancel: Callable[[], None], bands: Bands | None) -> tuple[dict[int, float], FeatureSummary | None]:
    """The `refined` layer (class polygons, or the input's features when there are some) and the
    `changes` layer; returns the areas per class and what happened to the features. With `bands`
    (a Dask cluster), the strips of both layers are polygonized there."""
    from .features import vectorize_features
    from .vectorize import vectorize, vectorize_changes

    sub = functools.partial(clock.sub, "vectorize")

    skip = () if card.background_class is None else (card.background_class,)
    summary = None
    if features is None:
        areas = vectorize(out.path("refined.tif"), out.path("refined.gpkg"), "refined", classes=classes,
                          skip_classes=skip, simplify=simplify, simplify_units=simplify_units,
                          min_area_m2=min_area_m2, regularize_classes=regularize,
                          progress=sub(0.0, 0.7), cancel=lambda: _cancelled(check_cancel), bands=bands)
    else:
        summary = vectorize_features(out.path("refined.tif"), out.staging / "instances.tif", features,
                                     out.path("refined.gpkg"), classes=classes, skip_classes=skip,
                                     simplify=simplify, simplify_units=simplify_units, min_area_m2=min_area_m2,
                                     regularize_classes=tuple(regularize), progress=sub(0.0, 0.7),
                                     cancel=lambda: _cancelled(check_cancel), bands=bands)
        areas = summary.class_areas_m2
        log.info("refined layer: %s; %d new polygons", ", ".join(f"{n} {s}" for s, n in summary.statuses.items()),
                 summary.new_polygons)
    vectorize_changes(out.path("refined.tif"), out.path("coarse.tif"), out.path("refined.gpkg"), "changes",
                      classes=classes, min_area_m2=min_area_m2, progress=sub(0.7, 1.0),
                      cancel=lambda: _cancelled(check_cancel), bands=bands)
    return areas, summary


def _cancelled(check_cancel: Callable[[], None]) -> bool:
    try:
        check_cancel()
    except Cancelled:
        return True
    return False
