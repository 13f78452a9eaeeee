"""The YAML configuration of `idgbr train label-embed|vae|refiner`, as dataclasses with
defaults, so a config only says what differs from them. One schema serves the three commands;
each reads the keys it needs.

    name: buildings
    out: runs/buildings/refiner        # model folder written (checkpoint/ and train_log.jsonl inside)
    data:
      dataset: buildings               # a name of idgbr.datasets (its train/val splits) …
      # images: DIR, labels: DIR, val_images: DIR, val_labels: DIR, classes: 2
      recipes: [buildings-osm, blocky] # coarse maps made on the fly …
      # coarse: [DIR/train/coarse/kfold] # … and/or read from folders; each sample draws one source
      # val_coarse: DIR/val/coarse/kfold
      crop: 128                        # training crops (random position, flips)
      # synthetic: DIR, ratio: 1.0     # refiner only: `idgbr synth sample` pairs mixed into the train split;
                                       # their coarse maps come from the recipes (folders have none for them)
      scale: 1.0                       # resample tiles by this factor before cropping
    model:
      preset: compact                  # or sd15 (sd15: folder of Stable Diffusion v1.5, else the HF cache)
      vae: runs/buildings/vae          # compact: the VAE of `idgbr train vae`
      label_embed: runs/buildings/label-embed
    train: {steps: 3000, batch_size: 4, lr: 0.0003, warmup: 100, max_minutes: 28}
    sampling: {sampler: ddim-trailing, steps: 4, guidance: 3.0}   # the card's default

The Stable Diffusion recipe of the paper (GPU): preset sd15, crop 512, batch_size 4, lr 1e-5,
steps 80000 (`resources/configs/refiner-sd15-buildings.yaml`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config_file import build_section, read_mapping
from ..errors import InputError
from .train import TrainConfig as RefinerTrainConfig


@dataclass
class DataConfig:
    dataset: str | None = None  # a name of idgbr.datasets
    root: str | None = None  # shared data folder (default: $IDGBR_DATA or ../shared/data)
    split: str = "train"
    val_split: str = "val"
    images: str | None = None  # folders instead of a dataset: PNG/TIF tiles matched by stem
    labels: str | None = None
    coarse: list[str] | str | None = None  # folders of coarse maps (by tile id or stem), mixed with recipes
    val_images: str | None = None
    val_labels: str | None = None
    val_coarse: str | None = None  # validation coarse maps (default: the recipes in turn)
    classes: list[str] | int | None = None  # folders only: class names or count
    recipes: list[str] = field(default_factory=lambda: ["mixed"])  # idgbr.coarsen recipes; [] for folders only
    crop: int = 128
    scale: float = 1.0
    flips: bool = True
    val_tiles: int = 4  # validation tiles (spread over the val split), refined whole
    gsd_m: float | None = None  # the card's GSD (default: the dataset's median tile GSD ÷ scale)
    synthetic: str | None = None  # refiner: generated pairs mixed into the train split (idgbr.synth.mix) …
    ratio: float = 1.0  # … this many per real tile; they get the same scale and crop as real tiles


@dataclass
class ModelConfig:
    preset: str = "compact"
    sd15: str | None = None  # Stable Diffusion v1.5 diffusers folder (sd15 preset)
    vae: str | None = None  # trained VAE folder (compact preset)
    label_embed: str | None = None  # trained label-embedding folder
    repa_teacher: str | None = None  # local Dinov2Model folder; REPA off without one
    label_hidden: int = 128


@dataclass
class TrainConfig(RefinerTrainConfig):
    """The refiner trainer's settings (idgbr.diffusion.train.TrainConfig: optimiser, EMA, CFG
    dropout, cubic timesteps, REPA, precision) with CPU-sized defaults, plus what the run loops
    and the label-embedding and VAE steps read."""

    steps: int = 3000
    lr: float = 3e-4
    warmup: int = 100
    noise_std: float = 0.3  # label-embed: Gaussian noise on the codes
    kl_weight: float = 1e-6  # vae: weight of the KL term
    label_share: float = 0.5  # vae: share of each batch made of embedded label maps
    log_every: int = 20
    checkpoint_every: int = 200
    validate_every: int = 500  # refiner only; 0 = only at the end
    max_minutes: float | None = None  # stop (checkpoint, save) when this wall time is spent
    threads: int | None = None
    device: str = "auto"


@dataclass
class CardConfig:
    """What the saved model card says beyond what training measures."""

    description: str = ""
    task: str = ""
    tile_size: int = 256
    overlap: float = 0.25
    building_classes: list[int] = field(default_factory=list)


@dataclass
class DiffusionConfig:
    name: str = "model"
    out: str = "runs/model"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: dict[str, Any] = field(default_factory=lambda: {"sampler": "ddim-trailing", "steps": 4, "guidance": 3.0})
    card: CardConfig = field(default_factory=CardConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> "DiffusionConfig":
        sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "card": CardConfig}
        kwargs: dict[str, Any] = {}
        for key, value in (data or {}).items():
            if key in sections:
                kwargs[key] = build_section(sections[key], value or {}, f"{where}: {key}")
            elif key in {"name", "out", "sampling"}:
                kwargs[key] = value
            else:
                raise InputError(f"{where}: unknown key {key!r} (known: name, out, sampling, {', '.join(sections)})")
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | Path) -> "DiffusionConfig":
        return cls.from_dict(read_mapping(path), str(path))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

