"""The label embedding network: class maps ↔ 3-channel "images" in [-1, 1], so that label maps
can pass through an image VAE into the same latent space as the orthophoto."""
from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

UNKNOWN = 255
"""Class id of pixels with no label (the coarse layer's NO_COARSE); they embed to the zero code."""


class LabelEmbedding(ModelMixin, ConfigMixin):
    """Encoder: a learned table K → 3 then 2·sigmoid − 1 (codes inside the VAE's input range).
    Decoder: 1×1 conv 3 → hidden, ReLU, 1×1 conv hidden → K (per-pixel logits), so a code that
    the VAE returns slightly off still decodes to its class."""

    @register_to_config
    def __init__(self, num_classes: int = 2, embed_dim: int = 3, hidden: int = 128) -> None:
        super().__init__()
        self.table = nn.Embedding(num_classes, embed_dim)
        nn.init.normal_(self.table.weight, std=2.0)  # start with codes spread over the cube
        self.decoder = nn.Sequential(nn.Conv2d(embed_dim, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, num_classes, 1))

    def encode(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, H, W) integer class ids (UNKNOWN allowed) → (B, 3, H, W) codes in [-1, 1]."""
        labels = labels.long()
        unknown = labels == UNKNOWN
        codes = 2.0 * torch.sigmoid(self.table(labels.masked_fill(unknown, 0))) - 1.0
        codes = codes.masked_fill(unknown[..., None], 0.0)
        return codes.permute(0, 3, 1, 2).contiguous()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) codes → (B, K, H, W) logits."""
        return self.decoder(codes)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(labels))
