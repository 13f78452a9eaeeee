"""`idgbr train label-embed|vae|refiner --config CONFIG.yaml`: the diffusion refiner's training
commands (schema in idgbr.diffusion.config), registered on `idgbr train` by idgbr.cli.train.
Order for the compact preset: label-embed, then vae (needs the embedding), then refiner."""
from __future__ import annotations

import argparse

from ..cli.run_options import add_run_options, apply_run_overrides

KINDS = {
    "label-embed": "train the label embedding (class maps ↔ 3-channel codes)",
    "vae": "train the compact preset's VAE on images and embedded label maps",
    "refiner": "train a refiner and write its model folder: the latent IDGBR diffusion refiner, or a "
               "pixel-space coarse-anchored one when the config says `family: anchored`",
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

    if args.diffusion_kind == "refiner":
        from ..anchored.train import is_anchored_config

        if is_anchored_config(args.config):
            return run_train_anchored(args)
    cfg = DiffusionConfig.load(args.config)
    apply_run_overrides(cfg, args)
    if args.out is not None:
        cfg.out = args.out
    print(describe(RUNNERS[args.diffusion_kind](cfg, resume=args.resume, report=print)))
    return 0


def run_train_anchored(args: argparse.Namespace) -> int:
    """The anchored family trains on the CPU it runs on; its runs take no synthetic mix yet."""
    from ..anchored.train import AnchoredConfig, train
    from ..errors import InputError

    if getattr(args, "synthetic", None) or (args.device not in (None, "auto", "cpu")):
        raise InputError("anchored refiners train on the CPU without --synthetic (for now)")
    cfg = AnchoredConfig.load(args.config)
    for key in ("steps", "max_minutes"):
        if getattr(args, key) is not None:
            setattr(cfg.train, key, getattr(args, key))
    if args.out is not None:
        cfg.out = args.out
    result = train(cfg, resume=args.resume, report=print)
    print(f"{result.out}: {result.step} steps, {result.seconds / 60:.1f} min; best validation {result.best}")
    return 0
