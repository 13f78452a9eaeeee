"""`idgbr coarsen`: write a coarse copy of a folder of label tiles (training inputs and benchmark
coarse layers). PNG tiles come out as PNG, GeoTIFF tiles as GeoTIFF with the same profile and
georeferencing, under the same file names. A tile's randomness depends only on --seed and its
file name, so any subset of tiles, in any order, gives the same files."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.outputs import OutputFolder

SUFFIXES = (".png", ".tif", ".tiff")
Writer = Callable[[Path, np.ndarray], None]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("coarsen", help="make coarse label tiles with realistic errors",
                       description="Degrade every label tile of --labels with a recipe of realistic "
                                   "errors and write it, under the same name, to --out.")
    p.add_argument("--labels", type=Path, help="folder of label tiles (single-band PNG or GeoTIFF class ids)")
    p.add_argument("--out", type=Path, help="output folder (created)")
    p.add_argument("--recipe", default="mixed", help="error recipe (default mixed; see --list)")
    p.add_argument("--seed", type=int, default=0, help="run seed (0)")
    p.add_argument("--num-classes", type=int, help="number of classes (default: largest id in the tiles + 1)")
    p.add_argument("--binary-255", action="store_true",
                   help="tiles are 0/255 masks: read 255 as class 1 and write class 1 back as 255")
    p.add_argument("--ignore", type=int, help="label value of unlabelled pixels, kept as is (default: a "
                                              "GeoTIFF's nodata unless it is 0, which is read as class 0)")
    p.add_argument("--overwrite", action="store_true", help="replace tiles already in --out")
    p.add_argument("--list", action="store_true", help="list the recipes and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..coarsen import RECIPES, agreement_iou, coarsen, list_recipes, tile_rng

    if args.list:
        for name, text in list_recipes().items():
            print(f"{name:<14} {text}")
        return 0
    if args.labels is None or args.out is None:
        raise InputError("coarsen needs --labels and --out (or --list)")
    if args.recipe not in RECIPES:
        raise InputError(f"unknown recipe {args.recipe!r} (known: {', '.join(RECIPES)})")
    files = sorted(f for f in args.labels.iterdir() if f.suffix.lower() in SUFFIXES) if args.labels.is_dir() else []
    if not files:
        raise InputError(f"{args.labels}: no PNG or GeoTIFF label tiles found")
    if args.out.resolve() == args.labels.resolve():
        raise InputError("--out must not be the --labels folder")
    k = 2 if args.binary_255 else args.num_classes or _infer_classes(files, args.ignore)
    ious = []
    # Tiles are staged and moved into --out only when all of them are written.
    with OutputFolder(args.out, tuple(f.name for f in files), overwrite=args.overwrite) as out:
        for f in files:
            labels, ignore, write = _read(f, args.ignore, args.binary_255)
            try:
                coarse = coarsen(labels, args.recipe, tile_rng(args.seed, f.name), k, ignore)
            except InputError as e:
                raise InputError(f"{f}: {e}") from e
            write(out.path(f.name), coarse)
            labelled = labels != ignore if ignore is not None else slice(None)
            ious.append(agreement_iou(labels[labelled], coarse[labelled], k))
    scored = [v for v in ious if not np.isnan(v)]
    mean = f"{np.mean(scored):.3f}" if scored else "n/a (no foreground class in any tile)"
    print(f"coarsened {len(files)} tiles with {args.recipe!r} (seed {args.seed}, {k} classes) → {args.out}; "
          f"mean IoU against the labels {mean}")
    return 0


def _infer_classes(files: list[Path], ignore: int | None) -> int:
    """Largest class id over all tiles + 1: one scheme for the whole folder, whatever a tile holds."""
    top, seen = 0, set()
    for f in files:
        labels, tile_ignore, _ = _read(f, ignore, False)
        values = np.unique(labels)
        seen.update(values.tolist())
        values = values[values != tile_ignore] if tile_ignore is not None else values
        top = max(top, int(values.max()) if values.size else 0)
    if seen <= {0, 255} and 255 in seen:
        raise InputError("the tiles hold only 0 and 255: for binary masks pass --binary-255 (255 → class 1)")
    return max(top + 1, 2)


def _read(path: Path, ignore: int | None, binary_255: bool) -> tuple[np.ndarray, int | None, Writer]:
    """(labels, ignore value, writer) for one tile; the writer saves a coarse map like the input."""
    if path.suffix.lower() == ".png":
        from PIL import Image

        with Image.open(path) as im:
            if im.mode not in ("L", "P"):
                raise InputError(f"{path}: a label tile must be single-band (L or P), this is {im.mode}")
            labels, palette = np.asarray(im), im.getpalette() if im.mode == "P" else None

        def write(out: Path, coarse: np.ndarray) -> None:
            im = Image.fromarray(_encode(coarse, binary_255))
            if palette is not None:
                im.putpalette(palette)
            im.save(out)
    else:
        import rasterio

        with rasterio.open(path) as ds:
            if ds.count != 1 or not np.issubdtype(np.dtype(ds.dtypes[0]), np.integer):
                raise InputError(f"{path}: a label tile must be one band of integers")
            labels, profile = ds.read(1), ds.profile
        if ignore is None and profile.get("nodata"):
            ignore = int(profile["nodata"])

        def write(out: Path, coarse: np.ndarray) -> None:
            with rasterio.open(out, "w", **profile) as dst:
                dst.write(_encode(coarse, binary_255).astype(profile["dtype"]), 1)
    if binary_255:
        if ignore == 255:
            raise InputError(f"{path}: with --binary-255, 255 is the foreground and cannot be the ignore value")
        extra = np.setdiff1d(np.unique(labels), [0, 255] + ([ignore] if ignore is not None else []))
        if extra.size:
            raise InputError(f"{path}: --binary-255 tiles must hold only 0 and 255, found {extra[:5].tolist()}")
        labels = np.where(labels == 255, 1, labels)
    return labels, ignore, write


def _encode(coarse: np.ndarray, binary_255: bool) -> np.ndarray:
    return np.where(coarse == 1, np.uint8(255), coarse) if binary_255 else coarse
