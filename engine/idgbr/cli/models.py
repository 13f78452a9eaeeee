"""`idgbr models list`: the installed models and what their cards say, refiners and coarse
segmentors apart (they are passed differently: --model and --coarse-model)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list installed models")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    msub.add_parser("list", help="installed models with their cards").set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    from ..models import list_models

    cards = list_models()
    sections = (("Refiners (--model; default: auto, the one marked for the coarse layer's kind)",
                 [c for c in cards if not c.is_coarse_segmentor]),
                ("Coarse segmentors (--coarse-model, when there is no coarse layer)",
                 [c for c in cards if c.is_coarse_segmentor]))
    for title, members in sections:
        print(title)
        if not members:
            print("  none installed")
        for card in members:
            classes = ", ".join(c.name for c in card.classes) if card.classes else "from the coarse layer"
            gsd = f"{card.gsd_m} m" if card.gsd_m else "any"
            default = f"; default for: {', '.join(card.default_for)}" if card.default_for else ""
            print(f"  {card.name}  [{card.refiner}]  {card.task}")
            print(f"      classes: {classes}; GSD: {gsd}; tile: {card.tile_size} px{default}; folder: {card.path}")
            if card.description:
                print(f"      {card.description}")
        print()
    return 0
