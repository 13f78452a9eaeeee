"""Command-line options every `idgbr train …` command shares: the config file, and the few
values that may override it for one run."""
from __future__ import annotations

import argparse
from typing import Any

OVERRIDES = ("steps", "max_minutes", "device")


def add_run_options(p: argparse.ArgumentParser, out_help: str, resume_help: str) -> None:
    p.add_argument("--config", required=True, help="YAML training configuration")
    p.add_argument("--out", help=out_help)
    p.add_argument("--steps", type=int, help="training steps (overrides the config)")
    p.add_argument("--max-minutes", type=float, help="wall-time budget (overrides the config)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides the config")
    p.add_argument("--resume", action="store_true", help=resume_help)


def apply_run_overrides(cfg: Any, args: argparse.Namespace) -> None:
    """Values given on the command line replace the config's training section (`cfg.train`)."""
    for key in OVERRIDES:
        value = getattr(args, key, None)
        if value is not None:
            setattr(cfg.train, key, value)
