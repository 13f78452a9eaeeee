"""Training batches and validation tiles for the diffusion models, from a dataset of
`idgbr.datasets` or from folders of tiles.

Every sample is drawn from its own generator seeded by (seed, stream, step, index in batch), so a
resumed run sees exactly the batches the uninterrupted run would have seen. Coarse maps are
made on the fly by `idgbr.coarsen` or read from folders (e.g. k-fold coarse-segmentor
predictions of `idgbr data build`); each sample draws one source. Synthetic pairs mixed in by
`idgbr.synth.mix` have no coarse folder entry, so theirs are always drawn from the recipes.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..coarsen import coarsen, tile_rng
from ..datasets import TileRecord, resample
from ..errors import InputError
from ..models.card import ClassInfo, default_classes
from ..synth.mix import MixedDataset, is_synthetic
from .config import DataConfig

TILE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg")


class FolderTiles(Sequence):
    """Image/label tiles of two folders matched by file stem; `ds[i]` is (image uint8 HxWx3,
    label uint8 HxW class ids, stem), as `idgbr.datasets.TileDataset` gives. 0/255 masks are
    read as 0/1 when there are two classes."""

    def __init__(self, images: str | Path, labels: str | Path, classes: list[ClassInfo]) -> None:
        label_files = {f.stem: f for f in _tiles(labels)}
        self.pairs = [(f.stem, f, label_files[f.stem]) for f in _tiles(images) if f.stem in label_files]
        if not self.pairs:
            raise InputError(f"no image in {images} has a label of the same name in {labels}")
        self.classes = classes
        self.name = Path(images).name

    @property
    def tile_ids(self) -> list[str]:
        return [p[0] for p in self.pairs]

    @property
    def tiles(self) -> list[TileRecord]:
        """As TileDataset lists them: every tile its own group, GSD unknown (0)."""
        return [TileRecord(stem, image, label, stem, "train", 0.0) for stem, image, label in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, str]:  # type: ignore[override]
        stem, image, label = self.pairs[i]
        return read_rgb(image), read_classes(label, len(self.classes)), stem


def _tiles(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"tile folder {folder} not found")
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in TILE_SUFFIXES)


def coarse_index(folder: str | Path) -> dict[str, Path]:
    """Coarse tiles under `folder` by tile id (path without suffix, as `idgbr data build`
    writes them) and by file stem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"coarse folder {folder} not found")
    index: dict[str, Path] = {}
    for f in sorted(folder.rglob("*")):
        if f.suffix.lower() in TILE_SUFFIXES and f.is_file():
            index.setdefault(f.stem, f)
            index[f.relative_to(folder).with_suffix("").as_posix()] = f
    return index


def read_coarse(index: dict[str, Path], tile_id: str, num_classes: int) -> np.ndarray:
    path = index.get(tile_id) or index.get(tile_id.rsplit("/", 1)[-1])
    if path is None:
        raise InputError(f"no coarse map for tile {tile_id}")
    return read_classes(path, num_classes)


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def read_classes(path: Path, num_classes: int) -> np.ndarray:
    with Image.open(path) as im:
        a = np.asarray(im)
    if num_classes == 2 and a.max() == 255 and np.isin(a, (0, 255)).all():
        a = a // 255
    return a.astype(np.uint8)


def open_tiles(cfg: DataConfig, val: bool = False) -> Sequence:
    """The training (or validation) tiles that `cfg` names."""
    if cfg.dataset:
        from ..datasets import load_dataset

        return load_dataset(cfg.dataset, cfg.val_split if val else cfg.split, cfg.root)
    images, labels = (cfg.val_images, cfg.val_labels) if val else (cfg.images, cfg.labels)
    if not images or not labels:
        raise InputError(f"data: give a dataset or {'val_' if val else ''}images and labels folders")
    classes = cfg.classes if cfg.classes is not None else 2
    infos = (default_classes(classes) if isinstance(classes, int)
             else [ClassInfo(i, n, d.color) for i, (n, d) in enumerate(zip(classes, default_classes(len(classes))))])
    return FolderTiles(images, labels, infos)


def dataset_gsd(tiles: Sequence) -> float | None:
    """Median ground sample distance of a dataset's tiles with a known one (None for folders)."""
    gsds = [t.gsd_m for t in getattr(tiles, "tiles", []) if t.gsd_m]
    return float(np.median(gsds)) if gsds else None


