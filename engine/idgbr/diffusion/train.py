"""Training: the refiner (ε-prediction MSE, classifier-free condition dropout, cubic timestep
sampling, REPA for the first steps), the label embedding (cross-entropy through noisy codes),
and the compact VAE (images and embedded labels). AdamW with warm-up + cosine decay, gradient
clipping, EMA of the refiner's weights, seeded, checkpoints that resume exactly."""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler
from torch import nn

from .label_embed import LabelEmbedding
from .model import SD15_SCHEDULE, IDGBRModel

STATE_FILE = "training_state.pt"


@dataclass
class TrainConfig:
    """Refiner training settings (paper recipe for sd15 on a GPU: batch 4, lr 1e-5, 80k steps)."""

    steps: int = 10000
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 1e-2
    warmup: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    cond_dropout: float = 0.15
    cubic_timesteps: bool | None = None  # None: on for multi-class models (K > 2), off for binary
    repa_lambda: float = 0.5
    repa_steps: int = 200
    repa_hidden: int = 256
    seed: int = 0
    mixed_precision: bool = True  # bf16 autocast, CUDA only
    gradient_checkpointing: bool = False  # CUDA memory saver


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def sample_timesteps(n: int, num_train: int, cubic: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform integer timesteps, or with `cubic` t = (1 − (u/T)³)·T: most samples at high noise,
    where the layout of the map is decided (clamped to T − 1)."""
    u = torch.randint(0, num_train, (n,), generator=generator)
    if not cubic:
        return u
    t = (1.0 - (u.double() / num_train) ** 3) * num_train
    return t.long().clamp(max=num_train - 1)


def warmup_cosine(warmup: int, total: int, floor: float = 0.0) -> Any:
    """LambdaLR factor: linear warm-up, then cosine decay to `floor` at `total`."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


class EMA:
    """Exponential moving average of parameters; the EMA weights are what gets saved."""

    def __init__(self, params: list[nn.Parameter], decay: float) -> None:
        self.params = params
        self.decay = decay
        self.shadow = [p.detach().clone().float() for p in params]

    @torch.no_grad()
    def update(self) -> None:
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach().float(), 1.0 - self.decay)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange live and EMA weights (call twice to restore)."""
        for s, p in zip(self.shadow, self.params):
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)

    def state_dict(self) -> list[torch.Tensor]:
        return self.shadow

    def load_state_dict(self, shadow: list[torch.Tensor]) -> None:
        self.shadow = [s.clone() for s in shadow]


class RepaProjector(nn.Module):
    """3-layer MLP from the deepest guidance output to the teacher's token width."""

    def __init__(self, channels: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, out_dim))

    def forward(self, feat: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, C, h, w) → (B, gh·gw, D), interpolated onto the teacher's patch grid."""
        feat = F.interpolate(feat, size=grid, mode="bilinear", align_corners=False)
        return self.net(feat.flatten(2).transpose(1, 2))


class DinoTeacher(nn.Module):
    """A frozen transformers Dinov2Model from a local folder; patch tokens of [0, 1] images."""

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, folder: str | Path, size: int = 224) -> None:
        super().__init__()
        from transformers import Dinov2Model

        self.model = Dinov2Model.from_pretrained(str(folder), use_safetensors=True).eval().requires_grad_(False)
        self.patch = int(self.model.config.patch_size)
        self.size = size - size % self.patch
        self.dim = int(self.model.config.hidden_size)
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, image01: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = F.interpolate(image01.float(), size=(self.size, self.size), mode="bilinear", align_corners=False)
        tokens = self.model(pixel_values=(x - self.mean) / self.std).last_hidden_state[:, 1:]
        g = self.size // self.patch
        return tokens, (g, g)


