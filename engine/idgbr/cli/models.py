"""`idgbr models list`: the installed models and what their cards say."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list installed models")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    msub.add_parser("list", help="installed models with their cards").set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    from ..models import list_models

    for card in list_models():
        classes = ", ".join(c.name for c in card.classes) if card.classes else "from the coarse layer"
        gsd = f"{card.gsd_m} m" if card.gsd_m else "any"
        print(f"{card.name}  [{card.refiner}]  {card.task}")
        print(f"    classes: {classes}; GSD: {gsd}; tile: {card.tile_size} px; folder: {card.path}")
        if card.description:
            print(f"    {card.description}")
    return 0