def to_tensors(images: np.ndarray, labels: np.ndarray, coarse: np.ndarray) -> dict[str, torch.Tensor]:
    """A batch as RefinerTrainer wants it: `image` normalised to [-1, 1] (the card's mean and
    std 0.5), `image01` in [0, 1], `labels` and `coarse` as int64 class maps."""
    image01 = torch.tensor(images).permute(0, 3, 1, 2).float() / 255.0  # copies: crops may be read-only views
    return {"image": image01 * 2 - 1, "image01": image01, "labels": torch.tensor(labels, dtype=torch.int64),
            "coarse": torch.tensor(coarse, dtype=torch.int64)}


@dataclass
class BatchSampler:
    """Random crops (with flips and quarter turns) of random tiles, with their coarse maps."""

    tiles: Sequence
    cfg: DataConfig
    num_classes: int
    seed: int = 0

    def __post_init__(self) -> None:
        if not len(self.tiles):
            raise InputError("no training tiles")
        folders = [self.cfg.coarse] if isinstance(self.cfg.coarse, str) else list(self.cfg.coarse or [])
        self.sources: list[dict[str, Path] | str] = [coarse_index(f) for f in folders] + list(self.cfg.recipes)
        if not self.sources:
            raise InputError("data: give coarse recipes or coarse folders")
        if isinstance(self.tiles, MixedDataset) and not self.cfg.recipes:
            raise InputError("data.synthetic: coarse folders have no maps for synthetic pairs; add coarse recipes "
                             "(data.recipes) to make theirs from their labels")

    def coarse_for(self, label: np.ndarray, tile_id: str, rng: np.random.Generator) -> np.ndarray:
        """The tile's coarse map from a source drawn with `rng`: a folder or a recipe (a
        synthetic pair: a recipe)."""
        sources = list(self.cfg.recipes) if is_synthetic(tile_id) else self.sources
        source = sources[int(rng.integers(len(sources)))]
        if isinstance(source, str):
            return coarsen(label, source, rng, self.num_classes)
        return read_coarse(source, tile_id, self.num_classes)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image, label, tile_id = self.tiles[int(rng.integers(len(self.tiles)))]
        coarse = self.coarse_for(label, tile_id, rng)  # at the tile's own scale, before cropping
        image, label, coarse = (resample(image, self.cfg.scale, False), resample(label, self.cfg.scale, True),
                                resample(coarse, self.cfg.scale, True))
        c = self.cfg.crop
        h, w = label.shape
        if h < c or w < c:
            raise InputError(f"tile {tile_id} is {h}×{w} after scaling, smaller than the {c}² crop")
        y, x = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
        out = [a[y:y + c, x:x + c] for a in (image, label, coarse)]
        if self.cfg.flips:
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            out = [np.rot90(a, k, axes=(0, 1)) for a in out]
            out = [a[:, ::-1] if flip else a for a in out]
        return out[0], out[1], out[2]

    def batch(self, step: int, size: int, stream: int = 0) -> dict[str, torch.Tensor]:
        """Batch `step` of a stream: 0 for training, others for held-out checks."""
        parts = [self.sample(np.random.default_rng([self.seed, stream, step, j])) for j in range(size)]
        return to_tensors(*(np.stack(p) for p in zip(*parts)))


@dataclass
class ValTile:
    tile_id: str
    image: np.ndarray  # uint8 (H, W, 3)
    gt: np.ndarray
    coarse: np.ndarray


def validation_tiles(tiles: Sequence, cfg: DataConfig, num_classes: int, multiple: int, seed: int = 0) -> list[ValTile]:
    """`cfg.val_tiles` whole tiles spread over the split, at the training scale, cropped to a
    multiple of the model's latent grid, with fixed coarse maps (from `val_coarse`, else the
    recipes in turn, seeded by tile id) so every validation scores the same inputs."""
    if not cfg.val_coarse and not cfg.recipes:
        raise InputError("data: validation needs val_coarse or recipes")
    index = coarse_index(cfg.val_coarse) if cfg.val_coarse else None
    n = min(cfg.val_tiles, len(tiles))
    out = []
    for k, i in enumerate(np.unique(np.linspace(0, len(tiles) - 1, n).round().astype(int)) if n else []):
        image, label, tile_id = tiles[int(i)]
        coarse = (read_coarse(index, tile_id, num_classes) if index is not None
                  else coarsen(label, cfg.recipes[k % len(cfg.recipes)], tile_rng(seed, tile_id), num_classes))
        arrays = [resample(image, cfg.scale, False), resample(label, cfg.scale, True), resample(coarse, cfg.scale, True)]
        h, w = (s - s % multiple for s in arrays[1].shape)
        out.append(ValTile(tile_id, *(a[:h, :w] for a in arrays)))
    return out
