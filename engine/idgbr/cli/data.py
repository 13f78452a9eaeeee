"""`idgbr data build`: refiner training tiles (image, ground truth, coarse maps from k-fold
predictions and coarsening recipes) from a shared dataset; layout in idgbr.segment.build."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="build training data")
    actions = p.add_subparsers(dest="data_action", required=True, metavar="ACTION")
    b = actions.add_parser("build", help="refiner training tiles from a shared dataset",
                           description="Write image, label and coarse tiles (k-fold predictions and "
                                       "idgbr.coarsen recipes) of --dataset, split by place, with manifest.json.")
    b.add_argument("--dataset", required=True, help="buildings, landcover, farmland or roads")
    b.add_argument("--out", required=True, type=Path, help="output folder (must not exist)")
    b.add_argument("--kfold", type=Path, help="an 'idgbr predict coarse --kfold' output folder of this dataset")
    b.add_argument("--recipes", help="comma-separated coarsening recipes (default: the dataset's)")
    b.add_argument("--seed", type=int, default=0, help="coarsening seed (0)")
    b.add_argument("--root", help="shared data folder (default: $IDGBR_DATA or ../shared/data)")
    b.add_argument("--mosaics", action="store_true", help="also write georeferenced z19 scenes (buildings)")
    b.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..segment.build import build_training_data

    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()] if args.recipes else None
    manifest = build_training_data(args.dataset, args.out, kfold_dir=args.kfold, recipes=recipes, seed=args.seed,
                                   root=args.root, mosaics=args.mosaics, report=print)
    for split, info in manifest["splits"].items():
        scores = ", ".join(f"{src} mIoU {s['miou']:.3f}" for src, s in info["coarse_scores"].items())
        print(f"{split}: {len(info['tiles'])} tiles; coarse vs labels: {scores}")
    print(f"→ {args.out} (manifest.json)")
    return 0
