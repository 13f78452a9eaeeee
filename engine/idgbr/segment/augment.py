"""The training augmentations of the IDGBR paper's coarse models (the mmsegmentation recipe):
random resize by 0.5–2.0, a crop in which no class covers more than 75 % when one can be found,
horizontal flip, and brightness/contrast/saturation jitter."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

PAD_LABEL = 255
"""Label of pixels the loss ignores (padding, and the data's own ignore value)."""


@dataclass(frozen=True)
class Augment:
    crop: int = 256
    scale: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    crop_tries: int = 10
    flip: bool = True
    brightness: float = 32 / 255  # additive, ± this much
    contrast: tuple[float, float] = (0.5, 1.5)  # about the tile mean
    saturation: tuple[float, float] = (0.5, 1.5)  # blend with grey
    jitter_p: float = 0.5  # each jitter is applied with this probability

    @classmethod
    def crops_only(cls, crop: int) -> "Augment":
        """Random crops at the native scale and nothing else: the no-augmentation baseline."""
        return cls(crop=crop, scale=(1.0, 1.0), flip=False, jitter_p=0.0)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 H×W×3 image and H×W labels → float (3, crop, crop) in [0, 1], int64 labels."""
        img = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float().div_(255)[None]
        lbl = torch.from_numpy(np.array(label, copy=True)).float()[None, None]
        s = rng.uniform(*self.scale)
        size = (max(1, round(img.shape[-2] * s)), max(1, round(img.shape[-1] * s)))
        img = F.interpolate(img, size=size, mode="bilinear", align_corners=False, antialias=s < 1)[0]
        lbl = F.interpolate(lbl, size=size, mode="nearest-exact")[0, 0].long()
        img, lbl = self._crop(img, lbl, rng)
        if self.flip and rng.random() < 0.5:
            img, lbl = img.flip(-1), lbl.flip(-1)
        return self._jitter(img, rng).clamp_(0, 1), lbl

    def _crop(self, img: torch.Tensor, lbl: torch.Tensor, rng: np.random.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.crop
        h, w = lbl.shape
        if h < c or w < c:  # pad to the crop size; padding is ignored by the loss
            img = F.pad(img, (0, max(c - w, 0), 0, max(c - h, 0)))
            lbl = F.pad(lbl, (0, max(c - w, 0), 0, max(c - h, 0)), value=PAD_LABEL)
            h, w = lbl.shape
        best, best_ratio = (0, 0), 2.0
        for _ in range(self.crop_tries):
            y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
            ratio = _max_class_share(lbl[y:y + c, x:x + c])
            if ratio < best_ratio:
                best, best_ratio = (y, x), ratio
            if ratio <= self.cat_max_ratio:
                break
        y, x = best
        return img[:, y:y + c, x:x + c], lbl[y:y + c, x:x + c]

    def _jitter(self, img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if rng.random() < self.jitter_p:
            img = img + rng.uniform(-self.brightness, self.brightness)
        if rng.random() < self.jitter_p:
            mean = img.mean()
            img = (img - mean) * rng.uniform(*self.contrast) + mean
        if rng.random() < self.jitter_p:
            grey = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None]
            img = grey + (img - grey) * rng.uniform(*self.saturation)
        return img


def _max_class_share(lbl: torch.Tensor) -> float:
    """Share of the commonest class among the labelled pixels (2.0 when none is labelled)."""
    known = lbl[lbl != PAD_LABEL]
    if known.numel() == 0:
        return 2.0
    return float(torch.bincount(known).max()) / known.numel()
