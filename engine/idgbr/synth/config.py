"""The YAML configuration of `idgbr synth train`, as dataclasses with defaults, so a config only
says what differs from them.

    name: synth-landcover
    out: runs/synth-landcover             # the model folder written (work files in <out>.work)
    data: {dataset: landcover, crop: 128, limit: 40}   # or images/labels folders (+ classes)
    base: {steps: 3000, batch_size: 4}    # the base stage: pairs at crop/2 (64²)
    sr: {steps: 1500, batch_size: 2, block_out_channels: [16, 32, 64]}   # ×2 super-resolution
    train: {max_minutes: 38, threads: 1}
    sampling: {sampler: ddpm, steps: 250}  # the card's default (ddpm: 1000 without steps)

Noise schedule of the paper: DDPM, ε-prediction, T = 1000, linear β from 1e-4 to 2e-2.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config_file import build_section, read_mapping
from ..errors import InputError

SCHEDULE: dict[str, Any] = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4,
                            "beta_end": 2e-2, "prediction_type": "epsilon"}
SAMPLERS = ("ddpm", "ddim", "dpm++")


@dataclass
class DataConfig:
    dataset: str | None = None  # a name of idgbr.datasets (its train split)
    root: str | None = None  # shared data folder (default: $IDGBR_DATA or ../shared/data)
    images: str | None = None  # folders instead of a dataset: tiles matched by stem
    labels: str | None = None
    classes: list[str] | int | None = None  # folders only: class names or count
    binary_255: bool = False  # folders only: labels are 0/255 masks
    gsd_m: float | None = None  # ground sample distance of the tiles (default: the dataset's)
    limit: int | None = None  # only the first N training tiles: scarce data, deterministically
    crop: int = 128  # native-resolution training crops


@dataclass
class StageConfig:
    """One stage's UNet2DModel (attention only at the lowest resolution) and optimisation."""

    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    layers_per_block: int = 1
    norm_num_groups: int = 8
    attention_head_dim: int = 32
    steps: int = 3000
    batch_size: int = 4
    lr: float = 2e-4


@dataclass
class BaseConfig(StageConfig):
    resolution: int | None = None  # default: crop / 2


@dataclass
class SRConfig(StageConfig):
    enabled: bool = True  # the ×2 stage: its output is 2 × base.resolution
    steps: int = 1500
    batch_size: int = 2


@dataclass
class TrainConfig:
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    steps: int | None = None  # both stages (overrides their own; `--steps`)
    max_minutes: float | None = None  # the whole run, split between the stages by their steps
    warmup: int = 100
    ema_decay: float = 0.999
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    log_every: int = 50
    checkpoint_every: int = 250


@dataclass
class SamplingConfig:
    """The card's default sampling: the paper's full ancestral DDPM unless a config says less."""

    sampler: str = "ddpm"
    steps: int | None = None  # None: 1000 for ddpm, 50 for ddim and dpm++


@dataclass
class SynthConfig:
    name: str = "synth"
    out: str = "runs/synth"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    base: BaseConfig = field(default_factory=BaseConfig)
    sr: SRConfig = field(default_factory=SRConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        if self.sampling.sampler not in SAMPLERS:
            raise InputError(f"sampling.sampler: {self.sampling.sampler!r} is not one of {', '.join(SAMPLERS)}")
        if self.data.limit is not None and self.data.limit < 1:
            raise InputError("data.limit must be at least 1 tile")
        for name, stage, res in (("base", self.base, self.base_resolution), ("sr", self.sr, self.sr_resolution)):
            factor = 2 ** (len(stage.block_out_channels) - 1)
            if res % factor or any(c % stage.norm_num_groups for c in stage.block_out_channels):
                raise InputError(f"{name}: resolution {res} must divide by {factor} and block_out_channels "
                                 f"{stage.block_out_channels} by norm_num_groups {stage.norm_num_groups}")

    @property
    def base_resolution(self) -> int:
        return self.base.resolution or self.data.crop // 2

    @property
    def sr_resolution(self) -> int:
        return 2 * self.base_resolution

    @property
    def work_path(self) -> Path:
        return Path(f"{self.out}.work")

    def stage_steps(self, stage: str) -> int:
        """Training steps of 'base' or 'sr' (0 for a disabled SR stage); train.steps wins."""
        if stage == "sr" and not self.sr.enabled:
            return 0
        return self.train.steps if self.train.steps is not None else getattr(self, stage).steps

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> "SynthConfig":
        sections = {"data": DataConfig, "base": BaseConfig, "sr": SRConfig, "train": TrainConfig,
                    "sampling": SamplingConfig}
        values = dict(data or {})
        for key, kind in sections.items():
            if not isinstance(values.get(key) or {}, dict):
                raise InputError(f"{where}: {key} must be a mapping")
            values[key] = build_section(kind, values.get(key) or {}, f"{where}: {key}")
        return build_section(cls, values, where)

    @classmethod
    def load(cls, path: str | Path) -> "SynthConfig":
        return cls.from_dict(read_mapping(path), str(path))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

