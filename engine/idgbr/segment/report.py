"""Draw an overlay PNG an analyst can judge for a trained coarse model: per row one validation
tile of its dataset as image | ground truth | prediction, class colours blended over the image;
and print the validation metrics its card holds (measured by training on the whole val split).
Used for docs/coarse_models.md:

    python -m idgbr.segment.report coarse-buildings buildings docs/img/coarse-buildings.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..datasets import TileDataset, load_dataset
from ..models.card import ClassInfo
from .segmentor import Segmentor, load_segmentor

PANEL_PX = 200
ALPHA = 0.45


def report_model(model: str, dataset: str, out_png: Path, rows: int = 3, device: str = "cpu") -> dict[str, Any]:
    """Write the overlay of `rows` validation tiles of `dataset` to `out_png` (those with the
    most labelled foreground among evenly spaced candidates); return the card's metrics."""
    segmentor = load_segmentor(model, device)
    _overlay(load_dataset(dataset, "val"), segmentor, rows, out_png)
    return {"metrics": segmentor.card.metrics, "training": segmentor.card.training}


def _overlay(val: TileDataset, segmentor: Segmentor, rows: int, out_png: Path) -> None:
    candidates = np.linspace(0, len(val) - 1, min(len(val), 8 * rows)).astype(int)
    background = segmentor.card.background_class

    def interest(i: int) -> float:
        label = val[i][1]
        return float((label != background).mean() if background is not None else len(np.unique(label)))

    picked = sorted(sorted(candidates, key=interest)[-rows:])
    classes = segmentor.card.classes or []
    lines = []
    for i in picked:
        image, label, tile_id = val[i]
        pred = segmentor.predict_labels(image)
        panels = [image, _blend(image, label, classes), _blend(image, pred, classes)]
        row = [np.asarray(Image.fromarray(p).resize((PANEL_PX, PANEL_PX), Image.BILINEAR)) for p in panels]
        lines.append(np.concatenate(_gapped(row, axis=1), axis=1))
    sheet = Image.fromarray(np.concatenate(_gapped(lines, axis=0), axis=0))
    draw = ImageDraw.Draw(sheet)
    for k, title in enumerate(("image", "ground truth", segmentor.card.name)):
        draw.text((k * (PANEL_PX + 4) + 4, 2), title, fill=(255, 255, 0))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out_png, optimize=True)


def _blend(image: np.ndarray, labels: np.ndarray, classes: list[ClassInfo]) -> np.ndarray:
    lut = np.zeros((256, 3), np.float32)
    for c in classes:
        lut[c.id] = c.rgba()[:3]
    return (image * (1 - ALPHA) + lut[labels] * ALPHA).astype(np.uint8)


def _gapped(parts: list[np.ndarray], axis: int) -> list[np.ndarray]:
    """The parts with a 4-pixel white gap between neighbours."""
    shape = list(parts[0].shape)
    shape[axis] = 4
    gap = np.full(shape, 255, np.uint8)
    out = [parts[0]]
    for p in parts[1:]:
        out += [gap, p]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description="validation metrics and overlay PNG of a coarse model")
    p.add_argument("model")
    p.add_argument("dataset")
    p.add_argument("out_png", type=Path)
    p.add_argument("--rows", type=int, default=3)
    args = p.parse_args()
    print(json.dumps(report_model(args.model, args.dataset, args.out_png, args.rows), indent=1))


if __name__ == "__main__":
    main()
