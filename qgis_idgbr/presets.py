"""One-click presets: a kind of coarse layer and vectorization settings for a common job.

The refiner a preset picks is the engine's default for its kind (`idgbr.models.defaults`: the
installed model whose card claims that kind), the same one the command line and Processing run
with `--model auto`. Coarse segmentors are never offered as refiners.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

COARSE_TASK = "coarse-segmentation"


@dataclass(frozen=True)
class Preset:
    name: str
    kind: str  # a kind of idgbr.models.defaults.KIND_WORDS
    simplify_px: float
    min_area_m2: float
    regularize: bool
    class_name: str  # what class 1 is, for the legend when the model's card names no classes


PRESETS = (
    Preset("Buildings cleanup", "buildings", simplify_px=1.0, min_area_m2=5.0, regularize=True,
           class_name="building"),
    Preset("Farmland cleanup", "farmland", simplify_px=2.0, min_area_m2=200.0, regularize=False,
           class_name="field"),
    Preset("Land cover cleanup", "landcover", simplify_px=1.0, min_area_m2=1.0, regularize=False,
           class_name="class 1"),
)


def refiner_cards(cards: list[Any]) -> list[Any]:
    """The cards that can refine (the coarse segmentors only make coarse maps)."""
    return [c for c in cards if c.task != COARSE_TASK]


def preset_model(preset: Preset, cards: list[Any]) -> str | None:
    """The model name a preset picks among `cards`, or None when no refiner is installed."""
    from idgbr import InputError
    from idgbr.models.defaults import default_model

    try:
        return default_model(preset.kind, refiner_cards(cards))[0].name
    except InputError:
        return None


def coarse_choices(card: Any, coarse_cards: dict[str, Any]) -> list[str]:
    """Coarse models that can stand in for a coarse layer: the one the refiner's card names first,
    then the installed coarse segmentors."""
    named = [card.coarse_model] if card is not None and card.coarse_model else []
    return named + [name for name in coarse_cards if name not in named]


def card_summary(card: Any) -> str:
    """The card as the dock shows it: task, classes, GSD, tile size."""
    classes = ", ".join(c.name for c in card.classes) if card.classes else "those of the coarse layer"
    gsd = f"{card.gsd_m:g} m" if card.gsd_m else "any"
    return (f"<b>{card.name}</b> — {card.task or 'refiner'}<br>classes: {classes}<br>"
            f"GSD: {gsd} · tile: {card.tile_size} px<br><i>{card.description}</i>")
