"""A trained coarse segmentor as the pipeline and the k-fold predictor use it: load a model
folder by name or path, give it image tiles in [0, 1], get class probabilities back."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..device import resolve_device
from ..errors import InputError
from ..models.card import COARSE_TASK, ModelCard
from ..models.registry import list_models, resolve_model_dir
from ..models.weights import check_weights
from .model import KINDS, load_network

__all__ = ["COARSE_TASK", "Segmentor", "load_segmentor"]


class Segmentor:
    """A network with its card. `predict` takes what the pipeline reads (float32 (B, 3, H, W)
    in [0, 1]) and returns float32 (B, K, H, W) probabilities summing to 1 over K."""

    def __init__(self, net: nn.Module, card: ModelCard, device: str = "cpu") -> None:
        if card.classes is None:
            raise InputError(f"coarse model {card.name!r}: its card must list its classes")
        self.card = card
        self.device = device
        self.net = net.to(device).eval()
        norm = card.normalization
        self._mean = torch.tensor(norm["mean"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(norm["std"], dtype=torch.float32, device=device).view(1, 3, 1, 1)

    @property
    def num_classes(self) -> int:
        return len(self.card.classes or [])

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self._mean) / self._std

    @torch.inference_mode()
    def predict(self, image: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32, device=self.device)
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"coarse model input must be (B, 3, H, W), got {tuple(x.shape)}")
        probs = torch.softmax(self.net(self.normalize(x)).float(), dim=1)
        return probs.cpu().numpy()

    def predict_labels(self, image: np.ndarray) -> np.ndarray:
        """Class ids (H, W) uint8 of one whole uint8 H×W×3 tile (the datasets' format)."""
        probs = self.predict(image.transpose(2, 0, 1)[None].astype(np.float32) / 255)
        return probs[0].argmax(0).astype(np.uint8)


def load_segmentor(name_or_dir: str | os.PathLike, device: str = "auto") -> Segmentor:
    """The coarse model of a model folder, an installed model name, or a cached hub id."""
    folder = resolve_model_dir(name_or_dir)
    card = ModelCard.load(folder)
    if card.refiner not in KINDS:
        coarse = ", ".join(c.name for c in list_models() if c.is_coarse_segmentor) or "none"
        raise InputError(f"model {card.name!r} is a {card.refiner!r} refiner, not a coarse segmentor: pass it as "
                         f"--model, and a coarse segmentor as --coarse-model (installed: {coarse})")
    check_weights(folder, "coarse model")
    device = resolve_device(device)
    return Segmentor(load_network(Path(folder), card.refiner, len(card.classes or [])), card, device)
