"""Training of the SatSynth generator, base stage then SR stage, on random crops of real tiles.

Each sample is a `crop`² window of a random training tile (tiles smaller than the crop are
mirror-padded) with a random flip and quarter turn. The SR stage learns the pair at 2 × base
resolution (the native crop when base = crop / 2) from the base-resolution pair upsampled
bilinearly; the base stage learns that base-resolution pair. Downsampling: images by area
averaging; labels by the majority class of each window (area-averaged one-hot, argmax) rather
than by averaging the ±1 bits, which at a boundary between classes whose codes differ in more
than one bit invents a third class present in neither.

DDPM ε-prediction MSE, AdamW with warm-up + cosine decay (over whichever runs out first, the
steps or the stage's share of `max_minutes`), gradient clipping, EMA of the weights (what is
saved). Every random draw is seeded by (seed, stage, step), so a run resumed from
`<out>.work/checkpoint/` sees the batches and noise the uninterrupted run would have seen.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import load_file, save_file

from ..datasets import TileDataset, load_dataset
from ..device import resolve_device
from ..diffusion.train import EMA, warmup_cosine
from ..errors import InputError
from ..segment.data import folder_dataset, subset
from .bits import encode, num_bits
from .config import SCHEDULE, DataConfig, StageConfig, SynthConfig
from .model import STAGES, SynthCard, SynthModel, build_unet, save_synth_model, sr_condition

Report = Callable[[str], None]
LOG_FILE = "train_log.jsonl"
CHECKPOINT = "checkpoint"
STATE_FILE = "state.json"


@dataclass
class TrainResult:
    out: Path
    steps: dict[str, int]
    seconds: float
    losses: dict[str, float] = field(default_factory=dict)  # last logged loss of each stage


def open_tiles(data: DataConfig) -> TileDataset:
    """The training tiles the config names; with `limit`, only the first N of them."""
    if data.dataset is not None:
        tiles = load_dataset(data.dataset, "train", data.root)
    elif data.images is not None and data.labels is not None:
        tiles = folder_dataset(data.images, data.labels, data.classes, data.binary_255, gsd_m=data.gsd_m or 0.0)
    else:
        raise InputError("the data section needs either 'dataset' or both 'images' and 'labels'")
    if data.limit is not None:
        tiles = subset(tiles, range(min(data.limit, len(tiles))))
    if not len(tiles):
        raise InputError("no training tiles")
    return tiles


def resize_pair(image: torch.Tensor, labels: torch.Tensor, size: int, num_classes: int) -> torch.Tensor:
    """Images (B, 3, H, W) in [−1, 1] and class ids (B, H, W) → a pair (B, 3 + nbits, size, size):
    images area-averaged, labels by majority (area-averaged one-hot, argmax) then encoded."""
    rgb = F.interpolate(image, size=(size, size), mode="area")
    onehot = F.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).float()
    majority = F.interpolate(onehot, size=(size, size), mode="area").argmax(1)
    return torch.cat([rgb, encode(majority, num_classes)], 1)


@dataclass
class CropSampler:
    """Random crops of random tiles; batch (stage, step) is the same in every run."""

    tiles: TileDataset
    crop: int
    seed: int = 0
    cache_tiles: int = 256  # decoded tiles kept in memory: a PNG decode costs as much as a tiny step

    def __post_init__(self) -> None:
        self.read = functools.lru_cache(maxsize=self.cache_tiles)(lambda i: self.tiles[i][:2])

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        image, label = self.read(int(rng.integers(len(self.tiles))))
        c = self.crop
        pad = ((0, max(0, c - label.shape[0])), (0, max(0, c - label.shape[1])))
        if any(p for _, p in pad):
            image, label = np.pad(image, (*pad, (0, 0)), mode="symmetric"), np.pad(label, pad, mode="symmetric")
        y, x = int(rng.integers(label.shape[0] - c + 1)), int(rng.integers(label.shape[1] - c + 1))
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        out = [np.rot90(a[y:y + c, x:x + c], k, axes=(0, 1)) for a in (image, label)]
        return tuple(a[:, ::-1] if flip else a for a in out)  # type: ignore[return-value]

    def batch(self, stage: int, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (B, 3, c, c) in [−1, 1], labels (B, c, c) int64)."""
        parts = [self.sample(np.random.default_rng([self.seed, stage, step, j])) for j in range(size)]
        images, labels = (np.stack(p) for p in zip(*parts))
        return (torch.tensor(images).permute(0, 3, 1, 2).float() / 127.5 - 1, torch.tensor(labels, dtype=torch.int64))


