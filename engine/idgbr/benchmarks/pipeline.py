"""`idgbr benchmark pipeline`: wall time and peak memory of the whole refine job on generated
rasters of growing size. Time should grow linearly with area; peak memory should stay flat,
because the pipeline streams (strips of tiles, strip-wise vectorization).

Each size runs in a fresh process, so its peak RSS is its own.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from ..cli import GDAL_CACHE_MB

CELL = 48  # one generated "building" per CELL×CELL pixels
# Peak RSS is read from VmHWM, the high-water mark of this process's own memory: getrusage's
# ru_maxrss would also count the parent's peak (the scene generation) through fork + exec.
CHILD = """
import json, sys, idgbr
image, coarse, out, model = sys.argv[1:5]
r = idgbr.refine(image, coarse, model, out, overwrite=True)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"timings": r.timings_s, "tiles": r.tiles, "peak_rss_mb": hwm / 1024,
                  "features": r.features and {**r.features.statuses, "new": r.features.new_polygons}}))
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="time and peak memory of `refine` on generated rasters")
    p.add_argument("--sizes", default="2048,4096,8192,16384", help="raster sides in pixels")
    p.add_argument("--model", default="identity", help="refiner to time (identity: the pipeline alone)")
    p.add_argument("--workdir", help="folder for the temporary rasters, made if missing (default: the "
                                     "system's temporary folder)")
    p.add_argument("--json", help="also write the rows as JSON here")
    p.set_defaults(func=run)


def scene_layout(size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Per CELL×CELL cell: a building's centre (cx, cy), half sizes (hw, hh) and whether it is there."""
    cells = -(-size // CELL)
    cx, cy = rng.integers(8, CELL - 8, (2, cells, cells))
    hw, hh = rng.integers(4, 16, (2, cells, cells))
    return cx, cy, hw, hh, rng.random((cells, cells)) < 0.6


def scene_transform(size: int):
    return from_origin(500000.0, 5000000.0 + size * 0.3, 0.3, 0.3)


def write_scene(folder: Path, size: int, seed: int = 0) -> tuple[Path, Path]:
    """An RGB orthophoto-like GeoTIFF and a coarse class GeoTIFF (rectangular buildings on
    textured ground), written in strips so even 16k² fits in little memory."""
    rng = np.random.default_rng(seed)
    cx, cy, hw, hh, present = scene_layout(size, rng)
    transform = scene_transform(size)
    common = dict(driver="GTiff", width=size, height=size, crs="EPSG:32633", transform=transform,
                  tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    image, coarse = folder / f"image_{size}.tif", folder / f"coarse_{size}.tif"
    with rasterio.open(image, "w", count=3, dtype="uint8", **common) as img, \
            rasterio.open(coarse, "w", count=1, dtype="uint8", **common) as lab:
        for row in range(0, size, 1024):
            rows = min(1024, size - row)
            y = np.arange(row, row + rows)[:, None]
            x = np.arange(size)[None, :]
            gy, gx = y // CELL, x // CELL
            inside = (present[gy, gx] & (np.abs(x % CELL - cx[gy, gx]) < hw[gy, gx])
                      & (np.abs(y % CELL - cy[gy, gx]) < hh[gy, gx]))
            noise = rng.integers(0, 40, (3, rows, size), dtype=np.uint8)
            rgb = np.where(inside, 180, 90).astype(np.uint8)[None] + noise
            img.write(rgb, window=((row, row + rows), (0, size)))
            lab.write(inside.astype(np.uint8), 1, window=((row, row + rows), (0, size)))
    return image, coarse


def run(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    if args.workdir:  # made if missing; the run's rasters inside it are removed after
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for size in sizes:
            image, coarse = write_scene(Path(tmp), size)
            done = subprocess.run([sys.executable, "-c", CHILD, str(image), str(coarse), str(Path(tmp) / f"out_{size}"),
                                   args.model], capture_output=True, text=True,
                                  env={**os.environ, "GDAL_CACHEMAX": GDAL_CACHE_MB})
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
            stats = json.loads(done.stdout.strip().splitlines()[-1])
            mpx = size * size / 1e6
            t = stats["timings"]
            rows.append({"size": size, "megapixels": round(mpx, 1), "wall_s": round(t["total"], 1),
                         "s_per_mpx": round(t["total"] / mpx, 3), "refine_s": round(t["refine"], 1),
                         "vectorize_s": round(t["vectorize"], 1), "peak_rss_mb": round(stats["peak_rss_mb"]),
                         "tiles": stats["tiles"]})
            r = rows[-1]
            print(f"{size:>6}² {r['megapixels']:>7.1f} MP  {r['wall_s']:>8.1f} s  {r['s_per_mpx']:>6.3f} s/MP  "
                  f"(tiles {r['refine_s']} s, vectorize {r['vectorize_s']} s)  peak RSS {r['peak_rss_mb']} MB",
                  flush=True)
            for f in (image, coarse):
                f.unlink()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0
