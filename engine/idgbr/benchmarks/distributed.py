"""`idgbr benchmark distributed`: the same generated raster refined in-process, on `local:1` and
on `local:2` (Dask LocalClusters), each in a fresh process: wall time per stage, the blocks'
compute time, the scheduler overhead per block, peak RSS of the coordinator and of each worker,
and whether the class raster and the polygon layers (refined, changes; with --features the coarse
layer is the scene's buildings as polygon features, and removed and new are compared too) are
identical to the in-process ones.

Overhead per block = (tile-stage wall time × workers − block compute − model loading) / blocks:
worker time spent neither computing nor loading (scheduling, part files, idle workers at the end).
"""
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
import pyogrio
import rasterio

from ..cli import GDAL_CACHE_MB
from .features import write_buildings
from .pipeline import write_scene

CHILD = """
import dataclasses, json, sys, idgbr
image, coarse, out, model, scheduler, block = sys.argv[1:7]
r = idgbr.refine(image, coarse, model, out, overwrite=True, scheduler=scheduler or None, block_size=int(block))
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
stats = dataclasses.asdict(r.distributed) if r.distributed else None
if stats:
    stats["overhead_per_block_s"] = r.distributed.overhead_per_block_s
print(json.dumps({"timings": r.timings_s, "tiles": r.tiles, "peak_rss_mb": hwm / 1024, "distributed": stats}))
"""
SCHEDULERS = ("", "local:1", "local:2")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distributed", help="in-process vs Dask local:1 vs local:2 on one generated raster")
    p.add_argument("--size", type=int, default=8192, help="raster side in pixels (8192)")
    p.add_argument("--block-size", type=int, default=2048, help="block side in pixels (2048)")
    p.add_argument("--model", default="guided", help="refiner to time (guided)")
    p.add_argument("--features", action="store_true",
                   help="coarse layer: the buildings as polygon features (idgbr.features), not a class raster")
    p.add_argument("--workdir", help="where to write the rasters (default: a temporary folder)")
    p.add_argument("--json", help="also write the rows as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        image, coarse = write_scene(Path(tmp), args.size)
        names = ("refined", "changes")
        if args.features:
            coarse.unlink()
            coarse = Path(tmp) / "buildings.gpkg"
            write_buildings(coarse, args.size)
            names += ("removed", "new")
        reference = None
        for scheduler in SCHEDULERS:
            out = Path(tmp) / f"out_{scheduler.replace(':', '') or 'inprocess'}"
            done = subprocess.run([sys.executable, "-c", CHILD, str(image), str(coarse), str(out), args.model,
                                   scheduler, str(args.block_size)], capture_output=True, text=True,
                                  env={**os.environ, "GDAL_CACHEMAX": GDAL_CACHE_MB})
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
            stats = json.loads(done.stdout.strip().splitlines()[-1])
            with rasterio.open(out / "refined.tif") as src:
                classes = src.read(1)
            layers = [pyogrio.read_dataframe(out / "refined.gpkg", layer=name, fid_as_index=True) for name in names]
            reference = (classes, layers) if reference is None else reference
            t, d = stats["timings"], stats["distributed"] or {}
            rows.append({"scheduler": scheduler or "in-process", "size": args.size, "wall_s": round(t["total"], 1),
                         "refine_s": round(t["refine"], 1), "vectorize_s": round(t["vectorize"], 1),
                         "tiles": stats["tiles"], "blocks": d.get("blocks"),
                         "tile_computations": d.get("tile_computations"),
                         "blocks_compute_s": round(d["compute_s"], 1) if d else None,
                         "workers_load_s": round(d["load_s"], 1) if d else None,
                         "cluster_startup_s": round(d["startup_s"], 1) if d else None,
                         "assemble_s": round(d["assemble_s"], 1) if d else None,
                         "overhead_per_block_s": round(d["overhead_per_block_s"], 2) if d else None,
                         "coordinator_peak_rss_mb": round(stats["peak_rss_mb"]),
                         "worker_peak_rss_mb": sorted(round(v) for v in d.get("peak_rss_mb", {}).values()),
                         "identical": bool(np.array_equal(classes, reference[0])),
                         "polygons": [len(layer) for layer in layers],
                         "polygons_identical": all(_same_features(a, b) for a, b in zip(layers, reference[1]))})
            r = rows[-1]
            blocks = (f"  cluster start {r['cluster_startup_s']} s, {r['blocks']} blocks ({r['tile_computations']} "
                      f"tile runs for {r['tiles']} tiles): compute {r['blocks_compute_s']} s, model load "
                      f"{r['workers_load_s']} s, assembly {r['assemble_s']} s, overhead/block "
                      f"{r['overhead_per_block_s']} s, worker peak RSS {r['worker_peak_rss_mb']} MB") if d else ""
            print(f"{r['scheduler']:>10}  {r['wall_s']:>7.1f} s (tiles {r['refine_s']} s, vectorize "
                  f"{r['vectorize_s']} s)  coordinator peak RSS {r['coordinator_peak_rss_mb']} MB  "
                  f"identical {r['identical']}, polygons ({', '.join(names)}) {r['polygons']} identical "
                  f"{r['polygons_identical']}{blocks}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def _same_features(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> bool:
    """Same features in the same order: fids, attributes and geometries (exactly)."""
    return len(a) == len(b) and a.index.equals(b.index) and \
        a.drop(columns="geometry").equals(b.drop(columns="geometry")) and \
        bool(a.geometry.geom_equals_exact(b.geometry, tolerance=0).all())
