"""What runs when the user leaves a setting to the model: which refiner (`model="auto"`, the
default of the command line, Processing and the dock alike) and the polygons' minimum area.

The refiner is chosen from the installed models' cards: the one whose `default_for` names the
coarse layer's kind (buildings, farmland, …, guessed from the layer's file and layer name or
given by a dock preset), else one marked `"any"`, else `identity`, which keeps the coarse map
and says so in the run summary. The lead's trained refiners claim their kinds in their cards,
so installing a better model changes the default without changing code.
"""
from __future__ import annotations

import re
from pathlib import Path

from .card import ModelCard
from .registry import list_models

AUTO = "auto"
FALLBACK = "identity"
ANY_KIND = "any"
# Words in a layer's file or layer name that tell what it maps.
KIND_WORDS: dict[str, tuple[str, ...]] = {
    "buildings": ("building", "footprint", "house", "roof"),
    "farmland": ("field", "parcel", "farm", "crop", "agri"),
    "roads": ("road", "street"),
    "landcover": ("landcover", "land_cover", "lulc", "corine"),
}
# Polygons smaller than this many image pixels are merged into their neighbour when the model
# card sets no minimum mapping unit: single-pixel specks are noise at any resolution.
DEFAULT_MIN_AREA_PX = 16


def layer_kind(coarse: str | Path | None, coarse_model_card: ModelCard | None = None) -> str | None:
    """The kind of map the coarse layer is, from its file and layer name, or from the data the
    coarse model was trained on; None when nothing says."""
    texts = []
    if coarse is not None:
        path, _, rest = str(coarse).partition("|")
        texts += [Path(path).stem, rest]
    if coarse_model_card is not None:
        texts += [coarse_model_card.name, str(coarse_model_card.training.get("data", ""))]
    words = re.split(r"[^a-z]+", " ".join(texts).lower())
    for kind, stems in KIND_WORDS.items():
        if any(w.startswith(stems) for w in words if w):
            return kind
    return None


def default_model(kind: str | None, cards: list[ModelCard] | None = None) -> tuple[ModelCard, str]:
    """The refiner to run for a coarse layer of `kind`, and why it was chosen (for the summary)."""
    refiners = [c for c in (list_models() if cards is None else cards) if not c.is_coarse_segmentor]
    for wanted in ([kind] if kind else []) + [ANY_KIND]:
        for card in refiners:
            if wanted in card.default_for:
                what = f"{kind} layers" if wanted == kind else "any layer"
                return card, f"the installed default for {what} (its model card)"
    fallback = next((c for c in refiners if c.name == FALLBACK), None)
    if fallback is None:
        from ..errors import InputError

        raise InputError("no refiner is installed (see `idgbr models list`); name one with --model")
    kind_text = f"{kind} layers" if kind else "this layer"
    return fallback, (f"no installed refiner is marked the default for {kind_text}, so the coarse map is kept "
                      "as it is; name a refiner with --model (`idgbr models list`)")


def default_min_area(card: ModelCard, classes: list, pixel_area_m2: float) -> tuple[float, str]:
    """The minimum polygon area in m² when the user sets none, and where it comes from. A
    per-class card value applies its smallest entry among `classes` (the sieve merges small
    regions whatever their class)."""
    mmu = card.min_area_m2
    if isinstance(mmu, dict):
        names = {c.name for c in classes}
        values = [float(v) for k, v in mmu.items() if k in names] or [float(v) for v in mmu.values()]
        if values:
            return min(values), "model card"
    elif mmu is not None:
        return float(mmu), "model card"
    return DEFAULT_MIN_AREA_PX * pixel_area_m2, f"{DEFAULT_MIN_AREA_PX} image pixels"
