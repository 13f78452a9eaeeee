"""`idgbr benchmark quality`: every refiner of a list on the same coarse tiles of a dataset
split, scored with `idgbr.evaluate` (region, boundary and repair metrics) and timed.

All refiners see identical inputs, or row differences would partly be coarse-map differences:
the coarse tiles are made once, before any refiner runs, either by a coarsening recipe (each
tile seeded by (seed, tile id) only, so the same command always gives the same coarse maps) or
read from a folder of coarse tiles matched by tile id or file stem. Speed is the refiner's
`predict` time only (no loading, coarsening or scoring), after one untimed warm-up tile.
`--figure` adds a before/after PNG of the best refiner (`idgbr.benchmarks.figure`).
"""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from ..errors import InputError
from ..io.outputs import write_json_report

if TYPE_CHECKING:  # the heavy modules are imported when a benchmark runs, not when the CLI starts
    from ..datasets import TileDataset
    from ..models import ClassInfo, Refiner, TileBatch

COLUMNS = (  # table header, row key
    ("mIoU", "miou"), ("WFm(3px B)", "wfm_band3"), ("WFm strict", "wfm_band3_strict"),
    ("BF@1", "boundary_f1"), ("BF@3", "boundary_f3"), ("BIoU@3", "boundary_iou3"),
    ("repair IoU", "repair_iou"), ("preserve IoU", "preserve_iou"),
)


@dataclass(frozen=True)
class Tile:
    """One benchmark input: image uint8 (H, W, 3), ground truth and coarse map uint8 (H, W)."""

    tile_id: str
    image: np.ndarray
    gt: np.ndarray
    coarse: np.ndarray


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quality", help="score refiners side by side on the same coarse tiles",
                       description="Run every refiner on the same coarse tiles of a dataset split and "
                                   "print one row of region, boundary and repair metrics and speed each.")
    p.add_argument("--dataset", required=True, help="buildings, landcover, farmland or roads")
    p.add_argument("--split", default="val", help="train or val (default val)")
    p.add_argument("--coarse", required=True, metavar="RECIPE_OR_DIR",
                   help="a folder of coarse tiles named by tile id or file stem (0/255 masks are read "
                        "as 0/1 for 2 classes) if one exists at that path, else a coarsening recipe "
                        "(`idgbr coarsen --list`)")
    p.add_argument("--refiners", default="identity,crf,guided,morph",
                   help="comma-separated model names or folders (default identity,crf,guided,morph); "
                        "NAME@key=value@… passes refiner options, e.g. MODEL@steps=25@sampler=ddim")
    p.add_argument("--limit", type=int, help="use N tiles spread evenly over the split (default all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the coarsening recipe (0)")
    p.add_argument("--batch-size", type=int, default=8, help="tiles per predict call (8)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda, for network refiners")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the rows as JSON here")
    p.add_argument("--figure", type=Path, metavar="PNG",
                   help="also draw image | ground truth | coarse | best refiner (by WFm) on the crop "
                        "where the coarse map is most wrong near boundaries")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = benchmark_quality(args.dataset, args.split, args.coarse, args.refiners.split(","),
                             limit=args.limit, seed=args.seed, batch_size=args.batch_size, device=args.device,
                             figure=args.figure)
    print(format_table(rows))
    if args.json:
        print(f"rows written to {write_json_report(args.json, rows)}")
    return 0


def benchmark_quality(dataset: str, split: str, coarse: str | Path, refiners: list[str], limit: int | None = None,
                      seed: int = 0, batch_size: int = 8, device: str = "auto", progress: bool = True,
                      root: str | Path | None = None, figure: Path | None = None) -> list[dict[str, Any]]:
    """One JSON-ready row per refiner (see `_row`), and the before/after PNG `figure` if given.
    Bad names raise InputError before any work."""
    from ..datasets import load_dataset
    from ..models import load_refiner

    names = [n.strip() for n in refiners if n.strip()]
    if not names or len(set(names)) != len(names):
        raise InputError(f"--refiners must name at least one refiner, each once; got {refiners}")
    if batch_size < 1 or (limit is not None and limit < 1):
        raise InputError("--batch-size and --limit must be at least 1")
    ds = load_dataset(dataset, split, root)
    if not len(ds):
        raise InputError(f"dataset {dataset}: the {split} split has no tiles")
    num_classes = len(ds.classes)
    loaded: dict[str, Refiner] = {}
    for name in names:
        model, options = refiner_spec(name)
        loaded[name] = load_refiner(model, device=device, **options)
        loaded[name].bind_classes(num_classes)
    tiles = load_tiles(ds, str(coarse), seed, limit, progress)
    mpx = sum(t.gt.size for t in tiles) / 1e6
    meta = {"dataset": dataset, "split": split, "coarse": str(coarse), "seed": seed, "tiles": len(tiles),
            "megapixels": round(mpx, 3), "date": date.today().isoformat()}
    rows = []
    for name, refiner in loaded.items():
        metrics, seconds = score_refiner(refiner, tiles, num_classes, batch_size, name if progress else None)
        rows.append(_row(name, refiner, mpx, metrics, seconds))
    if figure is not None:
        draw_figure(figure, tiles, rows, loaded, ds.classes, str(coarse))
    machine = machine_description(device if any(row["nfe_per_tile"] != 0 for row in rows) else "cpu")
    return [{**meta, "machine": machine, **row} for row in rows]


