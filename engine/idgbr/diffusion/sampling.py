"""Sampling refined label maps, fast by design: the condition features are computed once per
tile, the denoiser's encoder runs once per step, and the conditional and unconditional branches
share one decoder batch. `reference_sample` is the authors' loop (conditions recomputed at every
step, the encoder run once per branch), kept to check and to time the fast path against."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .model import SD15_SCHEDULE, IDGBRModel
from .unet_split import encode

SAMPLERS = ("ddim", "ddim-trailing", "dpm++")


@dataclass(frozen=True)
class SamplingOptions:
    """sampler: 'ddim' (leading spacing, the paper's 25 steps), 'ddim-trailing' (starts at the
    last training timestep, so few steps still begin from pure noise) or 'dpm++' (DPM-Solver++,
    2nd order). guidance: classifier-free guidance weight w (1 = conditional branch only).
    samples: seeds per tile (seed, seed+1, …), averaged, with their disagreement as uncertainty."""

    sampler: str = "ddim-trailing"
    steps: int = 4
    guidance: float = 3.0
    samples: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r} (known: {', '.join(SAMPLERS)})")
        if self.steps < 1 or self.samples < 1 or self.guidance < 0:
            raise ValueError("steps and samples must be ≥ 1 and guidance ≥ 0")

    @property
    def nfe_per_tile(self) -> int:
        """Denoiser evaluations per tile, counted the usual way (a guided step counts two)."""
        return self.steps * self.samples * (1 if self.guidance == 1.0 else 2)


@dataclass
class SampleResult:
    """probs: (B, K, H, W) mean over samples; uncertainty: (B, H, W) or None for one sample."""

    probs: torch.Tensor
    uncertainty: torch.Tensor | None


def make_scheduler(model: IDGBRModel, options: SamplingOptions) -> SchedulerMixin:
    """A fresh scheduler on the model's training noise schedule (DPM-Solver++ keeps state)."""
    schedule = dict(model.config.noise_schedule or SD15_SCHEDULE)
    if options.sampler == "dpm++":
        sched = DPMSolverMultistepScheduler(**schedule, algorithm_type="dpmsolver++", solver_order=2,
                                            timestep_spacing="trailing")
    else:
        spacing = "trailing" if options.sampler == "ddim-trailing" else "leading"
        sched = DDIMScheduler(**schedule, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                              timestep_spacing=spacing)
    sched.set_timesteps(options.steps)
    return sched


def initial_noise(shape: tuple[int, ...], options: SamplingOptions, device: torch.device,
                  dtype: torch.dtype) -> torch.Tensor:
    """(samples·B, …) noise, sample-major; sample s of every tile is drawn from seed + s."""
    parts = [torch.randn(shape, generator=torch.Generator("cpu").manual_seed(options.seed + s))
             for s in range(options.samples)]
    return torch.cat(parts).to(device, dtype)


def summarise(logits: torch.Tensor, samples: int) -> SampleResult:
    """Mean probabilities over samples, and as uncertainty the mean total-variation distance of
    each sample's probabilities to that mean (0 when all samples agree, up to 1)."""
    probs = torch.softmax(logits.float(), 1)
    probs = probs.view(samples, -1, *probs.shape[1:])
    mean = probs.mean(0)
    if samples == 1:
        return SampleResult(mean, None)
    return SampleResult(mean, 0.5 * (probs - mean).abs().sum(2).mean(0))


@torch.no_grad()
def sample(model: IDGBRModel, image: torch.Tensor, coarse: torch.Tensor, options: SamplingOptions,
           recompute_conditions: bool = False) -> SampleResult:
    """Refine a batch: image (B, 3, H, W) normalised as the model card says, coarse (B, H, W)
    class ids. `recompute_conditions` redoes the per-tile work at every step (for tests)."""
    image_lat = model.encode_image(image.to(model.vae.dtype))
    rough_lat = model.encode_labels(coarse)
    conds = model.prepare_conditions(image_lat, rough_lat)
    if options.samples > 1:
        conds = [c.repeat(options.samples) for c in conds]
    sched = make_scheduler(model, options)
    z = initial_noise(tuple(image_lat.shape), options, image_lat.device, image_lat.dtype) * sched.init_noise_sigma
    for t in sched.timesteps:
        if recompute_conditions:
            conds = [c.repeat(options.samples) for c in model.prepare_conditions(image_lat, rough_lat)]
        eps = model.denoise(sched.scale_model_input(z, t), t, conds, options.guidance)
        z = sched.step(eps, t, z).prev_sample
    return summarise(model.decode_logits(z), options.samples)


@torch.no_grad()
def reference_sample(model: IDGBRModel, image: torch.Tensor, coarse: torch.Tensor,
                     options: SamplingOptions) -> SampleResult:
    """The authors' inference loop: at every step the condition features are recomputed, the
    guided branch runs the denoiser's encoder for its features and then the whole UNet with the
    residuals, and the unguided branch is a separate plain UNet call."""
    image_lat = model.encode_image(image.to(model.vae.dtype))
    rough_lat = model.encode_labels(coarse)
    sched = make_scheduler(model, options)
    z = initial_noise(tuple(image_lat.shape), options, image_lat.device, image_lat.dtype) * sched.init_noise_sigma
    ctx = model.context(z.shape[0])
    for t in sched.timesteps:
        zin = sched.scale_model_input(z, t)
        conds = [c.repeat(options.samples) for c in model.prepare_conditions(image_lat, rough_lat)]
        res = model.residuals(encode(model.unet, zin, t, ctx), conds)
        eps_c = model.unet(zin, t, ctx, down_block_additional_residuals=tuple(res[:-1]),
                           mid_block_additional_residual=res[-1]).sample
        eps = eps_c
        if options.guidance != 1.0:
            eps_u = model.unet(zin, t, ctx).sample
            eps = eps_u + options.guidance * (eps_c - eps_u)
        z = sched.step(eps, t, z).prev_sample
    return summarise(model.decode_logits(z), options.samples)

