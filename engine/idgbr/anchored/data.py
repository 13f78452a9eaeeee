"""Training crops for the anchored refiners, built where the boundaries are.

All tiles of the split are held in memory (uint8). A sample is (tile, coarse source, variant,
crop centre, flip/turn), all drawn from a generator seeded by (seed, step), so a resumed run
sees exactly the batches an uninterrupted one would. Coarse maps come from recipes of
`idgbr.coarsen`, `variants` different ones per tile and recipe, each made once and cached (the
polygon recipes cost tens of milliseconds per tile, the network step about a second per batch),
or from folders of precomputed coarse maps (e.g. a coarse segmentor's out-of-fold predictions).
As in BPR, most crops are centred on a pixel of the coarse or the true boundary: the loss lives
in the band around the coarse boundary, and a random crop of a building tile is mostly interior.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..coarsen import coarsen, tile_rng
from ..datasets import TileDataset
from ..errors import InputError


def edges(a: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour has another value (a 2-D bool map)."""
    e = np.zeros(a.shape, bool)
    e[:, :-1] |= a[:, 1:] != a[:, :-1]
    e[:-1, :] |= a[1:, :] != a[:-1, :]
    return e


@dataclass
class CoarseSource:
    """A recipe name, or a folder of coarse tiles (matched by tile id or stem)."""

    name: str
    folder: Path | None = None


class CropSampler:
    """Batches of (image (B, 3, S, S) float in [0, 1], coarse (B, S, S) long, label (B, S, S) long)."""

    def __init__(self, ds: TileDataset, sources: list[CoarseSource], crop: int, variants: int = 8,
                 boundary_crops: float = 0.85, seed: int = 0, weights: list[float] | None = None) -> None:
        from ..benchmarks.quality import coarse_files, read_coarse

        self.num_classes = len(ds.classes)
        self.crop = crop
        self.variants = variants
        self.boundary_crops = boundary_crops
        self.seed = seed
        self.sources = sources
        if weights is not None and (len(weights) != len(sources) or min(weights) < 0 or sum(weights) <= 0):
            raise InputError(f"data.weights {weights}: give one non-negative odds per recipe/coarse folder "
                             f"({len(sources)}), not all zero")
        self.odds = None if weights is None else np.asarray(weights, float) / sum(weights)
        self.ids = ds.tile_ids
        self.gsd = [t.gsd_m for t in ds.tiles]
        self.images, self.labels = [], []
        for i in range(len(ds)):
            image, label, _ = ds[i]
            if min(label.shape) < crop:
                raise InputError(f"data.crop {crop}: tile {self.ids[i]} is only {label.shape}")
            self.images.append(image)
            self.labels.append(label)
        self._cache: dict[tuple[int, int, int], np.ndarray] = {}
        for s, src in enumerate(sources):
            if src.folder is not None:
                files = coarse_files(src.folder, self.ids)
                for i, tid in enumerate(self.ids):
                    self._cache[(i, s, 0)] = read_coarse(files[tid], self.num_classes, self.labels[i].shape)

    def __len__(self) -> int:
        return len(self.ids)

    def coarse(self, i: int, s: int, v: int) -> np.ndarray:
        src = self.sources[s]
        key = (i, s, 0 if src.folder is not None else v)
        if key not in self._cache:
            rng = tile_rng(self.seed * 1009 + v, f"{src.name}/{self.ids[i]}")
            self._cache[key] = coarsen(self.labels[i], src.name, rng, self.num_classes, gsd_m=self.gsd[i])
        return self._cache[key]

    def batch(self, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step])
        images, coarses, labels = [], [], []
        for _ in range(size):
            i = int(rng.integers(len(self.ids)))
            n = len(self.sources)
            s = int(rng.integers(n)) if self.odds is None else int(rng.choice(n, p=self.odds))
            coarse = self.coarse(i, s, int(rng.integers(self.variants)))
            image, label = self.images[i], self.labels[i]
            y, x = self._corner(rng, coarse, label)
            sl = (slice(y, y + self.crop), slice(x, x + self.crop))
            img, c, lab = image[sl], coarse[sl], label[sl]
            turns, flip = int(rng.integers(4)), bool(rng.integers(2))
            img, c, lab = (np.rot90(a, turns) for a in (img, c, lab))
            if flip:
                img, c, lab = img[:, ::-1], c[:, ::-1], lab[:, ::-1]
            gain, bias = rng.uniform(0.85, 1.15), rng.uniform(-0.06, 0.06)
            images.append(np.clip(img.astype(np.float32) / 255 * gain + bias, 0, 1).transpose(2, 0, 1))
            coarses.append(np.ascontiguousarray(c))
            labels.append(np.ascontiguousarray(lab))
        return (torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(coarses).astype(np.int64)),
                torch.from_numpy(np.stack(labels).astype(np.int64)))

    def _corner(self, rng: np.random.Generator, coarse: np.ndarray, label: np.ndarray) -> tuple[int, int]:
        h, w = label.shape
        s = self.crop
        if rng.random() < self.boundary_crops:
            ys, xs = np.nonzero(edges(coarse) | edges(label))
            if ys.size:
                j = int(rng.integers(ys.size))
                return (int(np.clip(ys[j] - s // 2, 0, h - s)), int(np.clip(xs[j] - s // 2, 0, w - s)))
        return int(rng.integers(h - s + 1)), int(rng.integers(w - s + 1))
