"""`idgbr benchmark …`: speed, memory and quality measurements as commands, whose numbers go
into the docs (never timed unit tests). Each benchmark is a module of `idgbr.benchmarks`."""
from __future__ import annotations

import argparse
import importlib

BENCHMARKS = ("features", "pipeline", "quality", "speed", "distributed")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="measure speed, memory or quality")
    bsub = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name in BENCHMARKS:
        importlib.import_module(f"idgbr.benchmarks.{name}").register(bsub)
