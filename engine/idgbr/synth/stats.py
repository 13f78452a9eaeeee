"""Do generated pairs look like the real ones? Label statistics (per-class pixel frequency,
connected objects per class and their sizes) and per-channel image mean/std of a synthetic
folder next to the same numbers of real tiles, and PNG grids to judge by eye whether the
labels match the image content.

Object sizes depend on the window they are counted in (a field cut by the tile edge is
smaller), so the real side is measured on random crops of the synthetic tiles' size, seeded.

    idgbr synth stats --synthetic DIR --dataset landcover [--json OUT] [--grid OUT.png]
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from ..datasets import TileDataset
from ..errors import InputError
from ..io.outputs import write_json_report
from ..models.card import ClassInfo
from ..preview import outline
from .mix import resample_pair, synthetic_pairs, synthetic_scale

Pair = tuple[np.ndarray, np.ndarray]  # uint8 H×W×3 image, uint8 H×W class ids
ALPHA = 0.45  # label colour over the image in the grids
GAP = 6  # white pixels between grid cells (2 between a cell's two panels)
LEGEND_PX = 18
GRID_PAIRS = 32


def real_crops(real: TileDataset, size: tuple[int, int], count: int, seed: int = 0) -> list[Pair]:
    """`count` crops of `size` from the real tiles: tiles in seeded shuffled rounds (each tile
    once per round), a random position in each."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(real)) for _ in range(math.ceil(count / max(len(real), 1)))])
    h, w = size
    out = []
    for i in order[:count]:
        image, label, tile_id = real[int(i)]
        if label.shape[0] < h or label.shape[1] < w:
            raise InputError(f"real tile {tile_id} is {label.shape[0]}×{label.shape[1]}, smaller than the "
                             f"synthetic tiles ({h}×{w})")
        y, x = int(rng.integers(label.shape[0] - h + 1)), int(rng.integers(label.shape[1] - w + 1))
        out.append((image[y:y + h, x:x + w], label[y:y + h, x:x + w]))
    return out


def summarize(pairs: Sequence[Pair], classes: Sequence[ClassInfo]) -> dict[str, Any]:
    """Per-class pixel frequency (of the pixels with a class id < K), 4-connected objects per
    class (count, per tile, size median and quartiles in pixels, histogram over log2 size
    bins up to the tile area) and per-channel image mean/std (0–255)."""
    k = len(classes)
    pixels = np.zeros(k, np.int64)
    sizes: list[list[int]] = [[] for _ in range(k)]
    moments = np.zeros((2, 3))
    for image, label in pairs:
        pixels += np.bincount(label.ravel(), minlength=256)[:k]
        for c in np.unique(label[label < k]):
            components, _ = ndimage.label(label == c)
            sizes[c] += np.bincount(components.ravel())[1:].tolist()
        rgb = image.reshape(-1, 3).astype(np.float64)
        moments += [rgb.mean(0), (rgb ** 2).mean(0)]
    n = max(len(pairs), 1)
    mean = moments[0] / n
    area = max((label.size for _, label in pairs), default=1)
    bins = 2.0 ** np.arange(max(math.ceil(math.log2(area)), 1) + 1)
    return {
        "pairs": len(pairs),
        "class_frequency": (pixels / max(pixels.sum(), 1)).round(6).tolist(),
        "objects": {c.name: _sizes(sizes[c.id], n, bins) for c in classes},
        "size_bins": bins[:-1].astype(int).tolist(),
        "image": {"mean": mean.round(2).tolist(),
                  "std": np.sqrt(np.maximum(moments[1] / n - mean ** 2, 0)).round(2).tolist()},
    }


def _sizes(sizes: list[int], tiles: int, bins: np.ndarray) -> dict[str, Any]:
    q25, median, q75 = np.percentile(sizes, [25, 50, 75]).tolist() if sizes else (None, None, None)
    return {"count": len(sizes), "per_tile": round(len(sizes) / tiles, 3), "median": median, "q25": q25,
            "q75": q75, "histogram": np.histogram(sizes, bins)[0].tolist()}


def as_trained(real: TileDataset, synthetic_dir: str | Path, limit: int | None = None) -> list[Pair]:
    """(At most `limit`) synthetic pairs as training reads them: brought to the real GSD
    (idgbr.synth.mix)."""
    synth = synthetic_pairs(synthetic_dir, len(real.classes))
    scale = synthetic_scale(synthetic_dir, real)
    pairs = [synth[i][:2] for i in range(min(len(synth), limit or len(synth)))]
    return pairs if scale == 1.0 else [resample_pair(image, label, scale) for image, label in pairs]


def compare(real: TileDataset, synthetic_dir: str | Path, crops: int | None = None, seed: int = 0,
            limit: int | None = None) -> dict[str, Any]:
    """Statistics of (at most `limit`) synthetic pairs as training sees them and of `crops`
    real crops of their size (default: as many crops as pairs)."""
    pairs = as_trained(real, synthetic_dir, limit)
    size = pairs[0][1].shape
    classes = real.classes
    return {"dataset": real.name, "split": real.split, "synthetic": str(synthetic_dir), "tile_size": list(size),
            "classes": [c.name for c in classes],
            "real": summarize(real_crops(real, size, crops or len(pairs), seed), classes),
            "generated": summarize(pairs, classes)}


