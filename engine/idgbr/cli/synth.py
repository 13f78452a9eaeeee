"""`idgbr synth COMMAND`: synthetic training pairs (idgbr.synth). Each command registers itself
on the `kinds` sub-parsers below."""
from __future__ import annotations

import argparse

from ..synth import stats
from ..synth.cli import register_synth_commands


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="synthetic (image, label) training pairs",
                       description="Train a SatSynth generator of (image, label) pairs and sample from it.")
    kinds = p.add_subparsers(dest="synth_command", required=True, metavar="COMMAND")
    register_synth_commands(kinds)
    stats.register(kinds)
