"""`idgbr train MODEL …`: training commands, one sub-subcommand per kind of model."""
from __future__ import annotations

import argparse

from ..diffusion.cli import register_train_diffusion
from ..segment.cli import register_train_coarse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model", description="Train a model and write its model folder.")
    kinds = p.add_subparsers(dest="model_kind", required=True, metavar="MODEL")
    register_train_coarse(kinds)
    register_train_diffusion(kinds)
