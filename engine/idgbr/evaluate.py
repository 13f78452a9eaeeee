"""Score refined maps against ground truth: region, boundary and repair metrics in one pass.

In memory (the benchmark):

    from idgbr.evaluate import evaluate_pairs
    result = evaluate_pairs(((pred, gt) for ...), num_classes=2)          # or (pred, gt, coarse)

From files (`idgbr evaluate`): `evaluate_paths(pred, gt, coarse)` where each is a folder of
class-index PNG/GeoTIFF tiles matched by file stem, or a single GeoTIFF read in 512² windows.
Binary masks stored as 0/255 (as in the shared data) are read as 0/1 when `binary_255` says so
("auto": any source whose values are all in {0, 255}; logged).

The result is JSON-ready: fractions in [0, 1], NaN as None. Keys: num_tiles, num_classes,
ignore_index, miou, mf1, oa, kappa, fwiou, wfm_band3, wfm_band3_strict, boundary_f {"1","2",
"3","5"}, boundary_iou {"1","3","5"}, per_class [{class_id, iou, f1, boundary_f3,
boundary_iou3}], and with coarse maps repair_iou, preserve_iou.
"""
from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import InputError
from .metrics import BoundaryMetrics, ConfusionMatrix, RepairPreservation, WFmBand
from .metrics.confusion import check_class_ids

log = logging.getLogger(__name__)

TILE_EXTENSIONS = (".png", ".tif", ".tiff")
WINDOW = 512  # a single GeoTIFF is scored as windows of this size (WFm is a per-tile average)
BINARY_255_MODES = ("auto", "on", "off")


