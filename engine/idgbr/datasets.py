"""Tile datasets over the shared real data, for training, evaluation and benchmarks.

    from idgbr.datasets import load_dataset
    ds = load_dataset("buildings", "train")        # root: IDGBR_DATA or <repo>/../shared/data
    image, label, tile_id = ds[0]                   # uint8 HxWx3, uint8 HxW class ids, str

Every dataset has a `train` and a `val` split. Splits are made of whole groups of tiles that
share ground (never random tiles), are deterministic, and are fixed here so that a model's
validation numbers mean "a place it has not seen":

- `buildings` (buildings_hot_oam, 2 classes, 256² PNG, 0.07-0.30 m): z19/z20/z21 tiles are
  pyramid levels of the same ground, so the unit is the z19 parent tile (a z19 tile and all
  its descendants share a split). val = all of area2 (Kampala: a whole city never trained on)
  + the southernmost row of z19 parents of each other area (area1 Zanzibar y19=270996,
  7 parents; area4 Philippines y19=241595, 2 parents; area5 Nairobi y19=264051, 4 parents).
  train 1281 tiles (61 parents), val 391 tiles (19 parents).
- `landcover` (landcover_dronedeploy, 6 classes, 300² PNG, 0.10 m): chips are a stride-300
  grid of 2 scenes numbered column by column (DroneDeploy's chipper loops x outside y and
  numbers the chips it keeps), so a run of chip numbers is a vertical strip of the scene. val = the first strip of each scene:
  1d4fbe33f3 chips 0-5 and ec09336a6f chips 0-35. train 165 chips, val 42 chips.
- `farmland` (fields_agoro_naip, field vs background, 1024² PNG, ~1 m): one image per place;
  val = the images east of 86.5°W (5 in Michigan, 1 in Ohio; each at least 299 km from every
  train image, while train images have neighbours 3-300 km away). train 24 images, val 6.
- `roads` (roads_cil2022, road vs background, 400² PNG, ~0.3-0.6 m): tiles carry no place,
  so the unit is the tile: val = tiles whose SHA-256 of the file stem, read as a number, is
  0 mod 5. train 119 tiles, val 25 tiles.

Counts are for the shared data copy of this project; what its README keeps aside for
independent evaluation (e.g. buildings area3, the last 20 % of each DroneDeploy scene) is in
neither split. The slippy-map helpers of `idgbr.xyz` (`xyz_tile_bounds`, `build_xyz_mosaic`,
`complete_z19_parents`) are re-exported here: they turn the buildings tiles into GeoTIFF +
GeoPackage orthophotos for end-to-end tests.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import InputError
from .models.card import ClassInfo
from .xyz import build_xyz_mosaic, complete_z19_parents, parse_oam_stem, tile_gsd_m, xyz_tile_bounds, z19_parent

__all__ = [
    "DATASETS", "SPLITS", "DatasetSpec", "TileDataset", "TileRecord", "build_xyz_mosaic",
    "complete_z19_parents", "data_root", "farmland_centre", "load_dataset", "resample", "xyz_tile_bounds",
]

SPLITS = ("train", "val")
DATA_ENV = "IDGBR_DATA"


def data_root(root: str | Path | None = None) -> Path:
    """The shared data folder: `root`, else $IDGBR_DATA, else `<repo>/../shared/data`."""
    if root is None:
        root = os.environ.get(DATA_ENV) or Path(__file__).resolve().parents[3] / "shared" / "data"
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data folder {root} not found (set {DATA_ENV} or pass root)")
    return root


@dataclass(frozen=True)
class TileRecord:
    """One image/label pair. `group` is the unit of the split: tiles of a group share ground
    and always land in the same split."""

    tile_id: str
    image: Path
    label: Path
    group: str
    split: str
    gsd_m: float


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is (folder, classes, nominal GSD) and how to list and decode it."""

    name: str
    folder: str
    classes: tuple[ClassInfo, ...]
    gsd_m: float
    list_tiles: Callable[[Path], list[TileRecord]]
    decode_label: Callable[[np.ndarray], np.ndarray]


class TileDataset(Sequence):
    """The tiles of one split: `ds[i]` is (image uint8 HxWx3, label uint8 HxW, tile_id)."""

    def __init__(self, spec: DatasetSpec, split: str, tiles: list[TileRecord]) -> None:
        self.spec = spec
        self.split = split
        self.tiles = tiles

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def classes(self) -> list[ClassInfo]:
        return list(self.spec.classes)

    @property
    def tile_ids(self) -> list[str]:
        return [t.tile_id for t in self.tiles]

    def __len__(self) -> int:
        return len(self.tiles)

    def spread(self, limit: int | None) -> "TileDataset":
        """`limit` tiles spread evenly over the split, so every place of it is in (all when
        `limit` is None or not below the split's size)."""
        if limit is None or limit >= len(self):
            return self
        picks = np.unique(np.linspace(0, len(self) - 1, limit).round().astype(int))
        return type(self)(self.spec, self.split, [self.tiles[i] for i in picks])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, str]:  # type: ignore[override]
        t = self.tiles[i]
        with Image.open(t.image) as im:
            image = np.asarray(im.convert("RGB"))  # drops the alpha of RGBA tiles
        with Image.open(t.label) as lb:
            label = self.spec.decode_label(np.asarray(lb))
        return image, label, t.tile_id


def load_dataset(name: str, split: str, root: str | Path | None = None) -> TileDataset:
    """The `train` or `val` tiles of a registered dataset, in a stable order."""
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; known: {list(SPLITS)}")
    spec = DATASETS[name]
    folder = data_root(root) / spec.folder
    if not folder.is_dir():
        raise InputError(f"dataset {name}: folder {folder} not found")
    return TileDataset(spec, split, [t for t in spec.list_tiles(folder) if t.split == split])


