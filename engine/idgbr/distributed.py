"""Refine on a Dask cluster: the tile stage of a run, split into blocks of the output window.

    idgbr refine ortho.tif --coarse b.gpkg --out out --scheduler local:4 --block-size 4096
    idgbr refine ortho.tif --coarse b.gpkg --out out --scheduler tcp://host:8786

Why it is built this way:

* The tile grid is the global one of the in-process run. A block computes every tile that
  touches its pixels (tiles near a block's edge are computed by each block they touch) and adds
  them in the grid's row-of-tiles order, so every pixel gets the same additions in the same order
  as in the in-process strip blender: the outputs are bit-identical for a refiner whose tiles do
  not depend on which other tiles share their batch.
* Workers load the refiner once per process (a cached loader keyed by the model and its
  settings) and write their block's classes, confidence and uncertainty as part files into the
  run's staging folder (written under a temporary name, renamed when complete). The coordinator
  copies each part into the tiled, compressed outputs as soon as its block is done and deletes
  it; outputs are GeoTIFF-tile aligned (block sizes are multiples of 256), so no output tile is
  written twice.
* Cancel cancels the futures and the staging folder goes; a worker still inside a block sees
  its parts folder gone before its next batch and stops (a remote cluster keeps running tasks
  that were already started). A worker lost mid-block is replaced and its blocks recomputed by
  Dask; a part is only read once its future has succeeded.
* The same client then polygonizes the class (or feature) and change layers in bands of strips
  (DaskBands, vectorize.polygonize_band); the coordinator merges the polygons that cross strip
  lines in order and writes the layers, which are the in-process ones.
* dask.distributed is imported only here, and only when a scheduler is given.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from .errors import Cancelled, InputError
from .eta import RunClock
from .io.grid import Grid
from .io.image import ImageReader, open_raster
from .io.result_rasters import BLOCK_PX, NODATA, ResultRasters
from .logs import quiet_libraries
from .models.card import ClassInfo
from .stitch import WindowAccumulator, blend_window, class_layers
from .tile_predict import predict_batches
from .tiling import Tile, tile_rows

if TYPE_CHECKING:  # vectorize loads geopandas: not for every run
    from .vectorize import StripPolygons, _Job

log = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 4096
MAX_LOCAL_WORKERS = 256
CONNECT_TIMEOUT_S = 30
WORKERS_TIMEOUT_S = 120  # an existing cluster must have a worker within this time
POLL_S = 0.2  # how often the coordinator looks at its futures and the cancel button
ADDRESS = re.compile(r"(tcp|tls|ucx)://\S+")
LOCAL = re.compile(r"local:(\d+)")
LAYERS = ("refined", "confidence", "uncertainty")


def parse_scheduler(spec: str | None) -> int | str | None:
    """'' or None → None (in-process); 'local:N' → N (local worker processes); a scheduler
    address → itself. Anything else is an InputError (checked before any work starts)."""
    spec = (spec or "").strip()
    if not spec:
        return None
    local = LOCAL.fullmatch(spec)
    if local:
        n = int(local[1])
        if not 1 <= n <= MAX_LOCAL_WORKERS:
            raise InputError(f"--scheduler local:N needs 1 to {MAX_LOCAL_WORKERS} worker processes, got {n}")
        return n
    if ADDRESS.fullmatch(spec):
        return spec
    raise InputError(f"--scheduler must be empty (in-process), local:N (N worker processes on this machine) or "
                     f"a Dask scheduler address such as tcp://host:8786, got {spec!r}")


def check_block_size(block_size: int) -> None:
    """Blocks align with the outputs' 256-pixel GeoTIFF tiles, so each output tile is written once."""
    if block_size < BLOCK_PX or block_size % BLOCK_PX:
        raise InputError(f"--block-size must be a positive multiple of {BLOCK_PX} pixels, got {block_size}")


@dataclass(frozen=True)
class BlockJob:
    """What every block of a run needs; sent to the workers (plain values only)."""

    image: str
    bands: tuple[int, ...]
    lo: tuple[float, ...]  # the image scaling of the whole area, computed once by the coordinator
    hi: tuple[float, ...]
    origin: tuple[int, int, int, int]  # window of the image (col, row, width, height) the grid covers
    crs: str  # the grid's, as WKT, and its transform: part files are georeferenced
    transform: tuple[float, ...]
    tile_size: int
    overlap: float
    batch_size: int
    model: str
    device: str  # as the user gave it: 'auto' lets each worker pick its own GPU
    options: tuple[tuple[str, Any], ...]
    scale: float  # ResampledRefiner factor (1: none)
    num_classes: int
    with_uncertainty: bool
    coarse: str  # the staged coarse raster, on the grid
    parts: str  # folder of the part files, inside the run's staging folder


