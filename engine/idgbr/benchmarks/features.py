"""`idgbr benchmark features`: wall time and peak memory of `refine` with a polygon coarse layer
of many features (the feature-preserving output, idgbr.features), on a generated scene: the
pipeline benchmark's rectangular buildings (one per 48×48 px cell, 60 % of cells: ~104 000 on a
20 000² raster), as a GeoPackage layer with an attribute, some clipped at cell edges so that
neighbours share walls. Runs in a fresh process, so the peak RSS is the run's own."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

from ..cli import GDAL_CACHE_MB
from .pipeline import CELL, CHILD, scene_layout, scene_transform, write_scene


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="time and peak memory of `refine` with ~100 000 polygon features")
    p.add_argument("--size", type=int, default=20_000, help="raster side in pixels (20 000: ~104 000 features)")
    p.add_argument("--model", default="morph", help="refiner (default: morph, which changes outlines cheaply)")
    p.add_argument("--workdir", help="where to write the scene (default: a temporary folder)")
    p.add_argument("--json", help="also write the row as JSON here")
    p.set_defaults(func=run)


def write_buildings(path: Path, size: int, seed: int = 0) -> int:
    """The scene's buildings (write_scene's, same seed) as polygons, each clipped to its cell as
    the raster draws it; returns how many."""
    cx, cy, hw, hh, present = scene_layout(size, np.random.default_rng(seed))
    gy, gx = np.nonzero(present)
    cx, cy, hw, hh = (a[gy, gx] for a in (cx, cy, hw, hh))
    # Pixels |x - cx| < hw of the cell, clipped to the cell and the raster: pixel edges.
    x0 = np.maximum(cx - hw + 1, 0) + gx * CELL
    x1 = np.minimum(np.minimum(cx + hw, CELL) + gx * CELL, size)
    y0 = np.maximum(cy - hh + 1, 0) + gy * CELL
    y1 = np.minimum(np.minimum(cy + hh, CELL) + gy * CELL, size)
    keep = (x1 > x0) & (y1 > y0)
    t = scene_transform(size)
    boxes = shapely.box(t.c + x0[keep] * t.a, t.f + y1[keep] * t.e, t.c + x1[keep] * t.a, t.f + y0[keep] * t.e)
    frame = gpd.GeoDataFrame({"building_no": np.arange(len(boxes)), "kind": "house"}, geometry=boxes,
                             crs="EPSG:32633")
    frame.to_file(path, layer="buildings", engine="pyogrio")
    return len(frame)


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        image, coarse_raster = write_scene(folder, args.size)
        coarse_raster.unlink()
        layer = folder / "buildings.gpkg"
        count = write_buildings(layer, args.size)
        done = subprocess.run([sys.executable, "-c", CHILD, str(image), str(layer), str(folder / "out"), args.model],
                              capture_output=True, text=True, env={**os.environ, "GDAL_CACHEMAX": GDAL_CACHE_MB})
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        stats = json.loads(done.stdout.strip().splitlines()[-1])
    t = stats["timings"]
    row = {"size": args.size, "features": count, "model": args.model, "wall_s": round(t["total"], 1),
           "coarse_s": round(t["coarse"], 1), "refine_s": round(t["refine"], 1),
           "vectorize_s": round(t["vectorize"], 1), "peak_rss_mb": round(stats["peak_rss_mb"]),
           "statuses": stats["features"]}
    print(f"{args.size}² px, {count} features, {args.model}: {row['wall_s']} s (coarse {row['coarse_s']} s, "
          f"tiles {row['refine_s']} s, vectorize {row['vectorize_s']} s), peak RSS {row['peak_rss_mb']} MB; "
          f"{row['statuses']}")
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=2) + "\n")
    return 0
