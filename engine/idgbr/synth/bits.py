"""Class maps as analog bits (Chen et al., "Analog Bits", as SatSynth uses them): class id c of
K classes becomes ⌈log2 K⌉ planes in {−1, +1}, so a diffusion model can generate labels as
continuous channels next to the RGB ones, with far fewer channels than a one-hot map.

When K is not a power of two some bit patterns name no class; `decode` maps every pixel to the
valid code nearest to its soft bits, so generated labels are always ids < K.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InputError


def num_bits(num_classes: int) -> int:
    """Bit planes for K classes: max(1, ⌈log2 K⌉)."""
    if num_classes < 1:
        raise InputError(f"a label map needs at least one class, not {num_classes}")
    return max(1, math.ceil(math.log2(num_classes)))


def codes(num_classes: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(K, nbits) ±1 codes of the class ids: bit b of id c, 0 → −1, 1 → +1."""
    ids = torch.arange(num_classes, device=device)
    bits = (ids[:, None] >> torch.arange(num_bits(num_classes), device=device)) & 1
    return bits.float() * 2 - 1


def encode(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) class ids → (B, nbits, H, W) float in {−1, +1}."""
    if labels.numel() and int(labels.max()) >= num_classes:
        raise InputError(f"label id {int(labels.max())} is outside the {num_classes} classes")
    shifts = torch.arange(num_bits(num_classes), device=labels.device).view(1, -1, 1, 1)
    return ((labels.long()[:, None] >> shifts) & 1).float() * 2 - 1


def decode(bits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, nbits, H, W) soft bits → (B, H, W) int64 ids < K: the valid code nearest (Euclidean)
    to each pixel's bits. All codes have the same norm, so that is the code of largest dot
    product; where the thresholded bits form a valid code it is that code."""
    table = codes(num_classes, bits.device).to(bits.dtype)
    return torch.einsum("bnhw,kn->bkhw", bits, table).argmax(1)


def pair_to_tensor(image: np.ndarray, label: np.ndarray, num_classes: int) -> torch.Tensor:
    """uint8 (H, W, 3) image and (H, W) class ids → (3 + nbits, H, W) float in [−1, 1]."""
    rgb = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1
    lbl = encode(torch.from_numpy(np.ascontiguousarray(label)).long()[None], num_classes)[0]
    return torch.cat([rgb, lbl])


def tensor_to_pair(x: torch.Tensor, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(3 + nbits, H, W) → uint8 (H, W, 3) image (clipped to [−1, 1]) and uint8 (H, W) ids."""
    rgb = ((x[:3].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0)
    label = decode(x[None, 3:].float(), num_classes)[0].to(torch.uint8)
    return rgb.cpu().numpy(), label.cpu().numpy()