@dataclass
class BlockDone:
    """A finished block: where it lies, its part files and what it cost."""

    row: int
    col: int
    height: int
    width: int
    parts: dict[str, str]
    tiles: list[tuple[int, int]]  # tiles with data that the block computed
    empty: list[tuple[int, int]]  # tiles without data (skipped)
    seconds: float  # compute time in the worker, model loading excluded
    load_seconds: float
    worker: str  # host:pid of the worker process
    worker_peak_rss_mb: float


@dataclass
class DistributedStats:
    """What the benchmark reports: blocks, workers, compute vs wall time, memory per worker."""

    workers: int
    blocks: int
    tile_computations: int  # tiles computed, counting each block's own copy of a shared tile
    wall_s: float  # from the cluster being ready to the last block assembled
    compute_s: float  # summed over blocks
    load_s: float  # model loading, summed over workers
    startup_s: float = 0.0  # starting (local:N) or connecting to the cluster
    assemble_s: float = 0.0  # the coordinator copying parts into the outputs
    peak_rss_mb: dict[str, float] = field(default_factory=dict)  # per worker process (host:pid)

    @property
    def overhead_per_block_s(self) -> float:
        """Worker time not spent computing blocks or loading the model (scheduling, transfers,
        assembly waits, idle workers at the end), per block."""
        return max(0.0, self.wall_s * self.workers - self.compute_s - self.load_s) / max(self.blocks, 1)


def make_job(image: str | Path, reader: ImageReader, origin: Window, grid: Grid, tile_size: int, overlap: float,
             batch_size: int, model: str | Path, device: str, options: dict[str, Any], scale: float,
             num_classes: int, with_uncertainty: bool, coarse: Path, staging: Path) -> BlockJob:
    """The job of a run; paths absolute, since workers may run elsewhere (they must see them)."""
    image = str(image) if str(image).startswith(("/vsi", "http")) else os.path.abspath(image)
    return BlockJob(image, tuple(reader.bands), tuple(map(float, reader.lo)), tuple(map(float, reader.hi)),
                    (int(origin.col_off), int(origin.row_off), int(origin.width), int(origin.height)),
                    grid.crs.to_wkt(), tuple(grid.transform)[:6], tile_size,
                    overlap, batch_size, str(model), device, tuple(sorted(options.items())), scale, num_classes,
                    with_uncertainty, str(coarse), str(staging / "parts"))


def blocks_of(height: int, width: int, block_size: int) -> list[tuple[int, int, int, int]]:
    """(row, col, height, width) of the blocks covering a height × width window, row by row."""
    return [(r, c, min(block_size, height - r), min(block_size, width - c))
            for r in range(0, height, block_size) for c in range(0, width, block_size)]


def tiles_touching(rows: list[list[Tile]], tile_size: int, block: tuple[int, int, int, int]) -> list[Tile]:
    """The tiles that add to a block's pixels, in the grid's row-of-tiles order."""
    r, c, h, w = block
    return [t for row in rows for t in row
            if t.row < r + h and t.row + tile_size > r and t.col < c + w and t.col + tile_size > c]


# ---------------------------------------------------------------------------------------------
# Worker side

_refiners: dict[tuple, tuple[Any, float]] = {}
_refiners_lock = threading.Lock()


def _refiner(job: BlockJob) -> tuple[Any, float]:
    """The job's refiner, loaded once per worker process; (refiner, seconds its loading took the
    first time, 0 afterwards)."""
    key = (job.model, job.device, job.options, job.scale, job.num_classes)
    with _refiners_lock:
        if key in _refiners:
            return _refiners[key][0], 0.0
        from .device import resolve_device
        from .models import load_refiner
        from .models.resample import ResampledRefiner

        t = time.perf_counter()
        with quiet_libraries():
            refiner = load_refiner(job.model, device=resolve_device(job.device), **dict(job.options))
        if job.scale != 1.0:
            refiner = ResampledRefiner(refiner, job.scale)
        refiner.bind_classes(job.num_classes)
        _refiners[key] = (refiner, time.perf_counter() - t)
        return refiner, _refiners[key][1]


