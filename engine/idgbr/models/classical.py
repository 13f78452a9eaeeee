"""What the classical baseline refiners (crf, guided, morph) share: parameters from the model
folder's `config.json` overridden by options, class-agnostic binding, and the per-tile loop
that keeps NO_COARSE pixels unknown and leaves pixels the image does not cover untouched."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import InputError
from .base import NO_COARSE, TileBatch, one_hot
from .card import ModelCard

CONFIG_FILE = "config.json"


def load_params(folder: Path | None, defaults: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """`defaults`, updated by the folder's config.json, then by the caller's options (None
    means "not given"). Unknown names are errors: a misspelt option must not pass silently."""
    params = dict(defaults)
    sources: list[tuple[str, dict[str, Any]]] = []
    cfg = Path(folder) / CONFIG_FILE if folder is not None else None
    if cfg is not None and cfg.is_file():
        try:
            sources.append((str(cfg), json.loads(cfg.read_text())))
        except json.JSONDecodeError as e:
            raise InputError(f"{cfg}: not valid JSON ({e})") from e
    sources.append(("refiner options", {k: v for k, v in options.items() if v is not None}))
    for where, values in sources:
        unknown = set(values) - set(defaults)
        if unknown:
            raise InputError(f"{where}: unknown parameters {sorted(unknown)} (known: {', '.join(defaults)})")
        for name, value in values.items():
            try:
                params[name] = type(defaults[name])(value)
            except (TypeError, ValueError) as e:
                raise InputError(f"{where}: parameter {name!r} must be {type(defaults[name]).__name__}, "
                                 f"got {value!r}") from e
    return params


def normalise(probs: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Clip to >= 0 and rescale to sum 1 over axis 0; pixels with no mass take `fallback`."""
    probs = np.clip(np.nan_to_num(probs, nan=0.0), 0.0, None)
    total = probs.sum(0, keepdims=True)
    ok = total > 1e-6
    return np.where(ok, probs / np.where(ok, total, 1.0), fallback).astype(np.float32)


class ClassicalRefiner:
    """Base of the training-free refiners. Subclasses set `defaults` and implement
    `refine_tile`, which sees one tile and returns (K, H, W) probabilities; only its values
    on valid pixels with a known coarse class are kept."""

    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, card: ModelCard, folder: Path | None = None, device: str = "auto",
                 seed: int | None = None, **options: Any) -> None:
        self.card = card
        self.params = load_params(folder, self.defaults, options)
        self.num_classes: int | None = None

    def bind_classes(self, num_classes: int) -> None:
        if num_classes < 1:
            raise InputError(f"the coarse layer must have at least one class, got {num_classes}")
        self.num_classes = num_classes

    def predict(self, batch: TileBatch) -> np.ndarray:
        if self.num_classes is None:
            raise RuntimeError("bind_classes() must be called before predict()")
        prior = one_hot(batch.coarse, self.num_classes)
        out = prior.copy()
        for i in range(len(batch)):
            keep = batch.valid[i] & (batch.coarse[i] != NO_COARSE)
            if keep.any():
                refined = self.refine_tile(batch.image[i], prior[i], batch.valid[i], batch.coarse[i] != NO_COARSE)
                out[i][:, keep] = refined[:, keep]
        return out

    def refine_tile(self, image: np.ndarray, prior: np.ndarray, valid: np.ndarray, known: np.ndarray) -> np.ndarray:
        """image (3, H, W) in [0, 1]; prior (K, H, W) one-hot (uniform where not known);
        valid: pixels the image covers; known: pixels with a coarse class."""
        raise NotImplementedError
