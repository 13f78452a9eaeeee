"""`idgbr predict coarse`: coarse maps for training tiles, either k-fold cross-predicted (every
tile by a model that never saw it: the refiner's realistic training inputs) or by one trained
model over a dataset split."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from .run_options import apply_run_overrides


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict coarse maps for training tiles")
    kinds = p.add_subparsers(dest="model_kind", required=True, metavar="MODEL")
    c = kinds.add_parser("coarse", help="coarse segmentor predictions (k-fold or one model)",
                         description="With --kfold K and --config: train K models (each without one fold of "
                                     "places) and write every training tile's out-of-fold prediction. With "
                                     "--model and --dataset: predict a split with one trained model.")
    c.add_argument("--out", required=True, type=Path, help="output folder (PNG class maps by tile id)")
    c.add_argument("--kfold", type=int, metavar="K", help="number of folds (with --config)")
    c.add_argument("--config", help="training configuration of the fold models (YAML, as for train coarse)")
    c.add_argument("--seed", type=int, default=0, help="fold assignment seed (0)")
    c.add_argument("--steps", type=int, help="training steps per fold (overrides the config)")
    c.add_argument("--max-minutes", type=float, help="wall-time budget per fold (overrides the config)")
    c.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides the config")
    c.add_argument("--model", help="a trained coarse model (name or folder), without --kfold")
    c.add_argument("--dataset", help="dataset of idgbr.datasets to predict, with --model")
    c.add_argument("--split", default="val", choices=["train", "val"], help="split to predict with --model (val)")
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.kfold is not None:
        return _kfold(args)
    if args.model is None or args.dataset is None:
        raise InputError("predict coarse needs --kfold K with --config, or --model with --dataset")
    from ..datasets import load_dataset
    from ..segment.kfold import predict_dataset, score_predictions
    from ..segment.segmentor import load_segmentor

    ds = load_dataset(args.dataset, args.split)
    segmentor = load_segmentor(args.model, args.device or "auto")
    predict_dataset(segmentor, ds, args.out)
    scores = score_predictions(ds, args.out)
    print(f"predicted {len(ds)} {args.dataset}/{args.split} tiles → {args.out}; {_scores(scores)}")
    return 0


def _kfold(args: argparse.Namespace) -> int:
    if args.config is None:
        raise InputError("--kfold needs --config (the training configuration of the fold models)")
    from ..segment.config import CoarseConfig
    from ..segment.kfold import cross_predict

    cfg = CoarseConfig.load(args.config)
    apply_run_overrides(cfg, args)
    manifest = cross_predict(cfg, args.kfold, args.out, args.seed, report=print)
    for split, scores in manifest["scores"].items():
        print(f"{split}: {_scores(scores)}")
    print(f"k-fold predictions → {args.out} (manifest: {args.out / 'kfold.json'})")
    return 0


def _scores(s: dict) -> str:
    return f"mIoU {s['miou']:.3f}, boundary F@3 {s['boundary_f3']:.3f}, WFm {s['wfm_band3']:.3f}"