def refine_block(job: BlockJob, block: tuple[int, int, int, int]) -> BlockDone:
    """Compute one block on a worker and write its part files; see the module docstring."""
    refiner, load_s = _refiner(job)
    t = time.perf_counter()
    parts = Path(job.parts)

    def check_cancel() -> None:
        if not parts.is_dir():  # the run was cancelled or failed: its staging folder is gone
            raise Cancelled("the run this block belongs to has ended")

    row, col, height, width = block
    col_off, row_off, grid_w, grid_h = job.origin
    rows = tile_rows(grid_h, grid_w, job.tile_size, job.overlap)
    tiles = tiles_touching(rows, job.tile_size, block)
    channels = job.num_classes + job.with_uncertainty
    acc = WindowAccumulator(channels, row, col, height, width)
    blend = blend_window(job.tile_size, int(round(job.tile_size * job.overlap)))
    ds = open_raster(job.image)
    reader = ImageReader(ds, job.bands, np.asarray(job.lo, np.float32), np.asarray(job.hi, np.float32))
    computed: list[tuple[int, int]] = []
    with contextlib.closing(reader), rasterio.open(job.coarse) as coarse_ds:
        for _, predictions in predict_batches(reader, Window(col_off, row_off, grid_w, grid_h), coarse_ds, tiles,
                                              job.tile_size, job.batch_size, refiner, job.with_uncertainty, blend,
                                              check_cancel):
            for tile, probs, weight in predictions:
                acc.add(probs, weight, tile.row, tile.col)
                computed.append((tile.row, tile.col))
    check_cancel()
    layers = dict(zip(LAYERS, class_layers(*acc.result(), job.num_classes, NODATA)))
    transform = Affine(*job.transform) * Affine.translation(col, row)
    written = {name: _write_part(parts / f"{row}_{col}.{name}.tif", data, job.crs, transform)
               for name, data in layers.items() if data is not None}
    empty = sorted({(t.row, t.col) for t in tiles} - set(computed))
    return BlockDone(row, col, height, width, written, computed, empty, time.perf_counter() - t, load_s,
                     f"{socket.gethostname()}:{os.getpid()}", _peak_rss_mb())