def stage_inputs(stage: str, image: torch.Tensor, labels: torch.Tensor, cfg: SynthConfig,
                 num_classes: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(target x0, condition or None) of a batch of native crops for 'base' or 'sr'."""
    low = resize_pair(image, labels, cfg.base_resolution, num_classes)
    if stage == "base":
        return low, None
    return resize_pair(image, labels, cfg.sr_resolution, num_classes), sr_condition(low)


class StageTrainer:
    """One stage's UNet, optimiser, schedule and EMA; `save`/`load` are its checkpoint."""

    def __init__(self, name: str, unet: UNet2DModel, stage: StageConfig, cfg: SynthConfig, device: str) -> None:
        self.name, self.unet, self.stage, self.cfg, self.device = name, unet.to(device).train(), stage, cfg, device
        self.steps = cfg.stage_steps(name)
        t = cfg.train
        self.optimizer = torch.optim.AdamW(unet.parameters(), lr=stage.lr, weight_decay=t.weight_decay)
        self.factor = warmup_cosine(t.warmup, self.steps)
        self.ema = EMA(list(unet.parameters()), t.ema_decay)
        self.noise = DDPMScheduler(**SCHEDULE)
        self.step, self.seconds_before = 0, 0.0

    def train_step(self, x0: torch.Tensor, cond: torch.Tensor | None, time_fraction: float) -> dict[str, float]:
        seed = int(np.random.default_rng([self.cfg.train.seed, STAGES.index(self.name), self.step]).integers(2**62))
        g = torch.Generator().manual_seed(seed)
        t = torch.randint(0, self.noise.config.num_train_timesteps, (x0.shape[0],), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        x0, t, noise = x0.to(self.device), t.to(self.device), noise.to(self.device)
        xt = self.noise.add_noise(x0, noise, t)
        inp = xt if cond is None else torch.cat([xt, cond.to(self.device)], 1)
        loss = F.mse_loss(self.unet(inp, t).sample, noise)
        lr = self.stage.lr * self.factor(max(self.step, int(time_fraction * self.steps)))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.unet.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.step += 1
        self.ema.decay = min(self.cfg.train.ema_decay, (1 + self.step) / (10 + self.step))  # short runs too
        self.ema.update()
        return {"loss": float(loss.detach()), "grad_norm": float(norm), "lr": lr}

    def _names(self) -> list[str]:
        return [n for n, _ in self.unet.named_parameters()]

    def save(self, folder: Path, seconds: float) -> dict[str, Any]:
        """Live and EMA weights (safetensors), optimiser state (torch, checkpoint only); returns
        the stage's entry of the JSON state."""
        save_file({k: v.detach().contiguous().cpu() for k, v in self.unet.state_dict().items()},
                  folder / f"{self.name}.safetensors")
        save_file({n: s.contiguous().cpu() for n, s in zip(self._names(), self.ema.shadow)},
                  folder / f"{self.name}.ema.safetensors")
        torch.save(self.optimizer.state_dict(), folder / f"{self.name}.optimizer.pt")
        return {"step": self.step, "seconds": round(seconds, 1)}

    def load(self, folder: Path, entry: dict[str, Any]) -> None:
        self.unet.load_state_dict(load_file(folder / f"{self.name}.safetensors", device=self.device))
        ema = load_file(folder / f"{self.name}.ema.safetensors", device=self.device)
        self.ema.load_state_dict([ema[n] for n in self._names()])
        self.optimizer.load_state_dict(torch.load(folder / f"{self.name}.optimizer.pt", map_location=self.device,
                                                  weights_only=True))
        self.step, self.seconds_before = int(entry["step"]), float(entry["seconds"])


def train_synth(cfg: SynthConfig, resume: bool = False, report: Report = print) -> TrainResult:
    """Train the stages in turn and write the model folder `cfg.out` (EMA weights + card)."""
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device)
    tiles = open_tiles(cfg.data)
    k = len(tiles.classes)
    channels = 3 + num_bits(k)
    work = cfg.work_path
    checkpoint = work / CHECKPOINT
    state: dict[str, Any] = {}
    if resume:
        if not (checkpoint / STATE_FILE).is_file():
            raise InputError(f"nothing to resume: {checkpoint / STATE_FILE} is missing")
        state = json.loads((checkpoint / STATE_FILE).read_text())
    else:
        shutil.rmtree(work, ignore_errors=True)
    checkpoint.mkdir(parents=True, exist_ok=True)
    sampler = CropSampler(tiles, cfg.data.crop, t.seed)
    stages = [s for s in STAGES if s == "base" or cfg.sr.enabled]
    total_steps = sum(cfg.stage_steps(s) for s in stages)
    unets: dict[str, UNet2DModel | None] = {"base": None, "sr": None}
    losses: dict[str, float] = {}
    for name in stages:
        torch.manual_seed(t.seed + STAGES.index(name))
        stage_cfg: StageConfig = getattr(cfg, name)
        res = cfg.base_resolution if name == "base" else cfg.sr_resolution
        trainer = StageTrainer(name, build_unet(stage_cfg, res, channels, conditioned=name == "sr"), stage_cfg,
                               cfg, device)
        if name in state:
            trainer.load(checkpoint, state[name])
            report(f"{name}: resumed at step {trainer.step}")
        budget = 60 * t.max_minutes * trainer.steps / max(1, total_steps) if t.max_minutes else None
        state[name], losses[name] = _run_stage(trainer, sampler, budget, k, checkpoint, state, report)
        trainer.ema.swap()  # the EMA weights are what is saved
        unets[name] = trainer.unet.eval()
    card = _card(cfg, tiles, state, device)
    save_synth_model(SynthModel(card, unets["base"], unets["sr"]), cfg.out)
    steps = {s: int(state[s]["step"]) for s in stages}
    return TrainResult(Path(cfg.out), steps, sum(state[s]["seconds"] for s in stages), losses)


def _run_stage(trainer: StageTrainer, sampler: CropSampler, budget_s: float | None, num_classes: int,
               checkpoint: Path, state: dict[str, Any], report: Report) -> tuple[dict[str, Any], float]:
    """Train one stage until its steps or its time budget run out; checkpoint on the way and at
    the end. Returns the stage's state entry and its last logged loss."""
    cfg, name, t = trainer.cfg, trainer.name, trainer.cfg.train
    start = time.monotonic() - trainer.seconds_before

    def elapsed() -> float:
        return time.monotonic() - start

    def save() -> dict[str, Any]:
        state[name] = trainer.save(checkpoint, elapsed())
        (checkpoint / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        return state[name]

    window: list[float] = []
    last = float("nan")
    while trainer.step < trainer.steps and (budget_s is None or elapsed() < budget_s):
        image, labels = sampler.batch(STAGES.index(name), trainer.step, trainer.stage.batch_size)
        x0, cond = stage_inputs(name, image, labels, cfg, num_classes)
        out = trainer.train_step(x0, cond, elapsed() / budget_s if budget_s else 0.0)
        window.append(out["loss"])
        done = trainer.step >= trainer.steps or (budget_s is not None and elapsed() >= budget_s)
        if trainer.step % t.log_every == 0 or done:
            last = float(np.mean(window))
            _log(cfg.work_path, {"stage": name, "step": trainer.step, "time_s": round(elapsed(), 1), "loss": last,
                                 "grad_norm": out["grad_norm"], "lr": out["lr"]}, report)
            window = []
        if trainer.step % t.checkpoint_every == 0 and not done:
            save()
    return save(), last


def _log(work: Path, record: dict[str, Any], report: Report) -> None:
    with open(work / LOG_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")
    report(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))


def _card(cfg: SynthConfig, tiles: TileDataset, state: dict[str, Any], device: str) -> SynthCard:
    gsds = [r.gsd_m for r in tiles.tiles if r.gsd_m]
    data_gsd = float(np.median(gsds)) if gsds else cfg.data.gsd_m
    out_res = cfg.sr_resolution if cfg.sr.enabled else cfg.base_resolution
    training: dict[str, Any] = {"seed": cfg.train.seed, "machine": _machine(device), "ema_decay": cfg.train.ema_decay}
    for name in state:
        stage: StageConfig = getattr(cfg, name)
        training[name] = {**state[name], "batch_size": stage.batch_size, "lr": stage.lr,
                          "block_out_channels": list(stage.block_out_channels)}
    return SynthCard(
        name=cfg.name, description=cfg.description, classes=tiles.classes, num_bits=num_bits(len(tiles.classes)),
        base_resolution=cfg.base_resolution, sr_resolution=cfg.sr_resolution if cfg.sr.enabled else None,
        crop=cfg.data.crop, gsd_m=round(data_gsd * cfg.data.crop / out_res, 4) if data_gsd else None,
        data_gsd_m=data_gsd, schedule=dict(SCHEDULE), sampling=dict(vars(cfg.sampling)),
        data={"dataset": cfg.data.dataset or cfg.data.images, "split": "train", "tiles": len(tiles),
              "limit": cfg.data.limit, "crop": cfg.data.crop}, training=training)


def _machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)} (CUDA)"
    return f"CPU {platform.machine()}, {torch.get_num_threads()} threads of {os.cpu_count()} cores"
