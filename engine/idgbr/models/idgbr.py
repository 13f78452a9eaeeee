"""The IDGBR diffusion refiner: a trained model folder (`model_card.json`, `config.json`,
`*.safetensors`) behind the refiner protocol. Sampling options come from the caller, else from
the card's `training["sampling"]`, else from `SamplingOptions`' defaults."""
from __future__ import annotations

import contextlib
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..device import resolve_device
from ..errors import InputError
from .base import TileBatch
from .card import ModelCard
from .registry import register_refiner
from .weights import check_weights


@register_refiner("idgbr")
class IDGBRRefiner:
    """Options: steps, guidance, sampler, samples, seed (see `idgbr.diffusion.SamplingOptions`)."""

    def __init__(self, card: ModelCard, folder: Path, device: str = "auto", **options: Any) -> None:
        import torch

        from ..diffusion.model import IDGBRModel
        from ..diffusion.sampling import SamplingOptions

        if card.num_classes is None:
            raise InputError(f"model {card.name!r}: an idgbr model card must list its classes")
        known = {f.name for f in fields(SamplingOptions)}
        unknown = set(options) - known
        if unknown:
            raise InputError(f"unknown idgbr refiner options {sorted(unknown)} (known: {sorted(known)})")
        chosen = {**card.training.get("sampling", {}), **{k: v for k, v in options.items() if v is not None}}
        try:
            self.options = SamplingOptions(**chosen)
        except (TypeError, ValueError) as e:
            raise InputError(f"model {card.name!r}: bad sampling options: {e}") from e
        self.card = card
        self.num_classes = card.num_classes
        self.device = resolve_device(device)
        check_weights(folder, "model")
        self.model = IDGBRModel.from_pretrained(folder, use_safetensors=True).to(self.device).eval()
        if self.model.config.num_classes != card.num_classes:
            raise InputError(f"model {card.name!r}: card has {card.num_classes} classes, weights "
                             f"{self.model.config.num_classes}")
        norm = card.normalization
        self._mean = torch.tensor(norm.get("mean", [0.5] * 3), dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(norm.get("std", [0.5] * 3), dtype=torch.float32).view(1, 3, 1, 1)

    @property
    def nfe_per_tile(self) -> int:
        """Denoiser evaluations per tile at the current options."""
        return self.options.nfe_per_tile

    def describe(self) -> dict[str, Any]:
        return {**asdict(self.options), "nfe_per_tile": self.nfe_per_tile, "device": self.device}

    def bind_classes(self, num_classes: int) -> None:
        self.card.check_classes(num_classes)

    def predict(self, batch: TileBatch) -> np.ndarray:
        return self._run(batch)[0]

    def predict_with_uncertainty(self, batch: TileBatch) -> tuple[np.ndarray, np.ndarray]:
        """Mean probabilities and per-pixel disagreement between samples (B, H, W), zero for
        a single sample."""
        probs, unc = self._run(batch)
        return probs, unc if unc is not None else np.zeros((len(batch),) + probs.shape[2:], np.float32)

    def _run(self, batch: TileBatch) -> tuple[np.ndarray, np.ndarray | None]:
        import torch
        import torch.nn.functional as F

        from ..diffusion.sampling import sample

        h, w = batch.coarse.shape[1:]
        f = self.model.latent_factor
        pad = (0, -w % f, 0, -h % f)  # replicate-pad to a multiple of the latent grid, crop after
        image = (torch.from_numpy(np.ascontiguousarray(batch.image, np.float32)) - self._mean) / self._std
        coarse = torch.from_numpy(batch.coarse.astype(np.int64))
        image = F.pad(image, pad, mode="replicate").to(self.device)
        coarse = F.pad(coarse[:, None].float(), pad, mode="replicate")[:, 0].long().to(self.device)
        autocast = (torch.autocast("cuda", dtype=torch.float16) if self.device.startswith("cuda")
                    else contextlib.nullcontext())
        with autocast:
            result = sample(self.model, image, coarse, self.options)
        probs = result.probs[..., :h, :w].float().cpu().numpy()
        unc = None if result.uncertainty is None else result.uncertainty[..., :h, :w].float().cpu().numpy()
        return probs, unc
