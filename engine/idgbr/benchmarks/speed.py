"""`idgbr benchmark speed`: tiles per second and peak memory of the IDGBR refiner, the authors'
inference loop (conditions recomputed every step, the denoiser's encoder run once per branch,
25 DDIM steps, CFG 3, fp32, one tile per batch) against our default fast path, in one run.
Random weights: speed does not depend on them. torch and diffusers are imported when the
benchmark runs, so registering it keeps `idgbr --help` fast."""
from __future__ import annotations

import argparse
import json
import resource
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..diffusion.model import IDGBRModel


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("speed", help="IDGBR sampling speed: the authors' loop vs our fast path")
    p.add_argument("--preset", choices=("compact", "sd15"), default="compact",
                   help="network size: the compact preset or Stable Diffusion 1.5's (compact)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (auto)")
    p.add_argument("--tile-size", type=int, help="default: 256 (compact), 512 (sd15)")
    p.add_argument("--tiles", type=int, default=4, help="tiles timed per variant")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per batch on the fast path")
    p.add_argument("--steps", type=int, help="fast path steps (default: SamplingOptions')")
    p.add_argument("--sampler", help="fast path sampler (default: SamplingOptions')")
    p.add_argument("--json", help="also write the results as JSON here")
    p.set_defaults(func=run)


def random_sd15(num_classes: int = 2) -> IDGBRModel:
    """Stable Diffusion v1.5's architecture with random weights (no download needed)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from ..diffusion.model import SD15_SCHEDULE, IDGBRModel, plain_config

    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                        layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215, sample_size=512)
    return IDGBRModel(unet_config=plain_config(unet.config), vae_config=plain_config(vae.config),
                      num_classes=num_classes, null_context_tokens=77, null_context_learned=False,
                      noise_schedule=dict(SD15_SCHEDULE))


def _time(fn: Any, device: str) -> tuple[float, float]:
    """Seconds and peak memory (MiB: CUDA allocator peak, or process RSS peak on CPU)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return time.perf_counter() - t0, torch.cuda.max_memory_allocated() / 2**20
    return time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(args: argparse.Namespace) -> int:
    import torch

    from ..device import resolve_device
    from ..diffusion.presets import compact
    from ..diffusion.sampling import SamplingOptions, reference_sample, sample

    device = resolve_device(args.device)
    size = args.tile_size or (256 if args.preset == "compact" else 512)
    model = (compact(2) if args.preset == "compact" else random_sd15()).to(device).eval()
    fast = SamplingOptions(**{k: v for k, v in (("steps", args.steps), ("sampler", args.sampler)) if v})
    authors = SamplingOptions(sampler="ddim", steps=25, guidance=3.0)
    image = torch.rand(args.tiles, 3, size, size, device=device) * 2 - 1
    coarse = (torch.rand(args.tiles, size, size, device=device) > 0.5).long()

    def authors_loop() -> None:
        for i in range(args.tiles):
            reference_sample(model, image[i:i + 1], coarse[i:i + 1], authors)

    def fast_path() -> None:
        ctx = torch.autocast("cuda", dtype=torch.float16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
        with ctx:
            for i in range(0, args.tiles, args.batch_size):
                sample(model, image[i:i + args.batch_size], coarse[i:i + args.batch_size], fast)

    sample(model, image[:1], coarse[:1], SamplingOptions(steps=1))  # warm-up
    rows = {}
    for name, fn, opts in (("authors", authors_loop, authors), ("fast", fast_path, fast)):
        seconds, peak = _time(fn, device)
        rows[name] = {"tiles_per_s": args.tiles / seconds, "s_per_tile": seconds / args.tiles, "peak_mib": peak,
                      "sampler": opts.sampler, "steps": opts.steps, "guidance": opts.guidance}
        print(f"{name:8s} {rows[name]['s_per_tile']:.3f} s/tile  {rows[name]['tiles_per_s']:.3f} tiles/s  "
              f"peak {peak:.0f} MiB  ({opts.sampler}, {opts.steps} steps, w={opts.guidance})")
    ratio = rows["fast"]["tiles_per_s"] / rows["authors"]["tiles_per_s"]
    print(f"speed-up: {ratio:.1f}× ({args.preset}, {size}² tiles, {device})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"preset": args.preset, "device": device, "tile_size": size, "rows": rows, "speedup": ratio}, f, indent=2)
    return 0
