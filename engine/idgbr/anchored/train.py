"""`idgbr train refiner --config X.yaml` for the anchored family (`family: anchored` in the YAML).

    family: anchored
    name: buildings
    out: ~/.cache/idgbr-train/buildings-diffusion     # model folder; checkpoint/ + train_log.jsonl inside
    data: {dataset: buildings, recipes: [buildings-osm, buildings-old], crop: 128, val_tiles: 48}
    model: {mode: diffusion, widths: [24, 48, 96, 128], steps: 8, band_px: 16}
    train: {steps: 20000, batch_size: 8, lr: 0.001, max_minutes: 120, checkpoint_minutes: 3}
    sampling: {steps: 4}
    card: {description: …, gsd_range_m: [0.07, 0.3]}

Checkpoints (weights as safetensors, optimizer/schedule/EMA/step in `training_state.pt`, read
with `weights_only`) are written atomically every `checkpoint_minutes`; `--resume` continues
exactly (batches and noise are seeded by (seed, step)). Every `validate_every` steps the EMA
weights refine `val_tiles` whole val tiles; the best validation so far (boundary F@3 + WFm) is
exported as the model folder `out`.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config_file import build_section, read_mapping
from ..diffusion.train import warmup_cosine
from ..errors import InputError
from .data import CoarseSource, CropSampler
from .net import AnchoredRefinerNet
from .process import refine_arrays, training_loss

STATE_FILE = "training_state.pt"
Report = Callable[[str], None]


@dataclass
class DataSection:
    dataset: str = "buildings"
    root: str | None = None
    recipes: list[str] = field(default_factory=lambda: ["buildings-osm"])
    coarse: list[str] = field(default_factory=list)  # folders of coarse tiles, drawn like recipes
    weights: list[float] | None = None  # draw odds of recipes + coarse folders, in that order; default: equal
    variants: int = 6
    crop: int = 128
    boundary_crops: float = 0.85
    val_tiles: int = 48
    val_recipe: str | list[str] | None = None  # default: the first recipe; a list splits the val tiles among them
    limit: int | None = None  # train on N tiles spread evenly over the split (smoke runs, loop checks)


@dataclass
class ModelSection:
    mode: str = "diffusion"
    widths: list[int] = field(default_factory=lambda: [24, 48, 96, 128])
    steps: int = 8
    kappa: float = 0.5
    eta_power: float = 1.5
    band_px: int = 16
    prior_logit: float = 4.0
    distance_cue: bool = True  # False feeds zeros instead (the ablation of docs/anchored_refiner.md)


@dataclass
class TrainSection:
    steps: int = 20000
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.998
    unroll: float = 0.5
    boundary_weight: float = 4.0
    seed: int = 0
    threads: int = 1
    bf16: bool = True  # bfloat16 autocast: 2.5× the samples/s of fp32 on an AVX512-BF16 CPU, same loss curve
    max_minutes: float | None = None
    stop_at: int | None = None  # end the run at this step; the schedule still spans `steps` (equal-budget ablations)
    checkpoint_minutes: float = 3.0
    validate_every: int = 500
    log_every: int = 50


@dataclass
class SamplingSection:
    steps: int = 4
    samples: int = 1
    gate: float = 0.5  # see idgbr.models.anchored
    close_gate: float = 0.5  # see idgbr.models.anchored


@dataclass
class CardSection:
    description: str = ""
    task: str = ""
    gsd_range_m: list[float] | None = None
    tile_size: int = 256
    overlap: float = 0.25
    background_class: int | None = 0  # None: every class is vectorized (land cover)
    building_classes: list[int] = field(default_factory=list)
    coarse_model: str | None = None


@dataclass
class AnchoredConfig:
    name: str
    out: str
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    sampling: SamplingSection = field(default_factory=SamplingSection)
    card: CardSection = field(default_factory=CardSection)

    @classmethod
    def from_mapping(cls, data: dict[str, Any], where: str) -> "AnchoredConfig":
        data = {k: v for k, v in data.items() if k != "family"}
        sections = {"data": DataSection, "model": ModelSection, "train": TrainSection,
                    "sampling": SamplingSection, "card": CardSection}
        unknown = set(data) - set(sections) - {"name", "out"}
        if unknown or "name" not in data or "out" not in data:
            raise InputError(f"{where}: needs 'name' and 'out'; unknown keys {sorted(unknown)}")
        built = {k: build_section(kind, data.get(k) or {}, f"{where}: {k}") for k, kind in sections.items()}
        return cls(name=str(data["name"]), out=str(data["out"]), **built)

    @classmethod
    def load(cls, path: str | Path) -> "AnchoredConfig":
        return cls.from_mapping(read_mapping(path), str(path))


def is_anchored_config(path: str | Path) -> bool:
    return read_mapping(path).get("family") == "anchored"


@dataclass
class TrainResult:
    out: Path
    step: int
    seconds: float
    best: dict[str, Any] | None


def build_net(cfg: AnchoredConfig, num_classes: int) -> AnchoredRefinerNet:
    m = cfg.model
    return AnchoredRefinerNet(num_classes=num_classes, widths=tuple(m.widths), mode=m.mode, steps=m.steps,
                              kappa=m.kappa, eta_power=m.eta_power, band_px=m.band_px, prior_logit=m.prior_logit,
                              distance_cue=m.distance_cue)


class Trainer:
    """Net, EMA, optimizer and schedule of one run; `step` counts finished steps."""

    def __init__(self, cfg: AnchoredConfig, num_classes: int) -> None:
        t = cfg.train
        torch.manual_seed(t.seed)
        self.cfg = cfg
        self.net = build_net(cfg, num_classes)
        self.ema = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, warmup_cosine(t.warmup, t.steps, floor=0.05))
        self.step = 0
        self.seconds = 0.0
        self.best: dict[str, Any] | None = None

    def train_step(self, image: torch.Tensor, coarse: torch.Tensor, label: torch.Tensor) -> float:
        t = self.cfg.train
        self.net.train()
        g = torch.Generator().manual_seed(t.seed * 1_000_003 + self.step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=t.bf16):
            loss = training_loss(self.net, image, coarse, label, g, t.unroll, t.boundary_weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), t.grad_clip)
        self.opt.step()
        self.sched.step()
        with torch.no_grad():
            for k, v in self.net.state_dict().items():
                if v.dtype.is_floating_point:
                    self.ema[k].mul_(t.ema_decay).add_(v.detach(), alpha=1 - t.ema_decay)
                else:
                    self.ema[k].copy_(v)
        self.step += 1
        return loss.item()

    def ema_net(self) -> AnchoredRefinerNet:
        net = build_net(self.cfg, self.net.config.num_classes)
        net.load_state_dict(self.ema)
        return net.eval()

    def save(self, folder: Path) -> None:
        """Atomic: written beside, then swapped in, so a kill mid-save keeps the last one."""
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.net.save_pretrained(tmp / "model")
        self.ema_net().save_pretrained(tmp / "ema")
        torch.save({"opt": self.opt.state_dict(), "sched": self.sched.state_dict(), "step": self.step,
                    "seconds": self.seconds, "best": self.best}, tmp / STATE_FILE)
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)

    def load(self, folder: Path) -> None:
        net = AnchoredRefinerNet.from_pretrained(folder / "model", use_safetensors=True)
        ema = AnchoredRefinerNet.from_pretrained(folder / "ema", use_safetensors=True)
        self.net.load_state_dict(net.state_dict())
        self.ema = {k: v.detach().clone() for k, v in ema.state_dict().items()}
        state = torch.load(folder / STATE_FILE, weights_only=True)
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.step, self.seconds, self.best = state["step"], state["seconds"], state["best"]


def val_recipes(cfg: AnchoredConfig) -> list[str]:
    """The recipes the val tiles' coarse maps come from (recorded with the best score)."""
    v = cfg.data.val_recipe or cfg.data.recipes[0]
    return [v] if isinstance(v, str) else list(v)