def refiner_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """`NAME[@key=value…]` → (model name or folder, refiner options): the same model can then
    be listed at several settings, e.g. `MODEL@steps=25@sampler=ddim` (numbers are parsed)."""
    name, *pairs = spec.split("@")
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"refiner {spec!r}: options are written @key=value")
        options[key] = _number(value)
    return name, options


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def draw_figure(path: Path, tiles: list[Tile], rows: list[dict[str, Any]], refiners: dict[str, Refiner],
                classes: list[ClassInfo], coarse: str) -> None:
    """The figure of `idgbr.benchmarks.figure` for the refiner with the best WFm(3px B)
    (identity only when it is the only one), on a crop zoomed up to 2× for small tiles."""
    from .figure import PANEL_PX, pick_crop, save_figure

    candidates = [r for r in rows if r["refiner"] != "identity"] or rows
    best = max(candidates, key=lambda r: -1.0 if r["wfm_band3"] is None else r["wfm_band3"])["refiner"]
    side = min(min(t.gt.shape) for t in tiles) // 2
    i, window = pick_crop([(t.gt, t.coarse) for t in tiles], min(side, PANEL_PX))
    tile = tiles[i]
    refined = np.asarray(refiners[best].predict(_batch([tile]))).argmax(1)[0].astype(np.uint8)
    model, *options = best.split("@")  # a model folder is titled by its name, not its path
    panels = [(tile.tile_id, None), ("ground truth", tile.gt), (f"coarse ({Path(coarse).name})", tile.coarse),
              ("@".join([Path(model).name, *options]), refined)]
    save_figure(path, tile.image, panels, classes, window)


def load_tiles(ds: TileDataset, coarse: str, seed: int, limit: int | None = None, progress: bool = True) -> list[Tile]:
    """The tiles of `ds` (all, or `limit` spread evenly so every place of the split is in)
    with their coarse maps, from a recipe or a folder."""
    from ..coarsen import RECIPES, coarsen, tile_rng

    folder = Path(coarse)
    if not folder.is_dir() and coarse not in RECIPES:
        raise InputError(f"--coarse {coarse!r} is neither a folder nor a recipe (known: {', '.join(RECIPES)})")
    ds = ds.spread(limit)
    files = coarse_files(folder, ds.tile_ids) if folder.is_dir() else {}
    num_classes = len(ds.classes)
    tiles = []
    for i in tqdm(range(len(ds)), desc="tiles", unit="tile", disable=not progress):
        image, gt, tile_id = ds[i]
        if folder.is_dir():
            c = read_coarse(files[tile_id], num_classes, gt.shape)
        else:
            c = coarsen(gt, coarse, tile_rng(seed, tile_id), num_classes, gsd_m=ds.tiles[i].gsd_m)
        tiles.append(Tile(tile_id, image, gt, c))
    return tiles


def coarse_files(folder: Path, tile_ids: list[str]) -> dict[str, Path]:
    """{tile id: file} for PNG/GeoTIFF tiles under `folder` whose path without suffix is the
    tile id, or, failing that, whose stem is the tile id's last part (ids like `area2/OAM-…`
    also match a flat folder). Every tile must have exactly one."""
    from ..evaluate import TILE_EXTENSIONS

    files = [f for f in sorted(folder.rglob("*")) if f.suffix.lower() in TILE_EXTENSIONS and f.is_file()]
    by_path = {f.relative_to(folder).with_suffix("").as_posix(): f for f in files}
    by_stem: dict[str, list[Path]] = {}
    for f in files:
        by_stem.setdefault(f.stem, []).append(f)
    found, missing = {}, []
    for tid in tile_ids:
        candidates = [by_path[tid]] if tid in by_path else by_stem.get(tid.rsplit("/", 1)[-1], [])
        if len(candidates) > 1:
            raise InputError(f"{folder}: tile {tid} matches several files ({', '.join(map(str, candidates))})")
        if candidates:
            found[tid] = candidates[0]
        else:
            missing.append(tid)
    if missing:
        raise InputError(f"{folder}: no coarse tile for {len(missing)} of {len(tile_ids)} tiles "
                         f"(e.g. {', '.join(missing[:3])}); name them by tile id or file stem")
    return found


def read_coarse(path: Path, num_classes: int, shape: tuple[int, ...]) -> np.ndarray:
    """A coarse tile as class ids; for 2 classes a 0/255 mask (what `idgbr coarsen
    --binary-255` writes) is read as 0/1."""
    from ..evaluate import read_label_map

    a = read_label_map(path)
    if num_classes == 2 and np.isin(a, (0, 255)).all():
        a = (a == 255).astype(np.uint8)
    if a.shape != shape:
        raise InputError(f"{path} is {a.shape[0]}×{a.shape[1]} but its ground truth is {shape[0]}×{shape[1]}")
    if a.min() < 0 or a.max() >= num_classes:
        raise InputError(f"{path} holds class ids {a.min()}..{a.max()}, outside 0..{num_classes - 1}")
    return a.astype(np.uint8)


