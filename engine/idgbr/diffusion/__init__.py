"""The IDGBR conditional latent diffusion refiner: model, presets, sampling and training.
The names below are imported on first use, so `idgbr.diffusion.cli` (loaded by every `idgbr`
command) does not pull in torch and diffusers."""
from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {"IDGBRModel": ".model", "SamplingOptions": ".sampling", "sample": ".sampling"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_LAZY[name], __name__), name)