def val_tiles(cfg: AnchoredConfig) -> list[Any]:
    """Whole val tiles with the coarse maps `idgbr benchmark quality` would make for them; with
    several val recipes, each gets an equal share of the tiles, spread over the split, so the
    best checkpoint is one that helps on mild and on strong errors alike."""
    from ..benchmarks.quality import load_tiles
    from ..datasets import load_dataset

    ds = load_dataset(cfg.data.dataset, "val", cfg.data.root).spread(cfg.data.val_tiles)
    recipes = val_recipes(cfg)
    tiles = []
    for r, recipe in enumerate(recipes):
        tiles += load_tiles(type(ds)(ds.spec, ds.split, ds.tiles[r::len(recipes)]), os.path.expanduser(recipe), 0,
                            progress=False)
    return tiles


def refine_tiles(net: AnchoredRefinerNet, tiles: list[Any], steps: int, batch_size: int = 4) -> list[np.ndarray]:
    """Argmax maps of whole tiles, in order; a batch holds tiles of one size."""
    out: list[np.ndarray] = [np.empty(0)] * len(tiles)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, t in enumerate(tiles):
        by_shape.setdefault(t.gt.shape, []).append(i)
    for index in by_shape.values():
        for j in range(0, len(index), batch_size):
            part = index[j:j + batch_size]
            image = np.stack([tiles[i].image for i in part]).transpose(0, 3, 1, 2).astype(np.float32) / 255
            probs, _ = refine_arrays(net, image, np.stack([tiles[i].coarse for i in part]), steps)
            for i, p in zip(part, probs.argmax(1).astype(np.uint8)):
                out[i] = p
    return out


