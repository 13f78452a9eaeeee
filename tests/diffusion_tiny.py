"""Tiny IDGBR configurations for the diffusion tests: two UNet levels of 8/16 channels and a
2× VAE, so that a forward pass on a 32² tile takes milliseconds."""
from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from idgbr.diffusion.model import SD15_SCHEDULE, IDGBRModel, plain_config


def tiny_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8, attention_head_dim=4, norm_num_groups=4)


def tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(4, 8), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4, mid_block_add_attention=False, sample_size=32)


# One thread: on a shared 2-core machine, two OpenMP threads on these tiny tensors spin-wait
# for each other and run 10-20× slower.
torch.set_num_threads(1)


def tiny_model(num_classes: int = 2, seed: int = 0, **overrides: Any) -> IDGBRModel:
    torch.manual_seed(seed)
    kwargs: dict[str, Any] = dict(unet_config=plain_config(tiny_unet().config), vae_config=plain_config(tiny_vae().config),
                                  num_classes=num_classes, label_hidden=16, noise_schedule=dict(SD15_SCHEDULE))
    return IDGBRModel(**{**kwargs, **overrides}).eval()


def tiny_batch(num_classes: int, batch: int = 2, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images in [-1, 1] and class maps with a few unknown (255) pixels."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    labels = torch.randint(0, num_classes, (batch, size, size), generator=g)
    labels[:, :2, :2] = 255
    return image, labels
