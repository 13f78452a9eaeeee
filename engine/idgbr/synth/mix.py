"""Synthetic (image, label) pairs mixed into a real training set.

A folder written by `idgbr synth sample` (`images/*.png` RGB, `labels/*.png` class ids, an
optional `synth_info.json`) joins the real TRAIN tiles at a ratio R = synthetic pairs per real
pair: every synthetic pair is used once and the real tiles are repeated (evenly, in a fixed
order) until real:synthetic = 1:R by count. Real tiles are never dropped, so a folder with
fewer than R·N pairs lowers the ratio instead (with a warning) rather than discarding real data.

When `synth_info.json` gives the pairs' ground sample distance and the real tiles have one,
synthetic pairs are resampled on read to the real data's GSD (images bilinear, labels
nearest): base-stage pairs written without the SR stage are at twice the GSD of the crops the
generator learned from, and a model must not learn objects at half their size.

Synthetic tiles carry ids `synth:<stem>` and one group each: they belong to no place, so
k-fold and validation, which work on real places, must never see them (idgbr.segment.kfold
folds the real tiles only and mixes synthetic pairs into each fold's training set).
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..datasets import TileDataset, resample
from ..errors import InputError
from ..evaluate import read_label_map
from ..segment.data import folder_dataset

SYNTH_PREFIX = "synth:"
INFO_FILE = "synth_info.json"


def is_synthetic(tile_id: str) -> bool:
    return tile_id.startswith(SYNTH_PREFIX)


def synthetic_pairs(folder: str | Path, num_classes: int) -> TileDataset:
    """The pairs of a generator output folder, checked against a real dataset of
    `num_classes` classes: every label is read once here, so a bad class id fails before
    training starts, naming its file."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"synthetic folder {root} does not exist")
    if not (root / "images").is_dir() or not (root / "labels").is_dir():
        raise InputError(f"synthetic folder {root} has no images/ and labels/ folders "
                         "(the layout `idgbr synth sample --out` writes)")
    _check_info(root, num_classes)
    ds = folder_dataset(root / "images", root / "labels", classes=num_classes)
    ds.tiles = [replace(t, tile_id=SYNTH_PREFIX + t.tile_id, group=SYNTH_PREFIX + t.group, gsd_m=0.0)
                for t in ds.tiles]
    for t in ds.tiles:
        label = read_label_map(t.label)
        if label.max() >= num_classes:
            raise InputError(f"synthetic label {t.label} has class id {int(label.max())}, but the real data has "
                             f"{num_classes} classes (ids 0..{num_classes - 1})")
        with Image.open(t.image) as im:
            if im.size[::-1] != label.shape:
                raise InputError(f"synthetic image {t.image} is {im.height}×{im.width}, its label "
                                 f"{label.shape[0]}×{label.shape[1]}")
    return ds


def _check_info(root: Path, num_classes: int) -> dict[str, Any]:
    """The folder's synth_info.json (or {}), after checking its class count."""
    path = root / INFO_FILE
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is not readable JSON ({e})") from e
    classes = info.get("classes", info.get("num_classes")) if isinstance(info, dict) else None
    count = len(classes) if isinstance(classes, list) else classes
    if isinstance(count, int) and count != num_classes:
        raise InputError(f"{path} says the pairs have {count} classes, but the real data has {num_classes}")
    return info


def synthetic_scale(folder: str | Path, real: Any) -> float:
    """Resampling factor that brings the folder's pairs to the real tiles' GSD (1 when either
    GSD is unknown or they agree within 5 %)."""
    info = _check_info(Path(folder), len(real.classes))
    real_gsd = [t.gsd_m for t in real.tiles if t.gsd_m]
    synth_gsd = info.get("gsd_m")
    if not real_gsd or not isinstance(synth_gsd, (int, float)) or synth_gsd <= 0:
        return 1.0
    factor = float(synth_gsd) / float(np.median(real_gsd))
    return 1.0 if abs(factor - 1) < 0.05 else factor


def resample_pair(image: np.ndarray, label: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Image bilinear, labels nearest, both to round(size × factor)."""
    return resample(image, factor, nearest=False), resample(label, factor, nearest=True)


class MixedDataset(TileDataset):
    """Real tiles (repeated to `real_count`) then the synthetic pairs. `ds[i]` and
    `ds.tiles[i]` agree; each part keeps its own label decoding (a real 0/255 mask is read
    by its dataset, a synthetic label is class ids). `real` is a TileDataset, or any tile
    sequence with `name`, `classes` and `tiles` (the refiner's FolderTiles)."""

    def __init__(self, real: TileDataset, synthetic: str | Path, ratio: float = 1.0) -> None:
        if not ratio > 0:
            raise InputError(f"synthetic ratio must be > 0 (synthetic pairs per real pair), got {ratio}")
        if not len(real):
            raise InputError("no real training tiles to mix synthetic pairs with")
        synth = synthetic_pairs(synthetic, len(real.classes))
        n, m = len(real), len(synth)
        self.real_count = max(n, math.ceil(round(m / ratio, 9)))
        if m < ratio * n:
            warnings.warn(f"{synthetic} holds {m} synthetic pairs, fewer than ratio {ratio:g} × {n} real tiles: "
                          f"using them all, an effective ratio of {m / n:.3g}", stacklevel=2)
        self.real, self.synthetic, self.ratio, self.folder = real, synth, ratio, Path(synthetic)
        self.scale = synthetic_scale(synthetic, real)
        self.real_index = [j * n // self.real_count for j in range(self.real_count)]  # each q or q+1 times
        records = real.tiles
        super().__init__(getattr(real, "spec", synth.spec), getattr(real, "split", "train"),
                         [records[i] for i in self.real_index] + synth.tiles)

    @property
    def name(self) -> str:
        return self.real.name

    @property
    def classes(self) -> list:
        return list(self.real.classes)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, str]:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        if i < self.real_count:
            return self.real[self.real_index[i]]
        image, label, tile_id = self.synthetic[i - self.real_count]
        if self.scale != 1.0:
            image, label = resample_pair(image, label, self.scale)
        return image, label, tile_id

    def is_synthetic(self, i: int) -> bool:
        return i >= self.real_count

    def describe(self) -> dict[str, Any]:
        """What a model card records about the mix."""
        return {"folder": str(self.folder.resolve()), "ratio": self.ratio, "pairs": len(self.synthetic),
                "real_tiles": len(self.real), "real_draws": self.real_count,
                "effective_ratio": round(len(self.synthetic) / self.real_count, 4), "resampled_by": self.scale}


def mix_train(train: TileDataset, synthetic: str | Path | None, ratio: float = 1.0) -> TileDataset:
    """`train` with the synthetic pairs of `synthetic` mixed in, or `train` itself without a folder."""
    return train if synthetic is None else MixedDataset(train, synthetic, ratio)