def validate(net: AnchoredRefinerNet, tiles: list[Any], num_classes: int, steps: int) -> dict[str, float]:
    from ..evaluate import Evaluator

    ev, base = Evaluator(num_classes), Evaluator(num_classes)
    for t, pred in zip(tiles, refine_tiles(net, tiles, steps)):
        ev.update(pred, t.gt, t.coarse)
        base.update(t.coarse, t.gt, t.coarse)
    r, b = ev.result(), base.result()
    return {"miou": r["miou"], "wfm_band3": r["wfm_band3"], "boundary_f3": r["boundary_f"]["3"],
            "coarse_miou": b["miou"], "coarse_wfm_band3": b["wfm_band3"], "coarse_boundary_f3": b["boundary_f"]["3"]}


def export(trainer: Trainer, cfg: AnchoredConfig, classes: list[Any], gsd_m: float, metrics: dict[str, Any],
           folder: Path) -> None:
    """The model folder: EMA weights (safetensors), diffusers config, model card."""
    from ..models.card import ModelCard

    tmp = folder.with_name(folder.name + ".export")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.ema_net().save_pretrained(tmp)
    c = cfg.card
    card = ModelCard(
        name=cfg.name, refiner="anchored", task=c.task, description=c.description, classes=list(classes),
        background_class=c.background_class, building_classes=c.building_classes, gsd_m=gsd_m, gsd_range_m=c.gsd_range_m, tile_size=c.tile_size,
        overlap=c.overlap, normalization={"mean": [0.5] * 3, "std": [0.25] * 3}, coarse_model=c.coarse_model,
        training={"family": "anchored", "mode": cfg.model.mode, "sampling": asdict(cfg.sampling),
                  "data": asdict(cfg.data), "steps": trainer.step, "batch_size": cfg.train.batch_size,
                  "seconds": round(trainer.seconds), "machine": machine(),
                  "parameters": sum(p.numel() for p in trainer.net.parameters())},
        metrics=metrics)
    card.save(tmp)
    if folder.exists():
        for f in folder.iterdir():  # keep checkpoint/ and the log, replace the model files
            if f.is_file() and f.name != "train_log.jsonl":
                f.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        f.replace(folder / f.name)
    shutil.rmtree(tmp)


