"""The SatSynth generator: a base UNet that denoises (image, label-bits) pairs at half the
training resolution, and a super-resolution UNet that doubles it, conditioned at every step on
the bilinearly upsampled low-resolution pair (concatenated to its input channels).

A model folder holds `base/` and `sr/` (diffusers `save_pretrained`, safetensors EMA weights)
and `synth_card.json`: classes, bit planes, resolutions, GSD, the data and the training.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from ..errors import InputError
from ..io.outputs import staged_folder
from ..models.card import ClassInfo
from .bits import num_bits
from .config import StageConfig

CARD_FILE = "synth_card.json"
STAGES = ("base", "sr")


@dataclass
class SynthCard:
    """Contents of `synth_card.json`. gsd_m: of the generated pairs (the final stage's)."""

    name: str
    classes: list[ClassInfo]
    num_bits: int
    base_resolution: int
    sr_resolution: int | None  # None: no SR stage
    crop: int
    gsd_m: float | None
    data_gsd_m: float | None
    schedule: dict[str, Any]
    sampling: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        """Channels of a pair: RGB, then the label's bit planes."""
        return 3 + self.num_bits

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> "SynthCard":
        try:
            values = dict(data)
            values["classes"] = [ClassInfo(int(c["id"]), str(c["name"]), str(c["color"])) for c in data["classes"]]
            card = cls(**values)
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{where}: not a valid synth card ({e})") from e
        if card.num_bits != num_bits(card.num_classes):
            raise InputError(f"{where}: {card.num_classes} classes need {num_bits(card.num_classes)} bits, "
                             f"not {card.num_bits}")
        return card


@dataclass
class SynthModel:
    card: SynthCard
    base: UNet2DModel
    sr: UNet2DModel | None

    def to(self, device: str) -> "SynthModel":
        for unet in self.unets():
            unet.to(device)
        return self

    def eval(self) -> "SynthModel":
        for unet in self.unets():
            unet.eval()
        return self

    def unets(self) -> list[UNet2DModel]:
        return [u for u in (self.base, self.sr) if u is not None]


def build_unet(stage: StageConfig, resolution: int, channels: int, conditioned: bool) -> UNet2DModel:
    """A UNet2DModel over pairs of `channels`; `conditioned` (SR) takes the upsampled
    low-resolution pair as as many extra input channels. Attention only at the lowest level."""
    depth = len(stage.block_out_channels)
    return UNet2DModel(
        sample_size=resolution, in_channels=2 * channels if conditioned else channels, out_channels=channels,
        block_out_channels=tuple(stage.block_out_channels), layers_per_block=stage.layers_per_block,
        down_block_types=("DownBlock2D",) * (depth - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (depth - 1),
        norm_num_groups=stage.norm_num_groups, attention_head_dim=stage.attention_head_dim)


def sr_condition(low: torch.Tensor) -> torch.Tensor:
    """The SR stage's condition: the low-resolution pair (B, C, h, w) upsampled bilinearly to
    (B, C, 2h, 2w), the same in training and in sampling."""
    return F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)


def save_synth_model(model: SynthModel, folder: str | Path) -> Path:
    """Write the model folder through a staging folder (replacing an earlier one)."""
    with staged_folder(folder, overwrite=True) as stage:
        for name, unet in zip(STAGES, (model.base, model.sr)):
            if unet is not None:
                unet.save_pretrained(stage / name, safe_serialization=True)
        (stage / CARD_FILE).write_text(json.dumps(model.card.to_dict(), indent=2) + "\n")
    return Path(folder)


def load_synth_model(folder: str | Path, device: str = "cpu") -> SynthModel:
    """A folder of `save_synth_model`, in eval mode on `device`."""
    folder = Path(folder)
    card_file = folder / CARD_FILE
    if not folder.is_dir():
        raise InputError(f"synth model folder {folder} does not exist")
    if not card_file.is_file():
        raise InputError(f"{folder} is not a synth model folder: {CARD_FILE} is missing")
    try:
        card = SynthCard.from_dict(json.loads(card_file.read_text()), str(card_file))
    except json.JSONDecodeError as e:
        raise InputError(f"{card_file}: not valid JSON ({e})") from e
    unets = [_load_unet(folder / name, card, conditioned=name == "sr")
             if name == "base" or card.sr_resolution else None for name in STAGES]
    return SynthModel(card, *unets).to(device).eval()


def _load_unet(path: Path, card: SynthCard, conditioned: bool) -> UNet2DModel:
    if not (path / "config.json").is_file():
        raise InputError(f"synth model: {path} is missing (no config.json)")
    try:
        unet = UNet2DModel.from_pretrained(path, use_safetensors=True, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError) as e:
        raise InputError(f"synth model: cannot load {path} ({e})") from e
    want = (2 * card.channels if conditioned else card.channels, card.channels)
    if (unet.config.in_channels, unet.config.out_channels) != want:
        raise InputError(f"synth model: {path} has {unet.config.in_channels}→{unet.config.out_channels} channels, "
                         f"the card's {card.num_classes} classes need {want[0]}→{want[1]}")
    return unet
