"""`idgbr data build`: turn a shared dataset into refiner training tiles — image, ground truth
and coarse maps from k-fold predictions and from `idgbr.coarsen` recipes — split by place with
the splits of idgbr.datasets, with a manifest a training loader can trust.

Folder layout (all tiles PNG, named by tile id; ids may contain '/', e.g. buildings'
`area1/OAM-x-y-z`):

    <out>/manifest.json
    <out>/<split>/images/<id>.png            RGB uint8
    <out>/<split>/labels/<id>.png            class ids 0..K-1 (uint8, single band)
    <out>/<split>/coarse/<source>/<id>.png   class ids; source = "kfold" or a recipe name
    <out>/mosaics/<split>/<area>_z19-<x>-<y>/  (buildings, --mosaics) image.tif (EPSG:3857),
        buildings.gpkg, labels.tif and coarse-<source>.tif on the image grid

manifest.json: dataset, classes, seed, coarse sources (what each is), and per split the tiles
({id, group, gsd_m, image, label, coarse: {source: path}}, paths relative to <out>) and the
scores of each coarse source against the labels (mIoU, boundary F@3, WFm band 3).
"""
from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from PIL import Image

from ..coarsen import RECIPES, coarsen, tile_rng
from ..datasets import SPLITS, TileDataset, load_dataset
from ..errors import InputError
from ..evaluate import evaluate_pairs
from ..xyz import CHILDREN_PER_SIDE, CHILD_ZOOM, TILE_PX, build_xyz_mosaic, complete_z19_parents

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
KFOLD_SOURCE = "kfold"
DEFAULT_RECIPES = {
    "buildings": ("buildings-osm", "cascadepsp"),
    "landcover": ("landcover",),
    "farmland": ("blocky", "cascadepsp"),
    "roads": ("roads",),
}
"""The recipes whose errors look like each dataset's real coarse layers."""


