"""`idgbr` command line. Each subcommand lives in its own module of this package and exposes
`register(subparsers)`; add a module name to COMMANDS to add a command."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys

from .. import __version__
from ..errors import Cancelled, IdgbrError

# GDAL's block cache defaults to 5 % of RAM and fills up with the blocks a run writes: cap it
# for the command line so peak memory stays flat whatever the raster size. This is process-wide
# GDAL state, so the library never changes it (inside QGIS that crashed QGIS's own rendering).
GDAL_CACHE_MB = "64"

COMMANDS = ("refine", "vectorize", "models", "benchmark", "evaluate", "coarsen", "train", "predict", "data",
            "synth")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="idgbr", description="Refine the boundaries of land-cover maps.")
    parser.add_argument("--version", action="version", version=f"idgbr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages (and library warnings)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every `with` block cleans up as on Ctrl-C."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GDAL_CACHEMAX", GDAL_CACHE_MB)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if not args.verbose:  # GDAL bindings log every layer they write
        for name in ("pyogrio", "rasterio", "fiona"):
            logging.getLogger(name).setLevel(logging.WARNING)
    from ..logs import route_warnings

    route_warnings()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("idgbr: cancelled, nothing written", file=sys.stderr)
        return 130
    except Terminated:
        print("idgbr: terminated, nothing written", file=sys.stderr)
        return 143
    except Cancelled:
        print("idgbr: cancelled, nothing written", file=sys.stderr)
        return 130
    except IdgbrError as e:
        print(f"idgbr: error: {e}", file=sys.stderr)
        return 2
