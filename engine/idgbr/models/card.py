"""The model card: what a model folder says about itself (classes, GSD, tile size,
normalisation, refiner type), so the pipeline and the QGIS plugin can fill their defaults."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

CARD_FILE = "model_card.json"
COARSE_TASK = "coarse-segmentation"
"""The card task of coarse segmentors: they make a coarse map from the image, they refine nothing."""

# Colours for class-agnostic refiners (identity, classical baselines): background transparent-ish
# grey, then a qualitative palette an analyst can tell apart on an orthophoto.
DEFAULT_PALETTE = [
    "#9e9e9e", "#e31a1c", "#33a02c", "#1f78b4", "#ff7f00", "#6a3d9a",
    "#b15928", "#fb9a99", "#b2df8a", "#a6cee3", "#fdbf6f", "#cab2d6",
]


@dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str
    color: str  # "#rrggbb"

    def rgba(self) -> tuple[int, int, int, int]:
        c = self.color.lstrip("#")
        return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16), 255


def default_classes(num_classes: int) -> list[ClassInfo]:
    """Classes for a map whose scheme is only known by its number of classes."""
    return [
        ClassInfo(i, "background" if i == 0 else f"class {i}", DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)])
        for i in range(num_classes)
    ]


@dataclass
class ModelCard:
    """Contents of `model_card.json`. `classes` is None for class-agnostic refiners, which
    take their classes from the coarse layer."""

    name: str
    refiner: str
    task: str = ""
    description: str = ""
    classes: list[ClassInfo] | None = None
    background_class: int | None = 0
    building_classes: list[int] = field(default_factory=list)
    gsd_m: float | None = None
    gsd_range_m: list[float] | None = None  # [finest, coarsest] GSD the model was trained on; inputs outside are resampled
    tile_size: int = 512
    overlap: float = 0.25
    normalization: dict[str, Any] = field(default_factory=lambda: {"mean": [0.5] * 3, "std": [0.5] * 3})
    coarse_model: str | None = None
    # Coarse-layer kinds ("buildings", "farmland", "landcover", "roads", or "any") this model is
    # the default refiner for, when the user names no model (see models/defaults.py).
    default_for: list[str] = field(default_factory=list)
    # Minimum mapping unit of the polygons: one value in m², or one per class name.
    min_area_m2: float | dict[str, float] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # folder the card was read from; not serialised

    @property
    def is_coarse_segmentor(self) -> bool:
        return self.task == COARSE_TASK

    @property
    def num_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    def check_classes(self, num_classes: int) -> None:
        """InputError when a coarse layer has more classes than the card lists (class-agnostic
        cards take any number)."""
        if self.num_classes is not None and num_classes > self.num_classes:
            raise InputError(f"model {self.name!r} has {self.num_classes} classes, "
                             f"the coarse layer has {num_classes}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> "ModelCard":
        data = dict(data)
        classes = data.pop("classes", None)
        if classes is not None:
            classes = [ClassInfo(int(c["id"]), str(c["name"]), str(c.get("color", DEFAULT_PALETTE[i % 12])))
                       for i, c in enumerate(classes)]
            if [c.id for c in classes] != list(range(len(classes))):
                raise InputError(f"model card {path}: class ids must be 0..K-1 in order")
        known = set(cls.__dataclass_fields__) - {"classes", "path"}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"model card {path}: unknown keys {sorted(unknown)}")
        if "name" not in data or "refiner" not in data:
            raise InputError(f"model card {path}: 'name' and 'refiner' are required")
        return cls(classes=classes, path=path, **data)

    @classmethod
    def load(cls, folder: Path) -> "ModelCard":
        f = Path(folder) / CARD_FILE
        if not f.is_file():
            raise InputError(f"{folder} is not a model folder: {CARD_FILE} is missing")
        try:
            data = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{f}: not valid JSON ({e})") from e
        return cls.from_dict(data, path=Path(folder))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        return d

    def save(self, folder: Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / CARD_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