def build_training_data(dataset: str, out: str | Path, *, kfold_dir: str | Path | None = None,
                        recipes: Sequence[str] | None = None, seed: int = 0, root: str | Path | None = None,
                        mosaics: bool = False, report: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Write the training tiles of `dataset` to `out` (which must not exist) and return the
    manifest. kfold_dir: an `idgbr predict coarse --kfold` output for this dataset."""
    out = Path(out)
    if out.exists():
        raise InputError(f"{out} already exists; pick a new folder")
    recipes = list(DEFAULT_RECIPES.get(dataset, ("mixed",)) if recipes is None else recipes)
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        raise InputError(f"unknown coarsening recipes {unknown} (known: {', '.join(RECIPES)})")
    kfold = Path(kfold_dir) if kfold_dir is not None else None
    if kfold is not None and not (kfold / "kfold.json").is_file():
        raise InputError(f"{kfold} is not a k-fold prediction folder (no kfold.json)")
    splits = {s: load_dataset(dataset, s, root) for s in SPLITS}
    sources: dict[str, Any] = {r: {"kind": "recipe", "description": RECIPES[r].description} for r in recipes}
    if kfold is not None:
        info = json.loads((kfold / "kfold.json").read_text())
        if info.get("dataset") != dataset:
            raise InputError(f"{kfold} holds k-fold predictions of {info.get('dataset')!r}, not {dataset!r}")
        sources[KFOLD_SOURCE] = {"kind": "kfold", "folder": str(kfold.resolve()), "k": info["k"],
                                 "description": "coarse segmentor predictions; each train tile by a model "
                                                "trained without its fold, val tiles by the fold-0 model"}
    stage = out.with_name(f".{out.name}.building")
    shutil.rmtree(stage, ignore_errors=True)
    manifest: dict[str, Any] = {"dataset": dataset, "classes": [c.__dict__ for c in splits["train"].classes],
                                "seed": seed, "coarse_sources": sources, "splits": {}}
    for split, ds in splits.items():
        report(f"{split}: writing {len(ds)} tiles")
        manifest["splits"][split] = _write_split(ds, stage, split, recipes, kfold, seed)
    if mosaics:
        if dataset != "buildings":
            raise InputError("georeferenced mosaics exist only for the buildings XYZ tiles")
        manifest["mosaics"] = _write_mosaics(splits, stage, list(sources), report)
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    stage.rename(out)
    return manifest


def _write_split(ds: TileDataset, out: Path, split: str, recipes: list[str], kfold: Path | None,
                 seed: int) -> dict[str, Any]:
    k = len(ds.classes)
    tiles, pairs = [], {s: [] for s in recipes + ([KFOLD_SOURCE] if kfold is not None else [])}
    for i in range(len(ds)):
        image, label, tile_id = ds[i]
        rec = ds.tiles[i]
        entry = {"id": tile_id, "group": rec.group, "gsd_m": round(rec.gsd_m, 4),
                 "image": _save(out, f"{split}/images/{tile_id}.png", image),
                 "label": _save(out, f"{split}/labels/{tile_id}.png", label), "coarse": {}}
        for recipe in recipes:
            coarse = coarsen(label, recipe, tile_rng(seed, f"{recipe}/{tile_id}"), k)
            entry["coarse"][recipe] = _save(out, f"{split}/coarse/{recipe}/{tile_id}.png", coarse)
            pairs[recipe].append((coarse, label))
        if kfold is not None:
            src = kfold / split / f"{tile_id}.png"
            if not src.is_file():
                raise InputError(f"k-fold folder {kfold} has no prediction for {split} tile {tile_id}")
            with Image.open(src) as im:
                coarse = np.asarray(im)
            entry["coarse"][KFOLD_SOURCE] = _save(out, f"{split}/coarse/{KFOLD_SOURCE}/{tile_id}.png", coarse)
            pairs[KFOLD_SOURCE].append((coarse, label))
        tiles.append(entry)
    scores = {}
    for source, p in pairs.items():
        r = evaluate_pairs(p, k)
        scores[source] = {"miou": r["miou"], "boundary_f3": r["boundary_f"]["3"], "wfm_band3": r["wfm_band3"]}
    return {"tiles": tiles, "coarse_scores": scores}


def _save(root: Path, rel: str, array: np.ndarray) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return rel


def _write_mosaics(splits: dict[str, TileDataset], out: Path, sources: list[str],
                   report: Callable[[str], None]) -> list[dict[str, Any]]:
    """One 1024² georeferenced scene per complete z19 tile, with its labels and coarse maps
    assembled from the 16 z21 tiles already written."""
    split_of = {t.tile_id: s for s, ds in splits.items() for t in ds.tiles}
    area_dirs = sorted({t.image.parent.parent for ds in splits.values() for t in ds.tiles})
    written = []
    for area_dir in area_dirs:
        for x19, y19 in complete_z19_parents(area_dir):
            ids = [[f"{area_dir.name}/OAM-{CHILDREN_PER_SIDE * x19 + c}-{CHILDREN_PER_SIDE * y19 + r}-{CHILD_ZOOM}"
                    for c in range(CHILDREN_PER_SIDE)] for r in range(CHILDREN_PER_SIDE)]
            split = {split_of.get(i) for row in ids for i in row}
            if len(split) != 1 or None in split:
                continue  # children outside both splits (kept aside) or unlabelled
            rel = f"mosaics/{split.pop()}/{area_dir.name}_z19-{x19}-{y19}"
            folder = out / rel
            folder.mkdir(parents=True)
            image = build_xyz_mosaic(area_dir, x19, y19, folder / "image.tif", folder / "buildings.gpkg")
            layers = {"labels": "labels"} | {f"coarse-{s}": f"coarse/{s}" for s in sources}
            split_name = rel.split("/")[1]
            for name, sub in layers.items():
                _assemble(image, folder / f"{name}.tif", [[out / split_name / sub / f"{i}.png" for i in row]
                                                          for row in ids])
            written.append({"folder": rel, "split": split_name, "z19": [x19, y19],
                            "layers": ["image.tif", "buildings.gpkg"] + [f"{n}.tif" for n in layers]})
    report(f"mosaics: {len(written)} georeferenced z19 scenes")
    return written


def _assemble(image_tif: Path, out_tif: Path, tiles: list[list[Path]]) -> None:
    """A class-id GeoTIFF on the mosaic's grid from its 4×4 grid of z21 PNG tiles."""
    n = len(tiles)
    data = np.zeros((n * TILE_PX, n * TILE_PX), np.uint8)
    for r, row in enumerate(tiles):
        for c, path in enumerate(row):
            with Image.open(path) as im:
                data[r * TILE_PX:(r + 1) * TILE_PX, c * TILE_PX:(c + 1) * TILE_PX] = np.asarray(im)
    with rasterio.open(image_tif) as src:
        profile = dict(src.profile, count=1, dtype="uint8", photometric="minisblack")
    with rasterio.open(out_tif, "w", **profile) as dst:
        dst.write(data, 1)
