"""Command-line options every `idgbr train …` command shares: the config file, and the few
values that may override it for one run (the synthetic-data mix only where a command uses it)."""
from __future__ import annotations

import argparse
from typing import Any

OVERRIDES = ("steps", "max_minutes", "device")
DATA_OVERRIDES = ("synthetic", "ratio")


def add_run_options(p: argparse.ArgumentParser, out_help: str, resume_help: str, synthetic: bool = False) -> None:
    p.add_argument("--config", required=True, help="YAML training configuration")
    p.add_argument("--out", help=out_help)
    p.add_argument("--steps", type=int, help="training steps (overrides the config)")
    p.add_argument("--max-minutes", type=float, help="wall-time budget (overrides the config)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides the config")
    p.add_argument("--resume", action="store_true", help=resume_help)
    if synthetic:
        p.add_argument("--synthetic", metavar="DIR", help="`idgbr synth sample` folder of generated pairs mixed into "
                                                          "the training split (overrides the config's data)")
        p.add_argument("--ratio", type=float, metavar="R", help="synthetic pairs per real tile (default 1; real "
                                                                "tiles are repeated to reach it)")


def apply_run_overrides(cfg: Any, args: argparse.Namespace) -> None:
    """Values given on the command line replace the config's training section (`cfg.train`)
    and its synthetic-data mix (`cfg.data`)."""
    for section, keys in ((cfg.train, OVERRIDES), (cfg.data, DATA_OVERRIDES)):
        for key in keys:
            value = getattr(args, key, None)
            if value is not None:
                setattr(section, key, value)


def load_run_config(kind: Any, args: argparse.Namespace) -> Any:
    """`kind.load(--config)` with the command line's overrides applied, `--out` included."""
    cfg = kind.load(args.config)
    apply_run_overrides(cfg, args)
    if args.out is not None:
        cfg.out = args.out
    return cfg
