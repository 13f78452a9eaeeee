"""Where coarse-model training tiles come from: a registered dataset of `idgbr.datasets` (with
its place-based train/val split) or a pair of image and label folders (PNG or GeoTIFF tiles
matched by file stem). Both are `TileDataset`s, so training, k-fold and the data builder share
one interface: `ds[i]` → (uint8 H×W×3 image, uint8 H×W class ids, tile id), `ds.tiles[i].group`.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..datasets import DatasetSpec, TileDataset, TileRecord, load_dataset
from ..errors import InputError
from ..evaluate import read_label_map
from ..models.card import ClassInfo, default_classes
from .config import DataConfig

TILE_SUFFIXES = (".png", ".tif", ".tiff")


class FolderDataset(TileDataset):
    """Image/label tiles from two folders; GeoTIFF tiles are read with rasterio (first three
    bands; non-uint8 images are stretched per tile from their 2nd–98th percentile)."""

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, str]:  # type: ignore[override]
        t = self.tiles[i]
        return _read_image(t.image), self.spec.decode_label(read_label_map(t.label)), t.tile_id


def folder_dataset(images: str | Path, labels: str | Path, classes: Sequence[str] | int | None = None,
                   binary_255: bool = False, split: str = "train", gsd_m: float = 0.0) -> FolderDataset:
    """Tiles of `images` with a label of the same stem in `labels`. Every tile is its own
    group (folders carry no place). `classes`: names, or a count (default: 2 for binary masks,
    else the largest id of the first tiles + 1)."""
    pairs = _pairs(Path(images), Path(labels))
    records = [TileRecord(stem, img, lbl, stem, split, gsd_m) for stem, img, lbl in pairs]
    decode = (lambda a: (a > 127).astype(np.uint8)) if binary_255 else (lambda a: a.astype(np.uint8))
    if isinstance(classes, int) or classes is None:
        count = classes or (2 if binary_255 else _count_classes(records, decode))
        infos = tuple(default_classes(count))
    else:
        infos = tuple(default_classes(len(classes)))
        infos = tuple(ClassInfo(c.id, name, c.color) for c, name in zip(infos, classes))
    spec = DatasetSpec(Path(images).name, str(images), infos, gsd_m, lambda _: records, decode)
    return FolderDataset(spec, split, records)


def subset(ds: TileDataset, indices: Sequence[int]) -> TileDataset:
    """The same dataset restricted to some tiles (for k-fold training)."""
    return type(ds)(ds.spec, ds.split, [ds.tiles[i] for i in indices])


def resolve_datasets(data: DataConfig) -> tuple[TileDataset, TileDataset | None]:
    """(train, val) of the config's registered dataset, or of its image/label folders (val
    only when val folders are given)."""
    if data.dataset is not None:
        return load_dataset(data.dataset, "train", data.root), load_dataset(data.dataset, "val", data.root)
    if data.images is None or data.labels is None:
        raise InputError("the data section needs either 'dataset' or both 'images' and 'labels'")
    train = folder_dataset(data.images, data.labels, data.classes, data.binary_255)
    val = None
    if data.val_images is not None and data.val_labels is not None:
        val = folder_dataset(data.val_images, data.val_labels, [c.name for c in train.classes], data.binary_255,
                             "val")
    return train, val


def _pairs(images: Path, labels: Path) -> list[tuple[str, Path, Path]]:
    for name, folder in (("image", images), ("label", labels)):
        if not folder.is_dir():
            raise InputError(f"{name} folder {folder} does not exist")
    label_files = {f.stem: f for f in labels.iterdir() if f.suffix.lower() in TILE_SUFFIXES}
    out = [(f.stem, f, label_files[f.stem]) for f in sorted(images.iterdir())
           if f.suffix.lower() in TILE_SUFFIXES and f.stem in label_files]
    if not out:
        raise InputError(f"no image tile in {images} has a label of the same name in {labels}")
    return out


def _count_classes(records: list[TileRecord], decode, sample: int = 64) -> int:
    top = max(int(decode(read_label_map(r.label)).max()) for r in records[:sample])
    return max(top + 1, 2)


def _read_image(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".png":
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            data = ds.read(list(range(1, min(ds.count, 3) + 1)))
    data = data[np.arange(3) % data.shape[0]]
    if data.dtype != np.uint8:
        lo, hi = np.percentile(data, [2, 98], axis=(1, 2), keepdims=True)
        data = np.clip((data - lo) / np.maximum(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    return data.transpose(1, 2, 0)