def format_table(result: dict[str, Any]) -> str:
    """A markdown table (readable as plain text): real vs generated, per class and per channel."""
    real, gen = result["real"], result["generated"]
    rows = [f"{result['dataset']} {result['split']}: {real['pairs']} real crops vs {gen['pairs']} generated pairs "
            f"of {result['tile_size'][0]}×{result['tile_size'][1]} px", "",
            "| class | pixel share real | generated | objects/tile real | generated | median px real | generated "
            "| IQR px real | generated |", "|---|---|---|---|---|---|---|---|---|"]
    for i, name in enumerate(result["classes"]):
        a, b = real["objects"][name], gen["objects"][name]
        rows.append(f"| {name} | {real['class_frequency'][i]:.3f} | {gen['class_frequency'][i]:.3f} "
                    f"| {a['per_tile']:.2f} | {b['per_tile']:.2f} | {_num(a['median'])} | {_num(b['median'])} "
                    f"| {_iqr(a)} | {_iqr(b)} |")
    rows += ["", "| channel | mean real | generated | std real | generated |", "|---|---|---|---|---|"]
    for i, channel in enumerate("RGB"):
        rows.append(f"| {channel} | {real['image']['mean'][i]:.1f} | {gen['image']['mean'][i]:.1f} "
                    f"| {real['image']['std'][i]:.1f} | {gen['image']['std'][i]:.1f} |")
    return "\n".join(rows)


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.0f}"


def _iqr(s: dict[str, Any]) -> str:
    return "–" if s["q25"] is None else f"{s['q25']:.0f}–{s['q75']:.0f}"


def grid_png(pairs: Iterable[Sequence[np.ndarray]], classes: Sequence[ClassInfo], path: str | Path,
             cols: int = 8) -> Path:
    """A PNG grid, one cell per pair: the image | the image with the label in the class colours
    (alpha ALPHA) and the class boundaries in white, and a colour legend below. Cells are
    padded to the largest tile."""
    cells = [_cell(p[0], p[1], classes) for p in pairs]
    if not cells:
        raise InputError("no pairs to draw")
    cols = min(cols, len(cells))
    rows = math.ceil(len(cells) / cols)
    h, w = max(c.shape[0] for c in cells), max(c.shape[1] for c in cells)
    grid = np.full((rows * (h + GAP) - GAP + LEGEND_PX, cols * (w + GAP) - GAP, 3), 255, np.uint8)
    for i, cell in enumerate(cells):
        y, x = (i // cols) * (h + GAP), (i % cols) * (w + GAP)
        grid[y:y + cell.shape[0], x:x + cell.shape[1]] = cell
    out = Image.fromarray(grid)
    draw, x = ImageDraw.Draw(out), 0
    for c in classes:
        draw.rectangle((x, grid.shape[0] - LEGEND_PX + 3, x + 12, grid.shape[0] - 3), fill=c.rgba()[:3])
        draw.text((x + 16, grid.shape[0] - LEGEND_PX + 3), c.name, fill=(0, 0, 0))
        x += 22 + 7 * len(c.name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return path


def _cell(image: np.ndarray, label: np.ndarray, classes: Sequence[ClassInfo]) -> np.ndarray:
    lut = np.zeros((256, 3), np.float32)
    for c in classes:
        lut[c.id] = c.rgba()[:3]
    known = (label < len(classes))[..., None]
    overlay = np.where(known, (1 - ALPHA) * image + ALPHA * lut[label], image).astype(np.uint8)
    overlay[outline(label, 255)] = 255
    return np.concatenate([image, np.full((label.shape[0], 2, 3), 255, np.uint8), overlay], axis=1)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `stats` to the `idgbr synth` sub-commands."""
    p = sub.add_parser("stats", help="label and image statistics of generated pairs vs real tiles",
                       description="Compare a generated folder with real tiles cropped to its tile size: per-class "
                                   "pixel share, object counts and sizes, image mean/std; optionally draw grids.")
    p.add_argument("--synthetic", required=True, type=Path, help="folder written by `idgbr synth sample`")
    p.add_argument("--dataset", required=True, help="registered dataset of idgbr.datasets to compare with")
    p.add_argument("--split", default="train", choices=["train", "val"], help="its split (train)")
    p.add_argument("--limit", type=int, help="at most this many generated pairs (and as many real crops)")
    p.add_argument("--seed", type=int, default=0, help="seed of the real crops (0)")
    p.add_argument("--json", type=Path, help="write the statistics as JSON here")
    p.add_argument("--grid", type=Path, help=f"PNG grid of the first {GRID_PAIRS} generated pairs")
    p.add_argument("--real-grid", type=Path, help=f"PNG grid of {GRID_PAIRS} real crops, for comparison")
    p.set_defaults(func=run_stats)


def run_stats(args: argparse.Namespace) -> int:
    from ..datasets import load_dataset

    if args.limit is not None and args.limit < 1:
        raise InputError("--limit must be at least 1")
    real = load_dataset(args.dataset, args.split)
    result = compare(real, args.synthetic, seed=args.seed, limit=args.limit)
    print(format_table(result))
    if args.json:
        write_json_report(args.json, result)
    if args.grid:
        print(f"grid → {grid_png(as_trained(real, args.synthetic, GRID_PAIRS), real.classes, args.grid)}")
    if args.real_grid:
        crops = real_crops(real, tuple(result["tile_size"]), GRID_PAIRS, args.seed)
        print(f"real grid → {grid_png(crops, real.classes, args.real_grid)}")
    return 0
