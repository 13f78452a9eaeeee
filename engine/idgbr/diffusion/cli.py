"""`idgbr train label-embed|vae|refiner --config CONFIG.yaml`: the diffusion refiner's training
commands (schema in idgbr.diffusion.config), registered on `idgbr train` by idgbr.cli.train.
Order for the compact preset: label-embed, then vae (needs the embedding), then refiner."""
from __future__ import annotations

import argparse

from ..cli.run_options import add_run_options, apply_run_overrides

KINDS = {
    "label-embed": "train the label embedding (class maps ↔ 3-channel codes)",
    "vae": "train the compact preset's VAE on images and embedded label maps",
    "refiner": "train the IDGBR diffusion refiner and write its model folder",
}


def register_train_diffusion(train_sub: argparse._SubParsersAction) -> None:
    for kind, text in KINDS.items():
        p = train_sub.add_parser(kind, help=text, description=f"{text[0].upper()}{text[1:]}, as CONFIG.yaml says "
                                                              "(see idgbr.diffusion.config).")
        add_run_options(p, out_help="output folder (overrides the config's 'out')",
                        resume_help="continue from <out>/checkpoint", synthetic=kind == "refiner")
        p.set_defaults(func=run_train, diffusion_kind=kind)


def run_train(args: argparse.Namespace) -> int:
    from .config import DiffusionConfig
    from .runs import RUNNERS, describe

    cfg = DiffusionConfig.load(args.config)
    apply_run_overrides(cfg, args)
    if args.out is not None:
        cfg.out = args.out
    print(describe(RUNNERS[args.diffusion_kind](cfg, resume=args.resume, report=print)))
    return 0
