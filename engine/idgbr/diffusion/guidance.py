"""The conditional guidance network: a frozen copy of the denoiser's encoder that turns the image
and coarse-label latents into features, and one fusion block per skip point (+ mid block) that
turns those features and the denoiser's own into residuals for the decoder.

Everything that depends only on the conditions (frozen features, the condition half of each
fusion convolution, attention keys and values) is computed once per tile by `prepare`, and
reused at every sampling step.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from torch import nn

from .unet_split import encode


def encoder_channels(unet: UNet2DConditionModel) -> list[int]:
    """Channels of the UNet's skip features, then of its mid block output."""
    c = unet.config
    layers = c.layers_per_block
    layers = [layers] * len(c.block_out_channels) if isinstance(layers, int) else list(layers)
    out = [c.block_out_channels[0]]
    for i, ch in enumerate(c.block_out_channels):
        out += [ch] * layers[i] + ([ch] if i < len(c.block_out_channels) - 1 else [])
    return out + [c.block_out_channels[-1]]


class ConditionEncoder(nn.Module):
    """The "pseudo-siamese" encoder: a frozen copy of the denoiser's conv_in, down blocks and mid
    block, taken from its weights when the model is made, run at a fixed timestep."""

    def __init__(self, unet: UNet2DConditionModel, timestep: int) -> None:
        super().__init__()
        for name in ("time_proj", "time_embedding", "time_embed_act", "conv_in", "down_blocks", "mid_block"):
            setattr(self, name, copy.deepcopy(getattr(unet, name)))
        self.timestep = timestep
        self.requires_grad_(False)

    def reset_from(self, unet: UNet2DConditionModel) -> None:
        """Copy the denoiser's current encoder weights (after loading pretrained ones)."""
        for name in ("time_embedding", "conv_in", "down_blocks", "mid_block"):
            getattr(self, name).load_state_dict(getattr(unet, name).state_dict())

    def train(self, mode: bool = True) -> "ConditionEncoder":
        return super().train(False)  # frozen: dropout and the like stay off

    @torch.no_grad()
    def forward(self, latents: torch.Tensor, context: torch.Tensor) -> list[torch.Tensor]:
        """Features at the skip points, then the mid block output."""
        out = encode(self, latents, self.timestep, context.expand(latents.shape[0], -1, -1))
        return out.skips + [out.mid]


def sincos_2d(h: int, w: int, dim: int, scale: tuple[float, float], device: torch.device,
              dtype: torch.dtype) -> torch.Tensor:
    """(h·w, dim) sinusoidal embeddings of pixel centres, measured in units of `scale` pixels of
    the query grid, so pooled keys and full-resolution queries share one frame."""
    quarter = dim // 4
    freqs = 1.0 / 10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / max(quarter, 1))
    ys = ((torch.arange(h, device=device, dtype=torch.float32) + 0.5) * scale[0] - 0.5)[:, None] * freqs
    xs = ((torch.arange(w, device=device, dtype=torch.float32) + 0.5) * scale[1] - 0.5)[:, None] * freqs
    ys = torch.cat([ys.sin(), ys.cos()], -1)[:, None, :].expand(h, w, -1)
    xs = torch.cat([xs.sin(), xs.cos()], -1)[None, :, :].expand(h, w, -1)
    pe = torch.cat([ys, xs], -1).reshape(h * w, -1)
    return F.pad(pe, (0, dim - pe.shape[1])).to(dtype)


@dataclass
class BlockCondition:
    """One guidance block's per-tile precomputation."""

    fused: torch.Tensor  # condition half of the fusion conv, with its bias: (B, C, H, W)
    key: torch.Tensor  # (B, heads, M, d/heads)
    value: torch.Tensor

    def repeat(self, n: int) -> "BlockCondition":
        """The same conditions for n samples per tile (sample-major order)."""
        return BlockCondition(*(t.repeat(n, *[1] * (t.ndim - 1)) for t in (self.fused, self.key, self.value)))


class GuidanceBlock(nn.Module):
    """f′ = Conv1×1(concat(f_z, f_img, f_rough)) (zero-initialised), then multi-head spatial
    cross-attention (queries from f′, keys and values from concat(f_img, f_rough), positional
    embeddings on both), projected back with a zero-initialised layer and added to f′.
    Both zero inits make the block output exactly zero when the model is made."""

    def __init__(self, channels: int, width: int, heads: int = 8, kv_size: int | None = None) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"guidance width {width} is not divisible by {heads} heads")
        self.channels, self.width, self.heads, self.kv_size = channels, width, heads, kv_size
        self.fuse = nn.Conv2d(3 * channels, channels, 1)
        self.norm_q = nn.LayerNorm(channels)
        self.norm_kv = nn.LayerNorm(2 * channels)
        self.to_q = nn.Linear(channels, width)
        self.to_k = nn.Linear(2 * channels, width)
        self.to_v = nn.Linear(2 * channels, width)
        self.to_out = nn.Linear(width, channels)
        for layer in (self.fuse, self.to_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def prepare(self, f_img: torch.Tensor, f_rough: torch.Tensor) -> BlockCondition:
        """The parts that depend only on the conditions."""
        c = self.channels
        cond = torch.cat([f_img, f_rough], 1)
        fused = F.conv2d(cond, self.fuse.weight[:, c:], self.fuse.bias)
        b, _, h, w = cond.shape
        if self.kv_size is not None and max(h, w) > self.kv_size:
            cond = F.adaptive_avg_pool2d(cond, (min(h, self.kv_size), min(w, self.kv_size)))
        hk, wk = cond.shape[-2:]
        tokens = self.norm_kv(cond.flatten(2).transpose(1, 2))
        pos = sincos_2d(hk, wk, self.width, (h / hk, w / wk), cond.device, cond.dtype)
        return BlockCondition(fused, self._heads(self.to_k(tokens) + pos), self._heads(self.to_v(tokens)))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, -1).transpose(1, 2)

    def forward(self, f_z: torch.Tensor, cond: BlockCondition) -> torch.Tensor:
        f = F.conv2d(f_z, self.fuse.weight[:, :self.channels]) + cond.fused
        b, c, h, w = f.shape
        q = self.to_q(self.norm_q(f.flatten(2).transpose(1, 2)))
        q = self._heads(q + sincos_2d(h, w, self.width, (1.0, 1.0), f.device, f.dtype))
        att = F.scaled_dot_product_attention(q, cond.key, cond.value)
        att = self.to_out(att.transpose(1, 2).reshape(b, h * w, self.width))
        return f + att.transpose(1, 2).reshape(b, c, h, w)


class GuidanceNetwork(nn.Module):
    """One guidance block per skip point of the denoiser, plus one for its mid block."""

    def __init__(self, channels: Sequence[int], width: int | None = None, heads: int = 8,
                 kv_size: int | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(GuidanceBlock(c, width or c, heads, kv_size) for c in channels)

    def prepare(self, f_img: Sequence[torch.Tensor], f_rough: Sequence[torch.Tensor]) -> list[BlockCondition]:
        return [blk.prepare(a, b) for blk, a, b in zip(self.blocks, f_img, f_rough)]

    def forward(self, f_z: Sequence[torch.Tensor], conds: Sequence[BlockCondition]) -> list[torch.Tensor]:
        """Residuals for the skip points, then for the mid block."""
        return [blk(f, c) for blk, f, c in zip(self.blocks, f_z, conds)]

