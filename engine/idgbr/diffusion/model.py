"""IDGBRModel: label embedding + VAE + denoising UNet + frozen condition encoder + guidance
blocks, saved and loaded as one diffusers model folder (`config.json` + safetensors)."""
from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .guidance import BlockCondition, ConditionEncoder, GuidanceNetwork, encoder_channels
from .label_embed import LabelEmbedding
from .unet_split import EncoderOutput, check_supported, decode, encode

SD15_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
}
"""Stable Diffusion v1.5's noise schedule, the default of every preset."""


def plain_config(config: Any) -> dict[str, Any]:
    """A diffusers config without its private keys, fit for JSON and `from_config`."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config).items() if not k.startswith("_")}


class IDGBRModel(ModelMixin, ConfigMixin):
    """The whole refiner network. Sub-model configs are stored inside this model's config, so a
    folder written by `save_pretrained` is self-contained.

    The denoiser's cross-attention sees a constant null context: a learned one, or (for Stable
    Diffusion) the CLIP embedding of the empty prompt, stored as a frozen buffer.
    """

    @register_to_config
    def __init__(self, unet_config: dict[str, Any] | None = None, vae_config: dict[str, Any] | None = None,
                 num_classes: int = 2, label_hidden: int = 128, guidance_width: int | None = None,
                 guidance_heads: int = 8, guidance_kv_size: int | None = None, cond_timestep: int = 0,
                 null_context_tokens: int = 1, null_context_learned: bool = True,
                 noise_schedule: dict[str, Any] | None = None) -> None:
        super().__init__()
        if unet_config is None or vae_config is None:
            raise ValueError("IDGBRModel needs unet and vae configurations (use a preset)")
        self.unet = UNet2DConditionModel.from_config(unet_config)
        check_supported(self.unet)
        self.vae = AutoencoderKL.from_config(vae_config)
        self.label_embed = LabelEmbedding(num_classes=num_classes, hidden=label_hidden)
        self.cond_encoder = ConditionEncoder(self.unet, cond_timestep)
        self.guidance = GuidanceNetwork(encoder_channels(self.unet), guidance_width, guidance_heads, guidance_kv_size)
        context = torch.zeros(1, null_context_tokens, self.unet.config.cross_attention_dim)
        if null_context_learned:
            self.null_context = nn.Parameter(context.normal_(std=0.02))
        else:
            self.register_buffer("null_context", context)

    # --- latents ---------------------------------------------------------------------------

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def latent_factor(self) -> int:
        """Pixels per latent cell, times the UNet's own downsampling: tile sides must divide it."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1) * 2 ** self.unet.num_upsamplers

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) → scaled latents (the posterior mode: deterministic)."""
        return self.vae.encode(image).latent_dist.mode() * self.scaling_factor

    def encode_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Class maps (B, H, W) → scaled latents of their embeddings."""
        return self.encode_image(self.label_embed.encode(labels).to(self.vae.dtype))

    def decode_logits(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents → (B, K, H, W) class logits."""
        codes = self.vae.decode(latents / self.scaling_factor).sample
        return self.label_embed.decode(codes.to(self.label_embed.dtype))

    # --- denoising -------------------------------------------------------------------------

    def context(self, batch: int) -> torch.Tensor:
        return self.null_context.expand(batch, -1, -1)

    def prepare_conditions(self, image_latents: torch.Tensor, rough_latents: torch.Tensor) -> list[BlockCondition]:
        """Everything that depends only on the tile: frozen features of the image and coarse
        latents (one batched pass) and the guidance blocks' condition projections."""
        b = image_latents.shape[0]
        feats = self.cond_encoder(torch.cat([image_latents, rough_latents]), self.context(1))
        return self.guidance.prepare([f[:b] for f in feats], [f[b:] for f in feats])

    def residuals(self, enc: EncoderOutput, conds: list[BlockCondition]) -> list[torch.Tensor]:
        """Guidance residuals for the skips, then the mid block."""
        return self.guidance(enc.skips + [enc.mid], conds)

    def _guided(self, latents: torch.Tensor, timestep: torch.Tensor | int, conds: list[BlockCondition],
                keep: torch.Tensor | None) -> tuple[EncoderOutput, EncoderOutput, list[torch.Tensor]]:
        """Encoder output, the same with residuals added (zeroed where `keep` is False), and
        the raw residuals."""
        enc = encode(self.unet, latents, timestep, self.context(latents.shape[0]))
        res = self.residuals(enc, conds)
        added = res if keep is None else [r * keep.view(-1, 1, 1, 1).to(r.dtype) for r in res]
        return enc, EncoderOutput(enc.emb, [s + r for s, r in zip(enc.skips, added)], enc.mid + added[-1]), res

    def denoise(self, latents: torch.Tensor, timestep: torch.Tensor | int, conds: list[BlockCondition],
                guidance_scale: float = 1.0) -> torch.Tensor:
        """ε for noisy latents. The denoiser's encoder runs once; with guidance_scale ≠ 1 the
        decoder takes the conditional and unconditional (no residuals) branches as one batch and
        returns ε_u + w(ε_c − ε_u)."""
        b = latents.shape[0]
        enc, guided, _ = self._guided(latents, timestep, conds, None)
        if guidance_scale == 1.0:
            return decode(self.unet, guided, self.context(b))
        both = EncoderOutput(torch.cat([enc.emb, enc.emb]),
                             [torch.cat([g, s]) for g, s in zip(guided.skips, enc.skips)],
                             torch.cat([guided.mid, enc.mid]))
        eps_c, eps_u = decode(self.unet, both, self.context(2 * b)).chunk(2)
        return eps_u + guidance_scale * (eps_c - eps_u)

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor | int, conds: list[BlockCondition],
                keep: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Training pass: ε and the guidance residuals (before dropout; REPA reads the deepest).
        `keep` (B,) bool drops the conditions of the other samples (classifier-free training)."""
        _, guided, res = self._guided(latents, timestep, conds, keep)
        return decode(self.unet, guided, self.context(latents.shape[0])), res

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What refiner training updates: the denoiser, the guidance blocks, a learned context."""
        params = list(self.unet.parameters()) + list(self.guidance.parameters())
        return params + ([self.null_context] if isinstance(self.null_context, nn.Parameter) else [])