def score_refiner(refiner: Refiner, tiles: list[Tile], num_classes: int, batch_size: int,
                  label: str | None) -> tuple[dict[str, Any], float]:
    """(evaluation of the refined maps against the ground truth, with the coarse maps;
    seconds spent in `predict`). `label` names the progress bar; None hides it."""
    from ..evaluate import Evaluator

    ev = Evaluator(num_classes)
    refiner.predict(_batch(tiles[:1]))  # warm-up: lazy initialisation is not speed
    seconds = 0.0
    with tqdm(total=len(tiles), desc=label, unit="tile", disable=label is None) as bar:
        for group in _batches(tiles, batch_size):
            batch = _batch(group)
            start = time.perf_counter()
            probs = refiner.predict(batch)
            seconds += time.perf_counter() - start
            for tile, pred in zip(group, np.asarray(probs).argmax(1).astype(np.uint8)):
                ev.update(pred, tile.gt, tile.coarse)
            bar.update(len(group))
    return ev.result(), seconds


def _batches(tiles: list[Tile], size: int) -> Iterator[list[Tile]]:
    """Runs of at most `size` consecutive tiles of one shape (a batch is one array)."""
    group: list[Tile] = []
    for t in tiles:
        if group and (len(group) == size or t.gt.shape != group[0].gt.shape):
            yield group
            group = []
        group.append(t)
    if group:
        yield group


def _batch(group: list[Tile]) -> TileBatch:
    from ..models import TileBatch

    image = np.stack([t.image for t in group]).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    coarse = np.stack([t.coarse for t in group])
    return TileBatch(image, coarse, np.ones(coarse.shape, bool))


def nfe_per_tile(refiner: Refiner) -> int | None:
    """Network evaluations per tile: the refiner's own `nfe_per_tile`, 0 for the training-free
    refiners, None (unknown) otherwise."""
    from ..models.classical import ClassicalRefiner
    from ..models.identity import IdentityRefiner

    if hasattr(refiner, "nfe_per_tile"):
        return refiner.nfe_per_tile
    return 0 if isinstance(refiner, (ClassicalRefiner, IdentityRefiner)) else None


def _row(name: str, refiner: Refiner, megapixels: float, metrics: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The table's numbers (fractions), the speed, and the whole evaluation under `metrics`."""
    return {
        "refiner": name, "nfe_per_tile": nfe_per_tile(refiner),
        "miou": metrics["miou"], "wfm_band3": metrics["wfm_band3"], "wfm_band3_strict": metrics["wfm_band3_strict"],
        "boundary_f1": metrics["boundary_f"]["1"], "boundary_f3": metrics["boundary_f"]["3"],
        "boundary_iou3": metrics["boundary_iou"]["3"],
        "repair_iou": metrics["repair_iou"], "preserve_iou": metrics["preserve_iou"],
        "predict_s": round(seconds, 3), "s_per_mpx": round(seconds / megapixels, 4), "metrics": metrics,
    }


def machine_description(device: str = "cpu") -> dict[str, Any]:
    """What the speed column was measured on: CPU model, cores usable by this process, the
    load averages (1, 5, 15 min; on a shared machine other work slows every row), and the GPU
    when a network refiner ran on one."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out: dict[str, Any] = {"cpu": cpu, "cores": len(os.sched_getaffinity(0)),
                           "load_average": [round(x, 2) for x in os.getloadavg()], "device": "cpu"}
    if device != "cpu":
        import torch

        from ..device import resolve_device

        out["device"] = resolve_device(device)
        if out["device"].startswith("cuda"):
            out["gpu"] = torch.cuda.get_device_name(out["device"])
    return out


def format_table(rows: list[dict[str, Any]]) -> str:
    """A heading line and a Markdown table in percent (what docs/benchmarks.md holds)."""
    if not rows:
        return "no refiners"
    r0, m = rows[0], rows[0]["machine"]
    where = (f"{m['cpu']}, {m['cores']} cores" + (f", {m['gpu']}" if "gpu" in m else "")
             + f", load average {'/'.join(map(str, m['load_average']))}")
    lines = [f"{r0['dataset']} {r0['split']}: {r0['tiles']} tiles ({r0['megapixels']:.1f} MP), coarse "
             f"{r0['coarse']} (seed {r0['seed']}); {where}; {r0['date']}", "",
             "| refiner | " + " | ".join(h for h, _ in COLUMNS) + " | NFE/tile | s/MP |",
             "|---" * (len(COLUMNS) + 3) + "|"]
    for r in rows:
        cells = ["n/a" if r[k] is None else f"{100 * r[k]:.2f}" for _, k in COLUMNS]
        nfe = "-" if r["nfe_per_tile"] is None else str(r["nfe_per_tile"])
        lines.append(f"| {r['refiner']} | " + " | ".join(cells) + f" | {nfe} | {r['s_per_mpx']:.3f} |")
    return "\n".join(lines)
