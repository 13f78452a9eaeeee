"""`idgbr train coarse --config CONFIG.yaml`: the coarse segmentor's training command. The
`train` command itself lives in idgbr.cli.train, which calls `register_train_coarse`."""
from __future__ import annotations

import argparse

from ..cli.run_options import add_run_options, apply_run_overrides
from .config import CoarseConfig


def register_train_coarse(train_sub: argparse._SubParsersAction) -> None:
    p = train_sub.add_parser("coarse", help="train a coarse segmentor (SegFormer / DINOv2)",
                             description="Train a coarse segmentor as CONFIG.yaml says (see "
                                         "idgbr.segment.config) and write its model folder.")
    add_run_options(p, out_help="model folder to write (overrides the config's 'out')",
                    resume_help="continue from the checkpoint in the work folder", synthetic=True)
    p.set_defaults(func=run_train_coarse)


def run_train_coarse(args: argparse.Namespace) -> int:
    from .train import train_coarse

    cfg = CoarseConfig.load(args.config)
    apply_run_overrides(cfg, args)
    if args.out is not None:
        cfg.out = args.out
    result = train_coarse(cfg, resume=args.resume, report=print)
    val = result.metrics
    scores = (f"; val mIoU {val['miou']:.3f}, boundary F@3 {val['boundary_f3']:.3f}, WFm {val['wfm_band3']:.3f}"
              if val and val.get("miou") is not None else "")
    print(f"trained {result.steps} steps in {result.seconds:.0f} s{scores} → {result.out}")
    return 0
