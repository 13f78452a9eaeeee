"""The identity refiner: the coarse map as one-hot probabilities. It runs the whole pipeline
without a network, and it is the "coarse" row every refiner is compared against."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .base import TileBatch, one_hot
from .card import ModelCard
from .registry import register_refiner


@register_refiner("identity")
class IdentityRefiner:
    def __init__(self, card: ModelCard, folder: Path | None = None, device: str = "auto",
                 seed: int | None = None, **options: Any) -> None:
        if options:
            raise InputError(f"model {card.name!r} takes no options ({', '.join(sorted(options))} given)")
        self.card = card
        self.num_classes = card.num_classes

    def bind_classes(self, num_classes: int) -> None:
        self.card.check_classes(num_classes)
        self.num_classes = self.card.num_classes or num_classes

    def predict(self, batch: TileBatch) -> np.ndarray:
        if self.num_classes is None:
            raise RuntimeError("bind_classes() must be called before predict()")
        return one_hot(batch.coarse, self.num_classes)
