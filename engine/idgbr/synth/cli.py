"""`idgbr synth train|sample`: train the SatSynth generator as a YAML config says (schema in
idgbr.synth.config), and generate pairs with it into a folder of tiles. Registered on
`idgbr synth` by idgbr.cli.synth."""
from __future__ import annotations

import argparse

from ..cli.run_options import add_run_options, load_run_config
from .config import SAMPLERS


def register_synth_commands(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser("train", help="train the generator (base + SR stages)",
                         description="Train the SatSynth generator as CONFIG.yaml says (see idgbr.synth.config) "
                                     "and write its model folder.")
    add_run_options(p, out_help="model folder to write (overrides the config's 'out')",
                    resume_help="continue from the checkpoint in <out>.work/checkpoint")
    p.add_argument("--dataset", help="a dataset of idgbr.datasets (overrides the config's data)")
    p.set_defaults(func=run_train)

    p = kinds.add_parser("sample", help="generate (image, label) pairs",
                         description="Generate pairs with a trained generator into OUT/images, OUT/labels "
                                     "(class-index PNGs) and OUT/synth_info.json.")
    p.add_argument("--model", required=True, help="synth model folder (of `idgbr synth train`)")
    p.add_argument("--n", type=int, required=True, help="number of pairs")
    p.add_argument("--out", required=True, help="output folder (must be empty unless --overwrite)")
    p.add_argument("--sampler", choices=SAMPLERS, help="default: the model card's")
    p.add_argument("--steps", type=int, help="sampling steps (default: the card's, or 1000 for ddpm)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampler (0)")
    p.add_argument("--batch-size", type=int, default=8, help="pairs generated at once (8)")
    p.add_argument("--start-index", type=int, default=0, help="number of the first file (synth_NNNNN.png)")
    p.add_argument("--no-sr", action="store_true", help="stop at the base stage (half resolution)")
    p.add_argument("--overwrite", action="store_true", help="replace what OUT holds")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the generator runs (auto)")
    p.set_defaults(func=run_sample)


def run_train(args: argparse.Namespace) -> int:
    from .config import SynthConfig
    from .train import train_synth

    cfg = load_run_config(SynthConfig, args)
    if args.dataset is not None:
        cfg.data.dataset, cfg.data.images, cfg.data.labels = args.dataset, None, None
    result = train_synth(cfg, resume=args.resume, report=print)
    stages = ", ".join(f"{name} {steps} steps" for name, steps in result.steps.items())
    print(f"trained {stages} in {result.seconds:.0f} s → {result.out}")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..device import resolve_device
    from .model import load_synth_model
    from .sample import generate, sample_info, write_pairs
    from ..io.outputs import check_target

    model = load_synth_model(args.model, resolve_device(args.device))
    check_target(args.out, args.overwrite)  # before the generation, not after it
    default = model.card.sampling
    sampler = args.sampler or default.get("sampler", "ddim")
    steps = args.steps if args.steps is not None else (default.get("steps") if sampler == default.get("sampler")
                                                      else None)
    with tqdm(total=args.n, unit="pair") as bar:
        pairs = generate(model, args.n, sampler=sampler, steps=steps, seed=args.seed, batch_size=args.batch_size,
                         sr=not args.no_sr, progress=lambda done: bar.update(done - bar.n))
    info = sample_info(model, args.model, sampler, steps, args.seed, not args.no_sr)
    out = write_pairs(pairs, args.out, args.start_index, info=info, overwrite=args.overwrite)
    print(f"wrote {len(pairs)} pairs ({info['resolution']}², {sampler} {info['steps']} steps) → {out}")
    return 0