def resample(a: np.ndarray, scale: float, nearest: bool) -> np.ndarray:
    """A tile (H×W×3 image or H×W labels) resized by `scale`: bilinear, or nearest for class
    maps, to round(size × scale) pixels."""
    if scale == 1.0:
        return a
    h, w = a.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(a).resize(size, Image.NEAREST if nearest else Image.BILINEAR))


def _binary(mask: np.ndarray) -> np.ndarray:
    """0/255 masks → class ids 0/1."""
    return (mask > 127).astype(np.uint8)


def _class_ids(label: np.ndarray) -> np.ndarray:
    """Labels that already are class ids 0..K-1."""
    return label.astype(np.uint8)


def _pairs(folder: Path, images: str, labels: str) -> list[tuple[str, Path, Path]]:
    """(stem, image, label) for every image with a label of the same stem, sorted by stem."""
    out = []
    for img in sorted((folder / images).glob("*.png")):
        lbl = folder / labels / img.name
        if lbl.is_file():
            out.append((img.stem, img, lbl))
    return out


# --- buildings_hot_oam -----------------------------------------------------------------------

BUILDINGS_VAL_AREAS = ("area2",)
"""Areas held out whole; in the others the southernmost row of z19 parents is held out."""


def _buildings(folder: Path) -> list[TileRecord]:
    rows = []
    for area_dir in sorted(folder.glob("area*")):
        for stem, img, lbl in _pairs(area_dir, "images", "masks"):
            x, y, z = parse_oam_stem(stem)
            rows.append((area_dir.name, stem, img, lbl, z19_parent(x, y, z), tile_gsd_m(y, z)))
    south_row: dict[str, int] = defaultdict(int)  # largest y19 = southernmost (y grows south)
    for area, _, _, _, (_, y19), _ in rows:
        south_row[area] = max(south_row[area], y19)
    return [
        TileRecord(f"{area}/{stem}", img, lbl, f"{area}/z19-{x19}-{y19}",
                   "val" if area in BUILDINGS_VAL_AREAS or y19 == south_row[area] else "train", gsd)
        for area, stem, img, lbl, (x19, y19), gsd in rows
    ]


# --- landcover_dronedeploy -------------------------------------------------------------------

LANDCOVER_VAL_CHIPS = {
    "1d4fbe33f3_F1BE1D4184INSPIRE": range(0, 6),
    "ec09336a6f_06BA0AF311OPENPIPELINE": range(0, 36),
}
"""Per scene, the chip numbers held out: the first columns of the scene (about 20 %)."""


def _landcover(folder: Path) -> list[TileRecord]:
    out = []
    for stem, img, lbl in _pairs(folder, "images", "labels"):
        scene, number = stem.rsplit("-", 1)
        val = int(number) in LANDCOVER_VAL_CHIPS.get(scene, ())
        out.append(TileRecord(stem, img, lbl, f"{scene}/{'first' if val else 'rest'}-strip",
                              "val" if val else "train", 0.10))
    return out


# --- fields_agoro_naip -----------------------------------------------------------------------

FARMLAND_VAL_EAST_OF_LNG = -86.5
_LATLNG = re.compile(r"^(-?\d+(?:\.\d+)?)-(-?\d+(?:\.\d+)?)$")


def farmland_centre(stem: str) -> tuple[float, float]:
    """(lat, lng) of an Agoro image centre, from its file name `<lat>-<lng>`."""
    m = _LATLNG.match(stem)
    if not m:
        raise InputError(f"not an Agoro <lat>-<lng> name: {stem}")
    return float(m.group(1)), float(m.group(2))


def _farmland(folder: Path) -> list[TileRecord]:
    def split(stem: str) -> str:
        return "val" if farmland_centre(stem)[1] > FARMLAND_VAL_EAST_OF_LNG else "train"

    return [TileRecord(stem, img, lbl, stem, split(stem), 1.0)
            for stem, img, lbl in _pairs(folder, "images", "extent_masks")]


# --- roads_cil2022 ---------------------------------------------------------------------------

def _roads(folder: Path) -> list[TileRecord]:
    def split(stem: str) -> str:
        return "val" if int(hashlib.sha256(stem.encode()).hexdigest(), 16) % 5 == 0 else "train"

    return [TileRecord(stem, img, lbl, stem, split(stem), 0.45)
            for stem, img, lbl in _pairs(folder, "images", "masks")]


def _classes(*pairs: tuple[str, str]) -> tuple[ClassInfo, ...]:
    return tuple(ClassInfo(i, name, color) for i, (name, color) in enumerate(pairs))


DATASETS: dict[str, DatasetSpec] = {
    "buildings": DatasetSpec(
        "buildings", "buildings_hot_oam", _classes(("background", "#9e9e9e"), ("building", "#e31a1c")),
        0.075, _buildings, _binary),
    "landcover": DatasetSpec(
        "landcover", "landcover_dronedeploy",
        _classes(("building", "#e31a1c"), ("clutter", "#6a3d9a"), ("vegetation", "#33a02c"),
                 ("water", "#1f78b4"), ("ground", "#d9c08c"), ("car", "#ffd92f")),
        0.10, _landcover, _class_ids),
    "farmland": DatasetSpec(
        "farmland", "fields_agoro_naip", _classes(("background", "#9e9e9e"), ("field", "#ffbf00")),
        1.0, _farmland, _binary),
    "roads": DatasetSpec(
        "roads", "roads_cil2022", _classes(("background", "#9e9e9e"), ("road", "#ff7f00")),
        0.45, _roads, _binary),
}
"""Registry: dataset name → spec. GSD is nominal (buildings: per tile in TileRecord.gsd_m)."""