def _write_part(path: Path, data: np.ndarray, crs: str, transform: Affine) -> str:
    """Write a part under a temporary name and rename it: a worker killed while writing leaves
    no part that looks complete (its temporary file goes with the staging folder)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    with rasterio.open(tmp, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs=crs, transform=transform) as dst:
        dst.write(data, 1)
    os.replace(tmp, path)
    return str(path)


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


# ---------------------------------------------------------------------------------------------
# Coordinator side


@contextlib.contextmanager
def connect(scheduler: int | str) -> Iterator[Any]:
    """A dask.distributed Client: on a LocalCluster of `scheduler` worker processes (closed on
    exit), or on the existing cluster at address `scheduler`."""
    from distributed import Client, LocalCluster

    if isinstance(scheduler, int):
        _python_for_workers()
        # One thread per worker: the refiner uses the process's cores (torch threads).
        with LocalCluster(n_workers=scheduler, threads_per_worker=1, processes=True, dashboard_address=":0",
                          silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as e:
        raise InputError(f"cannot reach the Dask scheduler at {scheduler} ({e}); start one with `dask scheduler` "
                         "and workers with `dask worker ADDRESS` (README, 'Large mosaics')") from e
    with client:
        try:
            client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
        except TimeoutError as e:
            raise InputError(f"the Dask scheduler at {scheduler} has no workers; start some with "
                             f"`dask worker {scheduler}`") from e
        yield client


def _python_for_workers() -> None:
    """Inside QGIS, sys.executable is QGIS itself, or whatever `python3` comes first in PATH: local
    worker processes are started with the interpreter that belongs to the standard library this
    process loaded. They get the parent's sys.path but not its import hooks, and an editable
    install (`make install`) finds the engine through a hook: its folder goes on sys.path."""
    import multiprocessing

    engine = str(Path(__file__).resolve().parents[1])
    if engine not in sys.path:
        sys.path.append(engine)

    prefix = Path(os.__file__).resolve().parents[2]
    executable = Path(sys.executable).resolve()
    if not executable.name.startswith("python") or executable.parent.parent != prefix:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        multiprocessing.set_executable(str(prefix / "bin" / f"python{version}"))


def run_blocks(client: Any, startup_s: float, job: BlockJob, grid: Grid, rows: list[list[Tile]], block_size: int,
               classes: list[ClassInfo], refined: Path, confidence: Path, uncertainty: Path | None,
               clock: RunClock, check_cancel: Callable[[], None]) -> tuple[int, int, DistributedStats]:
    """Refine every block on the cluster of `client` (started or reached in `startup_s`) and
    assemble the outputs as blocks complete. Returns (tiles with data, tiles skipped, stats); the
    counts are those of the in-process run."""
    blocks = blocks_of(grid.height, grid.width, block_size)
    Path(job.parts).mkdir()
    with contextlib.ExitStack() as files:
        t0 = time.perf_counter()
        workers = len(client.scheduler_info()["workers"])
        results = ResultRasters(files, grid, classes, refined, confidence, uncertainty)
        run = uuid.uuid4().hex[:12]
        pending = {client.submit(refine_block, job, b, key=f"idgbr-block-{run}-{b[0]}-{b[1]}", pure=False)
                   for b in blocks}
        stats = DistributedStats(workers, len(blocks), 0, 0.0, 0.0, 0.0, startup_s)
        tiles: set[tuple[int, int]] = set()
        empty: set[tuple[int, int]] = set()
        clock.stage("tiles", 0.0, f"{len(blocks)} blocks on {workers} Dask workers")
        try:
            while pending:
                check_cancel()
                finished = [f for f in pending if f.done()]
                if not finished:
                    time.sleep(POLL_S)
                    continue
                for future in finished:
                    pending.discard(future)
                    done = future.result()  # a worker's error is raised here, as in-process
                    # Released, so that Dask does not recompute a block already assembled when the
                    # worker holding its (small) result is lost.
                    future.release()
                    t = time.perf_counter()
                    clock.count_edges(_assemble(results, done))
                    stats.assemble_s += time.perf_counter() - t
                    for part in done.parts.values():
                        os.unlink(part)
                    tiles.update(done.tiles)
                    empty.update(done.empty)
                    stats.tile_computations += len(done.tiles) + len(done.empty)
                    stats.compute_s += done.seconds
                    stats.load_s += done.load_seconds
                    stats.peak_rss_mb[done.worker] = max(stats.peak_rss_mb.get(done.worker, 0.0),
                                                         done.worker_peak_rss_mb)
                    n = len(blocks) - len(pending)
                    clock.stage("tiles", n / len(blocks), f"block {n}/{len(blocks)}")
        finally:
            if pending:
                client.cancel(list(pending))
        stats.wall_s = time.perf_counter() - t0
    shutil.rmtree(job.parts)  # empty, unless a lost worker's block was recomputed after its assembly
    return len(tiles), len(empty), stats


@dataclass
class DaskBands:
    """Polygonizes the bands of strips of a layer on the cluster (vectorize.Bands: class and change
    polygons, a polygon coarse layer's features): a band holds about a block's pixels
    (`block_size`²), whole strips of the in-process strip layout."""

    client: Any
    pixels: int

    def map(self, fn: Callable[[_Job, list[tuple[int, int]]], list[StripPolygons]], job: _Job,
            bands: list[list[tuple[int, int]]],
            cancel: Callable[[], bool] | None) -> Generator[list[StripPolygons], None, None]:
        """Submit every band at once and yield the results in band order (the seam merge is
        sequential); results are released as they are taken. Closing it cancels what is left."""
        run = uuid.uuid4().hex[:12]
        futures = [self.client.submit(fn, job, band, key=f"idgbr-vectorize-{run}-{i}", pure=False)
                   for i, band in enumerate(bands)]
        try:
            for future in futures:
                while not future.done():
                    if cancel is not None and cancel():
                        raise Cancelled("vectorizing cancelled")
                    time.sleep(POLL_S)
                result = future.result()  # a worker's error is raised here, as in-process
                future.release()
                yield result
        finally:
            self.client.cancel([f for f in futures if not f.done()])


def _read(path: str) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _assemble(results: ResultRasters, done: BlockDone) -> np.ndarray:
    """Write a finished block's parts into the outputs; returns its classes."""
    window = Window(done.col, done.row, done.width, done.height)
    unc = done.parts.get("uncertainty")
    labels = _read(done.parts["refined"])
    results.write(window, labels, _read(done.parts["confidence"]), _read(unc) if unc else None)
    return labels
