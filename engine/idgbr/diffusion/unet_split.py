"""A diffusers UNet2DConditionModel run as encoder and decoder halves.

Diffusers' forward runs the encoder internally, so feeding it guidance residuals computed from
its own encoder features means running the encoder twice (what the IDGBR authors' code does).
Splitting the forward lets the encoder run once per step and the decoder take the conditional
and unconditional branches as one batch. Only the plain configuration is supported (no class,
addition or GLIGEN embeddings), which `check_supported` enforces.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import UNet2DConditionModel
from torch import nn


@dataclass
class EncoderOutput:
    """What the decoder needs from the encoder: time embedding, skip features, mid output."""

    emb: torch.Tensor
    skips: list[torch.Tensor]
    mid: torch.Tensor


def check_supported(unet: UNet2DConditionModel) -> None:
    """Raise if the UNet uses features the split forward does not reproduce."""
    c = unet.config
    unsupported = {
        "class_embed_type": c.class_embed_type, "addition_embed_type": c.addition_embed_type,
        "encoder_hid_dim": c.encoder_hid_dim, "center_input_sample": c.center_input_sample or None,
        "time_cond_proj_dim": c.time_cond_proj_dim,
    }
    bad = {k: v for k, v in unsupported.items() if v is not None}
    if bad or unet.mid_block is None:
        raise ValueError(f"unsupported UNet configuration for IDGBR: {bad or 'no mid block'}")


def time_embedding(unet: nn.Module, sample: torch.Tensor, timestep: torch.Tensor | int) -> torch.Tensor:
    """The timestep embedding, as diffusers' forward computes it (one timestep or one per sample)."""
    t = torch.as_tensor(timestep, device=sample.device)
    t = t.reshape(-1).expand(sample.shape[0]) if t.numel() == 1 else t
    emb = unet.time_embedding(unet.time_proj(t).to(sample.dtype), None)
    return unet.time_embed_act(emb) if unet.time_embed_act is not None else emb


def _run(block: torch.nn.Module, context: torch.Tensor, **kwargs: object) -> object:
    if getattr(block, "has_cross_attention", False):
        return block(encoder_hidden_states=context, **kwargs)
    return block(**kwargs)


def encode(unet: nn.Module, sample: torch.Tensor, timestep: torch.Tensor | int,
           context: torch.Tensor) -> EncoderOutput:
    """conv_in, down blocks and mid block: the skip features and the mid output. `unet` is a
    UNet2DConditionModel or anything holding its encoder modules (the frozen condition encoder)."""
    emb = time_embedding(unet, sample, timestep)
    h = unet.conv_in(sample)
    skips = [h]
    for block in unet.down_blocks:
        h, res = _run(block, context, hidden_states=h, temb=emb)
        skips.extend(res)
    if getattr(unet.mid_block, "has_cross_attention", False):
        mid = unet.mid_block(h, emb, encoder_hidden_states=context)
    else:
        mid = unet.mid_block(h, emb)
    return EncoderOutput(emb, skips, mid)


def decode(unet: UNet2DConditionModel, enc: EncoderOutput, context: torch.Tensor) -> torch.Tensor:
    """Up blocks and output head: ε from (possibly guided) skips and mid output."""
    skips = list(enc.skips)
    h = enc.mid
    forward_size = any(s % 2 ** unet.num_upsamplers for s in skips[0].shape[-2:])
    for i, block in enumerate(unet.up_blocks):
        res = tuple(skips[-len(block.resnets):])
        del skips[-len(block.resnets):]
        size = skips[-1].shape[2:] if forward_size and i < len(unet.up_blocks) - 1 else None
        h = _run(block, context, hidden_states=h, temb=enc.emb, res_hidden_states_tuple=res, upsample_size=size)
    if unet.conv_norm_out is not None:
        h = unet.conv_act(unet.conv_norm_out(h))
    return unet.conv_out(h)
