"""Resolve `--model NAME_OR_DIR` to a model folder and load the refiner its card names.

A model is a folder holding `model_card.json` (+ `config.json` and `*.safetensors` for trained
models). It is found, in order, as: an existing path; a folder name under one of the model
roots (`IDGBR_MODELS_PATH`, then the repository's `resources/models`); a hub id
(`owner/name`) already in the local huggingface cache — nothing is ever downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError
from .base import Refiner
from .card import CARD_FILE, ModelCard

RefinerFactory = Callable[..., Refiner]
_FACTORIES: dict[str, RefinerFactory] = {}
_BUILTIN_MODULES = ("identity", "crf", "guided", "morph", "idgbr", "anchored")


def register_refiner(kind: str) -> Callable[[RefinerFactory], RefinerFactory]:
    """Class decorator: `kind` is the value of `refiner` in a model card."""

    def deco(factory: RefinerFactory) -> RefinerFactory:
        _FACTORIES[kind] = factory
        return factory

    return deco


def _import_builtins() -> None:
    import importlib

    for mod in _BUILTIN_MODULES:
        importlib.import_module(f"{__package__}.{mod}")


def resources_dir() -> Path:
    """The repository's `resources/` folder (the engine is installed editable from it)."""
    env = os.environ.get("IDGBR_RESOURCES")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "resources"


def model_roots() -> list[Path]:
    roots = [Path(p) for p in os.environ.get("IDGBR_MODELS_PATH", "").split(os.pathsep) if p]
    return roots + [resources_dir() / "models"]


def resolve_model_dir(name_or_dir: str | os.PathLike) -> Path:
    """The folder of a model given by path, installed name or cached hub id."""
    p = Path(name_or_dir).expanduser()
    if (p / CARD_FILE).is_file():
        return p
    if p.exists():
        raise InputError(f"{p} is not a model folder: {CARD_FILE} is missing")
    name = str(name_or_dir)
    for root in model_roots():
        if (root / name / CARD_FILE).is_file():
            return root / name
    if name.count("/") == 1:
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(name, local_files_only=True))
        except Exception as e:  # the hub client raises several types for "not cached"
            raise InputError(f"model {name!r} is not in the local huggingface cache ({e.__class__.__name__})") from e
        if (folder / CARD_FILE).is_file():
            return folder
        raise InputError(f"cached hub model {name!r} has no {CARD_FILE}")
    known = ", ".join(c.name for c in list_models()) or "none"
    raise InputError(f"unknown model {name!r}: not a folder, and not an installed model ({known})")


def list_models() -> list[ModelCard]:
    """Cards of the installed models, first root wins on equal names."""
    seen: dict[str, ModelCard] = {}
    for root in model_roots():
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if (folder / CARD_FILE).is_file() and folder.name not in seen:
                seen[folder.name] = ModelCard.load(folder)
    return list(seen.values())


def load_refiner(name_or_dir: str | os.PathLike, device: str = "auto", **options: Any) -> Refiner:
    """Load the refiner of a model folder. `options` are refiner-specific (sampling steps…)."""
    folder = resolve_model_dir(name_or_dir)
    card = ModelCard.load(folder)
    if card.is_coarse_segmentor:
        refiners = ", ".join(c.name for c in list_models() if not c.is_coarse_segmentor) or "none"
        raise InputError(f"model {card.name!r} is a coarse segmentor (it makes a coarse map from the image "
                         "alone), not a refiner: pass it as --coarse-model (without --coarse), and a refiner "
                         f"as --model (installed refiners: {refiners})")
    _import_builtins()
    factory = _FACTORIES.get(card.refiner)
    if factory is None:
        raise InputError(f"model {card.name!r} needs refiner type {card.refiner!r}, which this engine "
                         f"does not have (known: {', '.join(sorted(_FACTORIES))})")
    return factory(card=card, folder=folder, device=device, **options)