def machine() -> str:
    from ..benchmarks.quality import machine_description

    return f"{machine_description()['cpu']}, {torch.get_num_threads()} torch thread(s), {os.cpu_count()} cores"


def train(cfg: AnchoredConfig, resume: bool = False, report: Report = print) -> TrainResult:
    from ..datasets import load_dataset

    t = cfg.train
    torch.set_num_threads(t.threads)
    out = Path(cfg.out).expanduser()
    ckpt = out / "checkpoint"
    ds = load_dataset(cfg.data.dataset, "train", cfg.data.root)
    ds = ds.spread(cfg.data.limit)
    sources = ([CoarseSource(r) for r in cfg.data.recipes]
               + [CoarseSource(Path(d).name, Path(d).expanduser()) for d in cfg.data.coarse])
    if not sources:
        raise InputError("data: give at least one recipe or coarse folder")
    sampler = CropSampler(ds, sources, cfg.data.crop, cfg.data.variants, cfg.data.boundary_crops, t.seed,
                          cfg.data.weights)
    tiles = val_tiles(cfg)
    k = len(ds.classes)
    trainer = Trainer(cfg, k)
    if resume:
        if not (ckpt / STATE_FILE).is_file():
            raise InputError(f"--resume: no checkpoint in {ckpt}")
        trainer.load(ckpt)
        report(f"resumed at step {trainer.step}")
        if trainer.best is not None and trainer.best.get("val_recipes", val_recipes(cfg)[:1]) != val_recipes(cfg):
            report(f"validation now on {val_recipes(cfg)}: the best score so far (step {trainer.best['step']}) "
                   "is not comparable, reset")
            trainer.best = None
    elif ckpt.exists():
        raise InputError(f"{ckpt} exists: pass --resume to continue, or choose another 'out'")
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "train_log.jsonl").open("a")
    gsd = float(np.median([r.gsd_m for r in ds.tiles]))
    start = time.perf_counter()
    base_seconds, last_ckpt = trainer.seconds, start
    losses, t_log = [], start

    def elapsed() -> float:
        return base_seconds + time.perf_counter() - start

    def write(record: dict[str, Any]) -> None:
        log.write(json.dumps(record) + "\n")
        log.flush()
        report(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

    last = min(t.steps, t.stop_at or t.steps)
    while trainer.step < last and not (t.max_minutes and time.perf_counter() - start > 60 * t.max_minutes):
        losses.append(trainer.train_step(*sampler.batch(trainer.step, t.batch_size)))
        trainer.seconds = elapsed()
        if trainer.step % t.log_every == 0:
            now = time.perf_counter()
            write({"step": trainer.step, "loss": float(np.mean(losses)), "lr": trainer.sched.get_last_lr()[0],
                   "samples_per_s": len(losses) * t.batch_size / (now - t_log), "seconds": round(trainer.seconds)})
            losses, t_log = [], now
        if trainer.step % t.validate_every == 0 or trainer.step == t.steps:
            v = validate(trainer.ema_net(), tiles, k, cfg.sampling.steps)
            v["score"] = v["boundary_f3"] + v["wfm_band3"]
            v["val_recipes"] = val_recipes(cfg)
            write({"step": trainer.step, "val": v})
            if trainer.best is None or v["score"] > trainer.best["score"]:
                trainer.best = {**v, "step": trainer.step}
                export(trainer, cfg, ds.classes, gsd, {"val": trainer.best, "val_tiles": len(tiles)}, out)
            trainer.save(ckpt)
            last_ckpt = time.perf_counter()
        elif time.perf_counter() - last_ckpt > 60 * t.checkpoint_minutes:
            trainer.save(ckpt)
            last_ckpt = time.perf_counter()
    trainer.save(ckpt)
    log.close()
    return TrainResult(out, trainer.step, trainer.seconds, trainer.best)
