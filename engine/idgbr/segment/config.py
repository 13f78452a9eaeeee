"""The YAML configuration of `idgbr train coarse` (and of the models `idgbr predict coarse
--kfold` trains), as dataclasses with defaults, so a config only says what differs.

    name: coarse-buildings
    out: resources/models/coarse-buildings      # the model folder written
    data: {dataset: buildings}                  # or images/labels (+ val_images/val_labels) folders
                                                # (+ synthetic: DIR, ratio: R to mix generated pairs in)
    model: {arch: segformer, variant: b0}       # pretrained: local folder or cached hub id
    train: {crop: 256, batch_size: 8, steps: 4000, max_minutes: 14, lr: 0.0006}
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config_file import build_section, read_mapping


@dataclass
class DataConfig:
    dataset: str | None = None  # a name of idgbr.datasets (uses its train/val split)
    root: str | None = None  # shared data folder (default: $IDGBR_DATA or ../shared/data)
    images: str | None = None
    labels: str | None = None
    val_images: str | None = None
    val_labels: str | None = None
    classes: list[str] | int | None = None  # folders only: class names or count
    binary_255: bool = False  # folders only: labels are 0/255 masks
    ignore_index: int | None = None  # label value the loss and the metrics ignore
    synthetic: str | None = None  # `idgbr synth sample` folder mixed into the train split (idgbr.synth.mix)
    ratio: float = 1.0  # synthetic pairs per real tile (real tiles are repeated to reach it)


@dataclass
class ModelConfig:
    arch: str = "segformer"  # or dinov2-linear (needs pretrained)
    variant: str = "b0"  # MiT-b0 … b5
    pretrained: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # SegformerConfig fields


@dataclass
class TrainConfig:
    crop: int = 256
    augment: bool = True  # the paper's augmentations; False: plain random crops (for comparisons)
    batch_size: int = 8
    steps: int = 4000
    max_minutes: float | None = None  # stop earlier when this wall time is spent
    lr: float = 6e-4
    weight_decay: float = 0.01
    warmup_steps: int = 50
    dice_weight: float = 0.0  # loss = CE + dice_weight · soft Dice
    log_every: int = 50  # training loss is logged every this many steps
    val_every: int = 200
    val_max_tiles: int | None = None
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    tile_size: int = 512  # the card's inference tile size
    overlap: float = 0.25


@dataclass
class CoarseConfig:
    name: str
    out: str
    work_dir: str | None = None  # checkpoint + log (default: <out>.work)
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def work_path(self) -> Path:
        return Path(self.work_dir) if self.work_dir else Path(f"{self.out}.work")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CoarseConfig":
        data = dict(data)
        parts = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
        for key, kind in parts.items():
            data[key] = build_section(kind, data.get(key) or {}, key)
        return build_section(cls, data, "config")

    @classmethod
    def load(cls, path: str | Path) -> "CoarseConfig":
        return cls.from_dict(read_mapping(path))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

