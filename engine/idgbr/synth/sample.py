"""Generating (image, label) pairs: the base stage from noise, then the SR stage conditioned on
the base pair, and writing them as a folder of tiles that `idgbr.segment.data.folder_dataset`
(and so every trainer) reads: `images/synth_00000.png` (RGB), `labels/synth_00000.png` (class
ids, mode L) and `synth_info.json`.

Samplers, all on the training schedule: 'ddpm' (ancestral, the scheduler's 1000 steps unless
`steps` says fewer), 'ddim' (deterministic, trailing spacing: a few steps still start from pure
noise) and 'dpm++' (DPM-Solver++ 2nd order). The predicted x̂0 is clipped to [−1, 1] at every step.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from PIL import Image

from ..errors import InputError
from ..io.outputs import staged_folder
from .bits import decode, encode, tensor_to_pair
from .config import SAMPLERS, SCHEDULE
from .model import SynthModel, sr_condition

Pair = tuple[np.ndarray, np.ndarray]
INFO_FILE = "synth_info.json"


def make_scheduler(sampler: str, steps: int | None) -> SchedulerMixin:
    """A fresh scheduler of `sampler` on the training schedule, set to `steps` (None: DDPM's
    1000; 50 for the others)."""
    if sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {sampler!r} (known: {', '.join(SAMPLERS)})")
    if steps is not None and not 1 <= steps <= SCHEDULE["num_train_timesteps"]:
        raise InputError(f"sampling steps must be 1…{SCHEDULE['num_train_timesteps']}, not {steps}")
    if sampler == "ddpm":
        sched = DDPMScheduler(**SCHEDULE, clip_sample=True)
        steps = steps or SCHEDULE["num_train_timesteps"]
    elif sampler == "ddim":
        sched = DDIMScheduler(**SCHEDULE, clip_sample=True, timestep_spacing="trailing")
    else:  # thresholding at sample_max_value 1 is clipping x̂0 to [−1, 1]
        sched = DPMSolverMultistepScheduler(**SCHEDULE, algorithm_type="dpmsolver++", solver_order=2,
                                            timestep_spacing="trailing", thresholding=True, sample_max_value=1.0)
    sched.set_timesteps(steps or 50)
    return sched


@torch.no_grad()
def denoise(unet: UNet2DModel, shape: tuple[int, ...], sched: SchedulerMixin, generator: torch.Generator,
            cond: torch.Tensor | None = None) -> torch.Tensor:
    """Run `sched` from noise of `shape`; `cond` is concatenated to the input at every step."""
    device = unet.device
    x = torch.randn(shape, generator=generator).to(device) * sched.init_noise_sigma
    for t in sched.timesteps:
        inp = sched.scale_model_input(x, t)
        eps = unet(inp if cond is None else torch.cat([inp, cond], 1), t).sample
        x = sched.step(eps, t, x, generator=generator).prev_sample
    return x


def hard_pair(x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A generated pair as the SR stage saw pairs in training: image clipped to [−1, 1], labels
    decoded to valid ids and re-encoded as exact ±1 bits."""
    return torch.cat([x[:, :3].clamp(-1, 1), encode(decode(x[:, 3:], num_classes), num_classes)], 1)


@torch.no_grad()
def super_resolve(model: SynthModel, low: torch.Tensor, sampler: str, steps: int | None,
                  generator: torch.Generator) -> torch.Tensor:
    """The SR stage on low-resolution pairs (B, C, h, w) → (B, C, 2h, 2w)."""
    if model.sr is None:
        raise InputError(f"synth model {model.card.name} has no SR stage")
    cond = sr_condition(hard_pair(low, model.card.num_classes).to(model.sr.device))
    return denoise(model.sr, tuple(cond.shape), make_scheduler(sampler, steps), generator, cond)


def generate(model: SynthModel, n: int, *, sampler: str = "ddpm", steps: int | None = None, seed: int = 0,
             batch_size: int = 8, sr: bool = True, device: str | None = None,
             progress: Callable[[int], None] | None = None) -> list[Pair]:
    """n pairs (image uint8 H×W×3, labels uint8 H×W < K), at the SR resolution (or the base
    one with `sr=False` or without an SR stage). Batch i draws all its noise from (seed, i):
    the same seed and batch size give the same pairs. `progress` gets the pairs done so far."""
    if n < 1 or batch_size < 1:
        raise InputError("n and batch_size must be at least 1")
    if device is not None:
        model.to(device)
    card = model.card
    use_sr = sr and model.sr is not None
    out: list[Pair] = []
    for i, start in enumerate(range(0, n, batch_size)):
        b = min(batch_size, n - start)
        g = torch.Generator().manual_seed(int(np.random.default_rng([seed, i]).integers(2**62)))
        x = denoise(model.base, (b, card.channels, card.base_resolution, card.base_resolution),
                    make_scheduler(sampler, steps), g)
        if use_sr:
            x = super_resolve(model, x, sampler, steps, g)
        out += [tensor_to_pair(xi, card.num_classes) for xi in x.cpu()]
        if progress is not None:
            progress(len(out))
    return out


def write_pairs(pairs: Sequence[Pair], out_dir: str | Path, start_index: int = 0, *,
                info: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write `images/`, `labels/` and `synth_info.json` (`info` plus n and start_index) through
    a staging folder; a non-empty `out_dir` is refused unless `overwrite`."""
    with staged_folder(out_dir, overwrite) as stage:
        for sub in ("images", "labels"):
            (stage / sub).mkdir()
        for i, (image, label) in enumerate(pairs, start_index):
            Image.fromarray(image).save(stage / "images" / f"synth_{i:05d}.png")
            Image.fromarray(label.astype(np.uint8)).save(stage / "labels" / f"synth_{i:05d}.png")
        record = {**(info or {}), "n": len(pairs), "start_index": start_index}
        (stage / INFO_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return Path(out_dir)


def sample_info(model: SynthModel, model_path: str | Path, sampler: str, steps: int | None, seed: int,
                sr: bool) -> dict[str, Any]:
    """What `synth_info.json` says about how the pairs were made."""
    card = model.card
    use_sr = sr and model.sr is not None
    res = card.sr_resolution if use_sr else card.base_resolution
    card_res = card.sr_resolution or card.base_resolution  # the resolution of the card's gsd_m
    return {"model": str(model_path), "model_name": card.name, "sampler": sampler,
            "steps": steps or (SCHEDULE["num_train_timesteps"] if sampler == "ddpm" else 50), "seed": seed,
            "sr": use_sr, "resolution": res, "gsd_m": card.gsd_m * card_res / res if card.gsd_m else None,
            "classes": [{"id": c.id, "name": c.name, "color": c.color} for c in card.classes]}
