"""The coarse segmentation networks: a SegFormer (MiT-b0 … b5, or a custom size) or a DINOv2
backbone with a linear head, built from scratch or from a local pretrained folder, and saved as
a model folder (model_card.json + config.json + model.safetensors) like the refiners'.

Both map a normalised (B, 3, H, W) batch to (B, K, H, W) logits at full resolution, so the
training loop and the predictor never care which one they hold.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

SEGFORMER_KIND = "segformer"
DINOV2_KIND = "dinov2-linear"
KINDS = (SEGFORMER_KIND, DINOV2_KIND)
IMAGENET_NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

# The MiT encoder sizes of the SegFormer paper (Xie et al. 2021, table 6).
_MIT_WIDE = [64, 128, 320, 512]
MIT_VARIANTS: dict[str, dict[str, Any]] = {
    "b0": {"hidden_sizes": [32, 64, 160, 256], "depths": [2, 2, 2, 2], "decoder_hidden_size": 256},
    "b1": {"hidden_sizes": _MIT_WIDE, "depths": [2, 2, 2, 2], "decoder_hidden_size": 256},
    "b2": {"hidden_sizes": _MIT_WIDE, "depths": [3, 4, 6, 3], "decoder_hidden_size": 768},
    "b3": {"hidden_sizes": _MIT_WIDE, "depths": [3, 4, 18, 3], "decoder_hidden_size": 768},
    "b4": {"hidden_sizes": _MIT_WIDE, "depths": [3, 8, 27, 3], "decoder_hidden_size": 768},
    "b5": {"hidden_sizes": _MIT_WIDE, "depths": [3, 6, 40, 3], "decoder_hidden_size": 768},
}


class SegformerNet(nn.Module):
    """SegFormer whose output is upsampled from 1/4 to the input size."""

    kind = SEGFORMER_KIND

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        self.hf = hf_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.hf(pixel_values=x).logits
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def save(self, folder: Path) -> None:
        self.hf.save_pretrained(folder, safe_serialization=True)


class Dinov2LinearNet(nn.Module):
    """DINOv2 patch tokens → BatchNorm → 1×1 conv: the "linear" head of the DINOv2 paper.
    The input is resized to a multiple of the patch size and the logits back to the input."""

    kind = DINOV2_KIND

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        width = backbone.config.hidden_size
        self.head = nn.Sequential(nn.BatchNorm2d(width), nn.Conv2d(width, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patch = self.backbone.config.patch_size
        h, w = x.shape[-2:]
        gh, gw = max(1, round(h / patch)), max(1, round(w / patch))
        inp = F.interpolate(x, size=(gh * patch, gw * patch), mode="bilinear", align_corners=False)
        tokens = self.backbone(pixel_values=inp).last_hidden_state[:, 1:]  # drop the CLS token
        tokens = tokens[:, -gh * gw:]  # and register tokens, when the backbone has them
        grid = tokens.transpose(1, 2).reshape(x.shape[0], -1, gh, gw)
        return F.interpolate(self.head(grid), size=(h, w), mode="bilinear", align_corners=False)

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        self.backbone.config.save_pretrained(folder)
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(Path(folder) / WEIGHTS_FILE))


def build_network(arch: str, num_classes: int, variant: str = "b0", pretrained: str | None = None,
                  overrides: dict[str, Any] | None = None) -> nn.Module:
    """A new network for training. `pretrained` is a local folder or a hub id already in the
    huggingface cache (nothing is downloaded); without it the weights are random."""
    if arch == SEGFORMER_KIND:
        return SegformerNet(_segformer(num_classes, variant, pretrained, overrides or {}))
    if arch == DINOV2_KIND:
        if pretrained is None:
            raise InputError("the dinov2-linear coarse model needs a local pretrained DINOv2 (model.pretrained)")
        from transformers import Dinov2Model

        return Dinov2LinearNet(Dinov2Model.from_pretrained(pretrained, local_files_only=True, use_safetensors=True),
                               num_classes)
    raise InputError(f"unknown coarse model architecture {arch!r} (known: {', '.join(KINDS)})")


def _segformer(num_classes: int, variant: str, pretrained: str | None, overrides: dict[str, Any]) -> nn.Module:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    labels = {"num_labels": num_classes, "id2label": {i: str(i) for i in range(num_classes)},
              "label2id": {str(i): i for i in range(num_classes)}}
    if pretrained is not None:
        try:
            return SegformerForSemanticSegmentation.from_pretrained(
                pretrained, local_files_only=True, use_safetensors=True, ignore_mismatched_sizes=True, **labels)
        except OSError as e:
            raise InputError(f"pretrained SegFormer {pretrained!r} is not a local folder or cached hub id ({e})") from e
    if variant not in MIT_VARIANTS and not overrides:
        raise InputError(f"unknown MiT variant {variant!r} (known: {', '.join(MIT_VARIANTS)})")
    config = SegformerConfig(**{**MIT_VARIANTS.get(variant, {}), **overrides, **labels})
    return SegformerForSemanticSegmentation(config)


def load_network(folder: Path, kind: str, num_classes: int) -> nn.Module:
    """The network of a saved model folder, in eval mode."""
    if kind == SEGFORMER_KIND:
        from transformers import SegformerForSemanticSegmentation

        net: nn.Module = SegformerNet(SegformerForSemanticSegmentation.from_pretrained(
            folder, local_files_only=True, use_safetensors=True))
    elif kind == DINOV2_KIND:
        from safetensors.torch import load_file
        from transformers import Dinov2Config, Dinov2Model

        config = Dinov2Config.from_dict(json.loads((folder / CONFIG_FILE).read_text()))
        net = Dinov2LinearNet(Dinov2Model(config), num_classes)
        net.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    else:
        raise InputError(f"model folder {folder}: {kind!r} is not a coarse segmentor (known: {', '.join(KINDS)})")
    return net.eval()