class Evaluator:
    """Accumulates every metric over tiles. `update` raises ValueError on bad tiles."""

    def __init__(self, num_classes: int, ignore_index: int | None = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = ConfusionMatrix(num_classes, ignore_index)
        self.wfm = WFmBand(size=3)
        self.boundary = BoundaryMetrics(num_classes, ignore_index=ignore_index)
        self.repair = RepairPreservation(num_classes, ignore_index)
        self.num_tiles = 0
        self._with_coarse: bool | None = None

    def update(self, pred: np.ndarray, gt: np.ndarray, coarse: np.ndarray | None = None) -> None:
        if gt.ndim != 2:
            raise ValueError(f"ground truth is {_shape(gt)}; class-index maps are 2-D")
        for name, m in (("prediction", pred), ("coarse map", coarse)):
            if m is not None and m.shape != gt.shape:
                raise ValueError(f"{name} is {_shape(m)} but ground truth is {_shape(gt)}")
        if self._with_coarse is None:
            self._with_coarse = coarse is not None
        elif self._with_coarse != (coarse is not None):
            raise ValueError("give a coarse map for every tile or for none")
        if coarse is not None:
            check_class_ids("coarse map", coarse, self.num_classes)
        self.confusion.update(pred, gt)  # checks the class ids of gt and pred first
        if coarse is not None:
            self.repair.update(pred, gt, coarse)
        self.wfm.update(pred, gt, None if self.ignore_index is None else gt == self.ignore_index)
        self.boundary.update(pred, gt)
        self.num_tiles += 1

    def result(self) -> dict:
        s = self.confusion.scores()
        wfm = self.wfm.compute()
        b = self.boundary.compute()
        out = {
            "num_tiles": self.num_tiles,
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "miou": s.miou, "mf1": s.mf1, "oa": s.oa, "kappa": s.kappa, "fwiou": s.fwiou,
            "wfm_band3": wfm["paper"],
            "wfm_band3_strict": wfm["strict"],
            "boundary_f": {str(d): v for d, v in b["f"].items()},
            "boundary_iou": {str(d): v for d, v in b["iou"].items()},
            "per_class": [
                {"class_id": c, "iou": s.iou[c], "f1": s.f1[c],
                 "boundary_f3": b["f_per_class"][3][c], "boundary_iou3": b["iou_per_class"][3][c]}
                for c in range(self.num_classes)
            ],
        }
        if self._with_coarse:
            out.update(self.repair.compute())
        return _json_ready(out)


def evaluate_pairs(pairs: Iterable[Sequence[np.ndarray]], num_classes: int,
                   ignore_index: int | None = None) -> dict:
    """Score (pred, gt) or (pred, gt, coarse) class-index arrays; see the module doc for keys."""
    ev = Evaluator(num_classes, ignore_index)
    for i, pair in enumerate(pairs):
        try:
            ev.update(*pair)
        except ValueError as e:
            raise InputError(f"pair {i}: {e}") from e
    return ev.result()


def evaluate_paths(pred: str | Path, gt: str | Path, coarse: str | Path | None = None,
                   num_classes: int | None = None, ignore_index: int | None = None,
                   binary_255: str = "auto") -> dict:
    """Score folders of tiles (matched by stem) or single GeoTIFFs; see the module doc.

    Without `num_classes`, it is the largest class id found (ignore index aside) plus one, at
    least 2. Raises InputError naming the file on missing or unmatched tiles, shape mismatches
    and class ids ≥ num_classes.
    """
    if binary_255 not in BINARY_255_MODES:
        raise InputError(f"binary_255 must be one of {', '.join(BINARY_255_MODES)}")
    sources = {"prediction": Path(pred), "ground truth": Path(gt)}
    if coarse is not None:
        sources["coarse map"] = Path(coarse)
    tiles = _match_tiles(sources)
    values = _values_by_source(sources, tiles)
    binary = {name: _is_binary_255(name, v, binary_255, ignore_index) for name, v in values.items()}
    if num_classes is None:
        ids = set().union(*(v if not binary[n] else {0, 1} for n, v in values.items())) - {ignore_index}
        num_classes = max(2, max(ids, default=0) + 1)
        log.info("%d classes (largest class id found + 1; set --num-classes to override)", num_classes)
    ev = Evaluator(num_classes, ignore_index)
    for stem, arrays in _read_tiles(sources, tiles):
        maps = [(a == 255).astype(np.uint8) if binary[n] else a for n, a in arrays.items()]
        try:
            ev.update(*maps)
        except ValueError as e:
            raise InputError(f"{stem}: {e}") from e
    return ev.result()


def _match_tiles(sources: dict[str, Path]) -> list[tuple[str, dict[str, Path]]] | None:
    """(stem, {source: file}) for the stems every folder has, or None for single GeoTIFFs;
    errors name what is missing."""
    for name, p in sources.items():
        if not p.exists():
            raise InputError(f"{name} {p} does not exist")
        if not p.is_dir() and p.suffix.lower() not in (".tif", ".tiff"):
            raise InputError(f"{name} {p} must be a folder of tiles or a GeoTIFF")
    if len({p.is_dir() for p in sources.values()}) > 1:
        raise InputError("give folders for all of --pred/--gt/--coarse, or single GeoTIFFs for all")
    if not sources["ground truth"].is_dir():
        return None
    listed = {name: _list_folder(p) for name, p in sources.items()}
    stems = set(listed["ground truth"])
    for name, files in listed.items():
        for what, missing in ((f"have no {name}", stems - set(files)),
                              (f"of the {name} have no ground truth", set(files) - stems)):
            if missing:
                raise InputError(f"{len(missing)} tiles {what} (matched by file name): {_few(missing)}")
    return [(stem, {name: files[stem] for name, files in listed.items()}) for stem in sorted(stems)]


def _list_folder(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.suffix.lower() not in TILE_EXTENSIONS or not f.is_file():
            continue
        if f.stem in files:
            raise InputError(f"{folder}: two tiles named {f.stem} ({files[f.stem].name}, {f.name})")
        files[f.stem] = f
    if not files:
        raise InputError(f"{folder} holds no .png/.tif tiles")
    return files


def _read_tiles(sources: dict[str, Path], tiles: list[tuple[str, dict[str, Path]]] | None
                ) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """(tile name, {source: 2-D array}) in a fixed order."""
    if tiles is None:
        yield from _read_windows(sources)
        return
    for stem, paths in tiles:
        yield stem, {name: read_label_map(p) for name, p in paths.items()}


def read_label_map(path: Path) -> np.ndarray:
    """A single-band class-index map from a PNG (Pillow) or GeoTIFF (rasterio)."""
    if path.suffix.lower() == ".png":
        try:
            with Image.open(path) as im:
                a = np.asarray(im)
        except OSError as e:
            raise InputError(f"{path} is not a readable PNG ({e})") from e
        if a.ndim == 3:
            if not (a[..., :3] == a[..., :1]).all():
                raise InputError(f"{path} is a colour image, not a single-band class-index map")
            a = a[..., 0]
        return a.astype(np.uint8) if a.dtype == bool else a
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        try:
            with rasterio.open(path) as ds:
                if ds.count != 1:
                    raise InputError(f"{path} has {ds.count} bands; a class-index map has one")
                return ds.read(1)
        except rasterio.errors.RasterioIOError as e:
            raise InputError(f"{path} is not a raster GDAL can read ({e})") from e


def _read_windows(sources: dict[str, Path]) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """Windows of single GeoTIFFs, which must share one grid."""
    import rasterio
    from rasterio.windows import Window

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        datasets = {name: rasterio.open(p) for name, p in sources.items()}
    try:
        ref = datasets["ground truth"]
        for name, ds in datasets.items():
            if ds.count != 1:
                raise InputError(f"{sources[name]} has {ds.count} bands; a class-index map has one")
            if ds.shape != ref.shape:
                raise InputError(f"{sources[name]} is {ds.height}×{ds.width} but the ground truth "
                                 f"is {ref.height}×{ref.width}")
            if ds.crs != ref.crs or not ds.transform.almost_equals(ref.transform):
                raise InputError(f"{sources[name]} is not on the ground truth's grid (CRS or transform differ)")
        for row in range(0, ref.height, WINDOW):
            for col in range(0, ref.width, WINDOW):
                w = Window(col, row, min(WINDOW, ref.width - col), min(WINDOW, ref.height - row))
                yield f"window row {row} col {col}", {n: ds.read(1, window=w) for n, ds in datasets.items()}
    finally:
        for ds in datasets.values():
            ds.close()


def _values_by_source(sources: dict[str, Path], tiles: list[tuple[str, dict[str, Path]]] | None
                      ) -> dict[str, set[int]]:
    """The set of values each source holds (a first pass, to detect 0/255 masks and count classes)."""
    found: dict[str, set[int]] = {name: set() for name in sources}
    for _, arrays in _read_tiles(sources, tiles):
        for name, a in arrays.items():
            if a.dtype.kind not in "ui":
                raise InputError(f"{sources[name]}: class-index maps must hold integers, not {a.dtype}")
            found[name].update(np.unique(a).tolist())
    return found


def _is_binary_255(name: str, values: set[int], mode: str, ignore_index: int | None) -> bool:
    """Whether a source is a 0/255 mask to read as 0/1, logging the decision."""
    looks_binary = 255 in values and values <= {0, 255}
    if mode == "off" or (mode == "auto" and not looks_binary):
        return False
    if not values <= {0, 255}:
        raise InputError(f"--binary-255 on: the {name} holds values other than 0 and 255")
    if ignore_index == 255 and name == "ground truth":
        log.info("%s holds only 0 and 255; 255 is the ignore index, so it is not read as class 1", name)
        return False
    log.info("%s holds only 0 and 255: read as a binary mask (255 → class 1)", name)
    return True


def _shape(a: np.ndarray) -> str:
    return "×".join(map(str, a.shape))


def _few(names: set[str], n: int = 5) -> str:
    shown = sorted(names)[:n]
    return ", ".join(shown) + (f", … ({len(names) - n} more)" if len(names) > n else "")


def _json_ready(value):
    """Python floats, NaN → None, recursively (numpy scalars included)."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
