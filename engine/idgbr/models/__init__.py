"""Refiners: the protocol, model cards, and the registry that loads them by name or folder."""
from .base import NO_COARSE, Refiner, TileBatch, one_hot
from .card import ClassInfo, ModelCard, default_classes
from .registry import list_models, load_refiner, register_refiner, resolve_model_dir, resources_dir

__all__ = [
    "NO_COARSE", "Refiner", "TileBatch", "one_hot", "ClassInfo", "ModelCard", "default_classes",
    "list_models", "load_refiner", "register_refiner", "resolve_model_dir", "resources_dir",
]
