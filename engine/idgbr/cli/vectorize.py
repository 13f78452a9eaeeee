"""`idgbr vectorize`: a class raster to a GeoPackage of polygons.

The GeoPackage is written to a temporary file next to the output and renamed into place only
when complete, so a failed or cancelled run leaves nothing behind."""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from ..errors import InputError
from ..vectorize import vectorize

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "vectorize", help="turn a class raster into polygons (GeoPackage)",
        description="Polygonize a single-band integer class raster (NoData pixels produce nothing) into a "
                    "GeoPackage layer with class_id, class_name, area_m2 and perimeter_m.")
    p.add_argument("class_raster", help="class raster (GeoTIFF or any raster GDAL reads)")
    p.add_argument("--out", required=True, help="output GeoPackage (.gpkg)")
    p.add_argument("--layer", default="refined", help="layer name (default: refined)")
    p.add_argument("--simplify", type=float, default=0.0, metavar="T",
                   help="simplification tolerance; shared boundaries stay shared (default: 0, none)")
    p.add_argument("--simplify-units", choices=("px", "map"), default="px",
                   help="units of --simplify: pixels or map (CRS) units (default: px)")
    p.add_argument("--min-area", type=float, default=0.0, metavar="M2",
                   help="merge regions smaller than this many m² into their largest neighbour (default: 0)")
    p.add_argument("--regularize", type=_class_ids, default=(), metavar="CLASS_IDS",
                   help="comma-separated class ids whose outlines get right angles (buildings), e.g. 1,3")
    p.add_argument("--skip-classes", type=_class_ids, default=(), metavar="IDS",
                   help="comma-separated class ids not to write, e.g. 0 for background")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).expanduser().absolute()
    if out.suffix.lower() != ".gpkg":
        raise InputError(f"output {out} must be a GeoPackage (.gpkg)")
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} exists; choose another file or pass --overwrite")
    if not out.parent.is_dir():
        raise InputError(f"output folder {out.parent} does not exist")
    partial = out.with_name(f".{out.stem}.{os.getpid()}.partial.gpkg")
    try:
        areas = vectorize(args.class_raster, partial, args.layer, skip_classes=args.skip_classes,
                          simplify=args.simplify, simplify_units=args.simplify_units,
                          min_area_m2=args.min_area, regularize_classes=args.regularize,
                          progress=lambda f, m: log.debug("%3.0f%% %s", 100 * f, m))
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    for class_id, area in areas.items():
        log.info("class %d: %.1f m²", class_id, area)
    log.info("wrote %s (layer %s)", out, args.layer)
    return 0


def _class_ids(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class ids, got {text!r}") from None
