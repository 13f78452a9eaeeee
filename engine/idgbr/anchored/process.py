"""How the anchored network is trained and sampled.

Diffusion (residual shifting, after ResShift): labels live in ±1 one-hot space; the forward
process moves the clean map x0 towards the coarse map c while adding noise,

    x_t = x0 + η_t (c − x0) + κ √η_t ε,    η_0 = 0 … η_T = 1,

so x_T is the noised coarse map and sampling starts there, not from pure noise. The network
predicts x0 (logits, cross-entropy); a step from t to s < t draws from the Gaussian posterior
q(x_s | x_t, x0̂), which is the same for any subsequence of steps, so a model trained with T
steps samples with fewer. The last step's prediction is the output.

Training on its own predictions: a sampler feeds the network states built from its own earlier
x0̂, never from the truth. With probability `unroll` a training state for t < T is therefore
built around the network's x0̂ at t = T (no gradient through it) while the target stays the
truth: it learns to correct its first guess, the mismatch that froze the SegRefiner-style spike.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .net import AnchoredRefinerNet, Condition, boundary_distance


def step_schedule(total: int, steps: int) -> list[int]:
    """`steps` integer timesteps from `total` down, evenly spaced (4 of 8: 8, 6, 4, 2)."""
    if not 1 <= steps <= total:
        raise ValueError(f"steps must be 1..{total}, got {steps}")
    return sorted({round(total - i * total / steps) for i in range(steps)}, reverse=True)


@dataclass
class SampleOutput:
    probs: torch.Tensor  # (B, K, H, W) mean over samples
    uncertainty: torch.Tensor | None  # (B, H, W), None for one sample


def _repeat(cond: Condition, n: int) -> Condition:
    if n == 1:
        return cond
    rep = lambda t: t.repeat(n, *([1] * (t.dim() - 1)))  # noqa: E731
    return Condition([rep(f) for f in cond.features], rep(cond.prior), rep(cond.band), rep(cond.state0))


@torch.no_grad()
def sample(net: AnchoredRefinerNet, image: torch.Tensor, coarse: torch.Tensor, steps: int | None = None,
           samples: int = 1, generators: Sequence[torch.Generator] | None = None,
           band_px: int | None = None) -> SampleOutput:
    """Refine a batch (image (B, 3, H, W) in [0, 1], coarse (B, H, W) long). Tile b's noise
    comes from generators[b] alone (default: seeds 0 … B-1), so it does not depend on the other
    tiles of the batch. `band_px` narrows the band of pixels that may change. The discriminative
    mode ignores `steps`, `samples` and the generators: one evaluation, no noise."""
    cfg = net.config
    cond = net.encode(image, coarse, band_px)
    total = cfg.steps
    if cfg.mode == "discriminative":
        t = torch.full((len(coarse),), total, dtype=torch.long, device=coarse.device)
        return SampleOutput(torch.softmax(net.decode(cond, cond.state0, t), 1), None)
    shape = cond.state0.shape[1:]
    gens = list(generators) if generators is not None else \
        [torch.Generator().manual_seed(b) for b in range(len(coarse))]
    if len(gens) != len(coarse):
        raise ValueError(f"{len(gens)} generators for a batch of {len(coarse)} tiles")
    cond = _repeat(cond, samples)
    eta = net.etas().tolist()
    ts = step_schedule(total, steps or total)
    kappa = cfg.kappa

    def noise() -> torch.Tensor:  # (samples · B, K, H, W), ordered as `_repeat` orders the batch
        per_tile = [torch.randn((samples, *shape), generator=g, device="cpu") for g in gens]
        return torch.stack(per_tile, 1).reshape(-1, *shape).to(cond.state0)

    x = cond.state0 + kappa * noise()
    for i, t in enumerate(ts):
        logits = net.decode(cond, x, torch.full((len(x),), t, dtype=torch.long, device=x.device))
        s = ts[i + 1] if i + 1 < len(ts) else 0
        if s == 0:
            break
        x0 = 2 * torch.softmax(logits, 1) - 1
        mean = (eta[s] / eta[t]) * x + ((eta[t] - eta[s]) / eta[t]) * x0
        x = mean + kappa * (eta[s] / eta[t] * (eta[t] - eta[s])) ** 0.5 * noise()
    probs = torch.softmax(logits, 1).view(samples, -1, *logits.shape[1:])
    mean = probs.mean(0)
    unc = None if samples == 1 else 0.5 * (probs - mean).abs().sum(2).mean(0)
    return SampleOutput(mean, unc)


def refine_arrays(net: AnchoredRefinerNet, image: np.ndarray, coarse: np.ndarray, steps: int | None = None,
                  samples: int = 1, seeds: Sequence[int] | None = None, bf16: bool = False,
                  band_px: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """`sample` on numpy tiles of any size (image (B, 3, H, W) float in [0, 1], coarse (B, H, W)
    class ids), tile b's noise seeded by seeds[b] (default b): replicate-padded to the network's
    multiple, cropped back; (probs, uncertainty)."""
    h, w = coarse.shape[1:]
    m = net.multiple
    pad = (0, -w % m, 0, -h % m)
    device = next(net.parameters()).device
    img = F.pad(torch.from_numpy(np.ascontiguousarray(image, np.float32)), pad, mode="replicate")
    c = F.pad(torch.from_numpy(coarse.astype(np.float32))[:, None], pad, mode="replicate")[:, 0].long()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        gens = None if seeds is None else [torch.Generator().manual_seed(int(s)) for s in seeds]
        out = sample(net, img.to(device), c.to(device), steps, samples, gens, band_px)
    probs = out.probs[..., :h, :w].float().cpu().numpy()
    unc = None if out.uncertainty is None else out.uncertainty[..., :h, :w].float().cpu().numpy()
    return probs, unc


def training_loss(net: AnchoredRefinerNet, image: torch.Tensor, coarse: torch.Tensor, label: torch.Tensor,
                  generator: torch.Generator, unroll: float = 0.5, boundary_weight: float = 4.0) -> torch.Tensor:
    """Boundary-weighted cross-entropy of the predicted clean map, over the band only (outside
    it the output is the coarse map and has no gradient). Pixels within 2 px of a true boundary
    weigh 1 + `boundary_weight`."""
    cfg = net.config
    b = len(label)
    cond = net.encode(image, coarse)
    total = cfg.steps
    if cfg.mode == "discriminative":
        t = torch.full((b,), total, dtype=torch.long)
        logits = net.decode(cond, cond.state0, t)
    else:
        eta = net.etas()
        t = torch.randint(1, total + 1, (b,), generator=generator)
        x0 = 2 * F.one_hot(label, cfg.num_classes).permute(0, 3, 1, 2).float() - 1
        x_top = cond.state0 + cfg.kappa * torch.randn(x0.shape, generator=generator)
        own = (torch.rand(b, generator=generator) < unroll) & (t < total)
        if own.any():
            with torch.no_grad():
                first = net.decode(cond, x_top, torch.full((b,), total, dtype=torch.long))
            x0 = torch.where(own[:, None, None, None], 2 * torch.softmax(first, 1) - 1, x0)
        e = eta[t][:, None, None, None]
        x_t = x0 + e * (cond.state0 - x0) + cfg.kappa * e.sqrt() * torch.randn(x0.shape, generator=generator)
        x_t = torch.where((t == total)[:, None, None, None], x_top, x_t)
        logits = net.decode(cond, x_t, t)
    near = (boundary_distance(label, 2) <= 2).float()
    weight = cond.band[:, 0] * (1 + boundary_weight * near)
    ce = F.cross_entropy(logits, label, reduction="none")
    return (ce * weight).sum() / cond.band.sum().clamp(min=1.0)
