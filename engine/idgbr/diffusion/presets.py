"""Model presets. `compact`: the IDGBR architecture with small widths and its own small VAE,
trainable on a CPU. `sd15`: full size, initialised from a local Stable Diffusion v1.5
diffusers folder (UNet, VAE, and the CLIP text encoder for the empty-prompt context)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from ..errors import InputError
from .model import SD15_SCHEDULE, IDGBRModel, plain_config

log = logging.getLogger(__name__)

SD15_HUB_IDS = ("stable-diffusion-v1-5/stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5")
"""Hub ids looked for in the local huggingface cache when no SD folder is given."""

PRESETS = ("compact", "sd15")


def compact_unet_config() -> dict[str, Any]:
    """A small UNet: three levels, one resnet per level, attention only at the two coarser ones
    (self-attention over a 64² latent would cost more than everything else together)."""
    return plain_config(UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, block_out_channels=(16, 32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8).config)


def compact_vae_config() -> dict[str, Any]:
    """A small VAE, 4× downsampling to 4 latent channels, no attention (so any tile size is cheap)."""
    return plain_config(AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 32), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        norm_num_groups=8, mid_block_add_attention=False, sample_size=256).config)


def compact(num_classes: int, vae: str | Path | None = None, label_embed: str | Path | None = None,
            **overrides: Any) -> IDGBRModel:
    """The compact preset; `vae` and `label_embed` are folders of separately trained parts."""
    vae_model = AutoencoderKL.from_pretrained(vae, use_safetensors=True) if vae else None
    kwargs: dict[str, Any] = dict(
        unet_config=compact_unet_config(), vae_config=plain_config(vae_model.config) if vae_model else compact_vae_config(),
        num_classes=num_classes, guidance_kv_size=16, noise_schedule=dict(SD15_SCHEDULE))
    model = IDGBRModel(**{**kwargs, **overrides})
    if vae_model is not None:
        model.vae.load_state_dict(vae_model.state_dict())
    _load_label_embed(model, label_embed)
    return model


def find_sd15(path: str | Path | None = None) -> Path:
    """A Stable Diffusion v1.5 diffusers folder: `path`, else a cached hub snapshot (never
    downloaded)."""
    if path is not None:
        folder = Path(path).expanduser()
        if not (folder / "unet" / "config.json").is_file():
            raise InputError(f"{folder} is not a diffusers Stable Diffusion folder (no unet/config.json)")
        return folder
    from huggingface_hub import snapshot_download

    for repo in SD15_HUB_IDS:
        try:
            return Path(snapshot_download(repo, local_files_only=True))
        except Exception:  # the hub client raises several types for "not cached"
            continue
    raise InputError(f"no Stable Diffusion v1.5 folder given and none in the huggingface cache ({SD15_HUB_IDS[0]})")


@torch.no_grad()
def empty_prompt_embedding(folder: Path) -> torch.Tensor | None:
    """CLIP's embedding of the empty prompt (1, tokens, dim), or None without a text encoder."""
    if not (folder / "text_encoder").is_dir() or not (folder / "tokenizer").is_dir():
        return None
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", use_safetensors=True).eval()
    ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return encoder(ids).last_hidden_state.float()


def sd15(num_classes: int, path: str | Path | None = None, label_embed: str | Path | None = None,
         **overrides: Any) -> IDGBRModel:
    """The sd15 preset: UNet and VAE weights from the folder; the frozen condition encoder is a
    copy of the pretrained UNet encoder; the null context is CLIP's empty prompt when the folder
    has a text encoder, else learned."""
    folder = find_sd15(path)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", use_safetensors=True)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", use_safetensors=True)
    null = empty_prompt_embedding(folder)
    kwargs: dict[str, Any] = dict(
        unet_config=plain_config(unet.config), vae_config=plain_config(vae.config), num_classes=num_classes,
        null_context_tokens=null.shape[1] if null is not None else 1, null_context_learned=null is None,
        noise_schedule=dict(SD15_SCHEDULE))
    model = IDGBRModel(**{**kwargs, **overrides})
    model.unet.load_state_dict(unet.state_dict())
    model.vae.load_state_dict(vae.state_dict())
    model.cond_encoder.reset_from(model.unet)
    if null is not None:
        model.null_context.copy_(null)
    log.info("sd15 preset from %s (null context: %s)", folder, "CLIP empty prompt" if null is not None else "learned")
    _load_label_embed(model, label_embed)
    return model


def _load_label_embed(model: IDGBRModel, folder: str | Path | None) -> None:
    if folder is None:
        return
    from .label_embed import LabelEmbedding

    trained = LabelEmbedding.from_pretrained(folder, use_safetensors=True)
    if trained.config.num_classes != model.config.num_classes:
        raise InputError(f"label embedding {folder} has {trained.config.num_classes} classes, "
                         f"the model {model.config.num_classes}")
    model.label_embed.load_state_dict(trained.state_dict())


def build(preset: str, num_classes: int, **kwargs: Any) -> IDGBRModel:
    """A fresh model of a named preset."""
    if preset == "compact":
        return compact(num_classes, **kwargs)
    if preset == "sd15":
        return sd15(num_classes, **kwargs)
    raise InputError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
