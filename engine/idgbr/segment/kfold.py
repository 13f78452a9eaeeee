"""K-fold cross-prediction: every training tile gets a coarse map from a model that never saw
it, nor any tile of its place. These are the realistic coarse inputs a refiner must be trained
on (a model's predictions on its own training tiles are far too good).

Folds are made of whole groups (the place unit of idgbr.datasets: a z19 parent tile, a scene
strip, an image), balanced by tile count. Only real tiles are folded: the config's synthetic
pairs (idgbr.synth.mix) join every fold model's training set and are never predicted.
Output folder:

    <out>/train/<tile id>.png     class ids predicted by the model of the tile's fold
    <out>/val/<tile id>.png       class ids predicted by the fold-0 model (never saw val)
    <out>/models/fold-<i>/        the fold models (model folders)
    <out>/kfold.json              k, seed, tile → fold, per-fold training, scores of the maps
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..datasets import TileDataset
from ..errors import InputError
from ..evaluate import evaluate_pairs
from ..synth.mix import mix_train
from .config import CoarseConfig
from .data import resolve_datasets, subset
from .segmentor import Segmentor, load_segmentor

log = logging.getLogger(__name__)
MANIFEST = "kfold.json"


def assign_folds(groups: Sequence[str], k: int, seed: int = 0) -> list[int]:
    """The fold (0..k-1) of each tile: whole groups go to one fold, largest groups first to
    the emptiest fold; ties are broken by a seeded hash of the group name."""
    counts = Counter(groups)
    if k < 2:
        raise InputError(f"k-fold needs k >= 2, got {k}")
    if len(counts) < k:
        raise InputError(f"{len(counts)} groups of tiles cannot make {k} folds")

    def tiebreak(g: str) -> str:
        return hashlib.blake2b(f"{seed}:{g}".encode(), digest_size=8).hexdigest()

    sizes = [0] * k
    fold_of: dict[str, int] = {}
    for g in sorted(counts, key=lambda g: (-counts[g], tiebreak(g))):
        f = int(np.argmin(sizes))
        fold_of[g] = f
        sizes[f] += counts[g]
    return [fold_of[g] for g in groups]


def cross_predict(cfg: CoarseConfig, k: int, out: str | Path, seed: int = 0,
                  report: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Train k models as `cfg` says (each without one fold), write every tile's out-of-fold
    prediction under `out` and return the manifest (also written to kfold.json)."""
    from .train import train_coarse

    out = Path(out)
    train_set, val_set = resolve_datasets(cfg.data)
    folds = assign_folds([t.group for t in train_set.tiles], k, seed)
    manifest: dict[str, Any] = {"k": k, "seed": seed, "dataset": train_set.name, "config": cfg.to_dict(),
                                "folds": {t.tile_id: f for t, f in zip(train_set.tiles, folds)}, "models": []}
    for f in range(k):
        held = [i for i, g in enumerate(folds) if g == f]
        fold_cfg = copy.deepcopy(cfg)
        fold_cfg.name = f"{cfg.name}-fold{f}"
        fold_cfg.out = str(out / "models" / f"fold-{f}")
        fold_cfg.work_dir = str(out / "models" / f".fold-{f}.work")
        report(f"fold {f + 1}/{k}: training on {len(train_set) - len(held)} tiles, predicting {len(held)}")
        fold_train = mix_train(subset(train_set, [i for i, g in enumerate(folds) if g != f]), cfg.data.synthetic,
                               cfg.data.ratio)
        result = train_coarse(fold_cfg, fold_train, None, report=report)
        segmentor = load_segmentor(result.out, cfg.train.device)
        predict_dataset(segmentor, subset(train_set, held), out / "train")
        manifest["models"].append({"fold": f, "folder": str(result.out), "train_tiles": len(train_set) - len(held),
                                   "predicted_tiles": len(held), "steps": result.steps,
                                   "seconds": round(result.seconds, 1)})
        if f == 0 and val_set is not None:
            predict_dataset(segmentor, val_set, out / "val")
    manifest["scores"] = {"train": score_predictions(train_set, out / "train")}
    if val_set is not None:
        manifest["scores"]["val"] = score_predictions(val_set, out / "val")
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def score_predictions(ds: TileDataset, folder: Path) -> dict[str, Any]:
    """mIoU, boundary F@3 and WFm of the predicted tiles in `folder` against the labels."""
    def pairs():
        for i in range(len(ds)):
            _, label, tile_id = ds[i]
            with Image.open(folder / f"{tile_id}.png") as im:
                yield np.asarray(im), label

    r = evaluate_pairs(pairs(), len(ds.classes))
    return {"tiles": len(ds), "miou": r["miou"], "boundary_f3": r["boundary_f"]["3"], "wfm_band3": r["wfm_band3"]}


def predict_dataset(segmentor: Segmentor, ds: TileDataset, out: Path) -> int:
    """Write the predicted class ids of every tile of `ds` to `<out>/<tile id>.png`."""
    for i in range(len(ds)):
        image, _, tile_id = ds[i]
        path = out / f"{tile_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(segmentor.predict_labels(image)).save(path)
    return len(ds)