class RefinerTrainer:
    """One refiner training run. Batches: `image` (B, 3, H, W) normalised as the card says,
    `image01` (the same in [0, 1], for the REPA teacher), `labels` and `coarse` (B, H, W)."""

    def __init__(self, model: IDGBRModel, config: TrainConfig, teacher: DinoTeacher | None = None,
                 device: str = "cpu") -> None:
        seed_everything(config.seed)
        self.model, self.config, self.device = model.to(device), config, device
        model.train()
        for frozen in (model.vae, model.label_embed):
            frozen.eval().requires_grad_(False)
        if config.gradient_checkpointing and device.startswith("cuda"):
            model.unet.enable_gradient_checkpointing()
        self.teacher = teacher.to(device) if teacher is not None and config.repa_lambda > 0 else None
        self.repa = (RepaProjector(model.guidance.blocks[-1].channels, config.repa_hidden, self.teacher.dim).to(device)
                     if self.teacher is not None else None)
        params = model.trainable_parameters()
        self.optimizer = torch.optim.AdamW(params + (list(self.repa.parameters()) if self.repa else []),
                                           lr=config.lr, weight_decay=config.weight_decay)
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(config.warmup, config.steps))
        self.noise = DDPMScheduler(**(model.config.noise_schedule or SD15_SCHEDULE))
        self.ema = EMA(params, config.ema_decay)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0

    @property
    def cubic(self) -> bool:
        """Cubic timestep sampling: as configured, else on for multi-class (the paper's Potsdam
        recipe) and off for binary maps (its CHN6-CUG roads recipe)."""
        if self.config.cubic_timesteps is not None:
            return self.config.cubic_timesteps
        return self.model.config.num_classes > 2

    def _autocast(self) -> Any:
        on = self.config.mixed_precision and self.device.startswith("cuda")
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=on) if on else torch.autocast("cpu", enabled=False)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        m, cfg = self.model, self.config
        image, labels, coarse = (batch[k].to(self.device) for k in ("image", "labels", "coarse"))
        b = labels.shape[0]
        with torch.no_grad():
            x0 = m.encode_labels(labels)
            image_lat, rough_lat = m.encode_image(image), m.encode_labels(coarse)
        t = sample_timesteps(b, self.noise.config.num_train_timesteps, self.cubic, self.generator).to(self.device)
        noise = torch.randn(x0.shape, generator=self.generator).to(self.device)
        keep = (torch.rand(b, generator=self.generator) >= cfg.cond_dropout).to(self.device)
        with self._autocast():
            conds = m.prepare_conditions(image_lat, rough_lat)
            eps, res = m(self.noise.add_noise(x0, noise, t), t, conds, keep)
            out = {"mse": F.mse_loss(eps.float(), noise)}
            out["loss"] = out["mse"]
            if self.repa is not None and self.step < cfg.repa_steps:
                tokens, grid = self.teacher(batch["image01"].to(self.device))
                pred = self.repa(res[-1].float(), grid)
                out["repa"] = -F.cosine_similarity(pred, tokens.float(), dim=-1).mean()
                out["loss"] = out["loss"] + cfg.repa_lambda * out["repa"]
        return out

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        losses = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        norm = torch.nn.utils.clip_grad_norm_(
            [p for g in self.optimizer.param_groups for p in g["params"]], self.config.grad_clip)
        self.optimizer.step()
        self.lr_schedule.step()
        self.ema.update()
        self.step += 1
        return {**{k: float(v.detach()) for k, v in losses.items()}, "grad_norm": float(norm),
                "lr": self.lr_schedule.get_last_lr()[0]}

    def save(self, folder: str | Path) -> Path:
        """A loadable model folder holding the EMA weights, plus the state to resume from."""
        folder = Path(folder)
        self.ema.swap()
        try:
            self.model.save_pretrained(folder)
        finally:
            self.ema.swap()
        torch.save({"step": self.step, "optimizer": self.optimizer.state_dict(),
                    "lr_schedule": self.lr_schedule.state_dict(), "ema": self.ema.state_dict(),
                    "live": [p.detach().clone() for p in self.ema.params],
                    "repa": self.repa.state_dict() if self.repa else None,
                    "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                    "config": asdict(self.config)}, folder / STATE_FILE)
        return folder

    def resume(self, folder: str | Path) -> None:
        """Continue from `save`: live weights, optimizer, schedule, EMA, RNG and step."""
        state = torch.load(Path(folder) / STATE_FILE, weights_only=False)
        with torch.no_grad():
            for p, v in zip(self.ema.params, state["live"]):
                p.copy_(v)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        self.ema.load_state_dict(state["ema"])
        if self.repa is not None and state["repa"] is not None:
            self.repa.load_state_dict(state["repa"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step = state["step"]


# --- label embedding and VAE ------------------------------------------------------------------


def label_embedding_step(embed: LabelEmbedding, optimizer: torch.optim.Optimizer, labels: torch.Tensor,
                         noise_std: float, generator: torch.Generator | None = None) -> float:
    """Cross-entropy of the decoded labels after Gaussian noise on the codes: the table learns
    codes far apart, the decoder learns to read them back through a VAE's errors."""
    codes = embed.encode(labels)
    noisy = codes + noise_std * torch.randn(codes.shape, generator=generator).to(codes.device)
    loss = F.cross_entropy(embed.decode(noisy), labels.long(), ignore_index=255)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def vae_step(vae: AutoencoderKL, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
             kl_weight: float = 1e-6, generator: torch.Generator | None = None) -> dict[str, float]:
    """Reconstruction (L1 + MSE) with a small KL term, on images or embedded label maps in
    [-1, 1] (both pass through the same VAE)."""
    posterior = vae.encode(inputs).latent_dist
    recon = vae.decode(posterior.sample(generator)).sample
    rec = F.l1_loss(recon, inputs) + F.mse_loss(recon, inputs)
    kl = posterior.kl().mean()
    loss = rec + kl_weight * kl
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.detach()), "recon": float(rec.detach()), "kl": float(kl.detach())}


@torch.no_grad()
def fit_scaling_factor(vae: AutoencoderKL, inputs: torch.Tensor) -> float:
    """1 / std of the latents, as Stable Diffusion sets it: the diffusion sees unit-variance
    latents. Stored in the VAE's config."""
    std = float(vae.encode(inputs).latent_dist.mode().std())
    vae.register_to_config(scaling_factor=1.0 / max(std, 1e-6))
    return 1.0 / max(std, 1e-6)
