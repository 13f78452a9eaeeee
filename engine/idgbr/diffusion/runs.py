"""The outer loops of `idgbr train label-embed|vae|refiner`: batches, logging (stdout and
`train_log.jsonl` in the output folder), checkpoints in `<out>/checkpoint/` that `--resume`
continues from, validation every N steps, a wall-time budget, and the final model folder.

The refiner's folder is what `idgbr refine --model DIR` loads: `model_card.json`, the
diffusers `config.json` and the EMA weights as safetensors. Ship it without `checkpoint/`.
"""
from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..synth.mix import MixedDataset, mix_train
from .config import DiffusionConfig
from .data import BatchSampler, ValTile, dataset_gsd, open_tiles, to_tensors, validation_tiles
from .label_embed import LabelEmbedding
from .train import (STATE_FILE, DinoTeacher, RefinerTrainer, fit_scaling_factor, label_embedding_step,
                    seed_everything, vae_step, warmup_cosine)

Report = Callable[[str], None]
LOG_FILE = "train_log.jsonl"
CHECKPOINT = "checkpoint"


@dataclass
class TrainResult:
    out: Path
    steps: int
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)


class Run:
    """What the three loops share: the output folder, the JSONL log, the clock and budget."""

    def __init__(self, cfg: DiffusionConfig, kind: str, report: Report) -> None:
        self.cfg, self.kind, self.report = cfg, kind, report
        self.out = Path(cfg.out)
        self.checkpoint = self.out / CHECKPOINT
        self.checkpoint.mkdir(parents=True, exist_ok=True)
        self.start = time.monotonic()
        self.seconds_before = 0.0  # training time of the runs this one resumes
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        from ..device import resolve_device

        self.device = resolve_device(cfg.train.device)
        seed_everything(cfg.train.seed)

    @property
    def seconds(self) -> float:
        return self.seconds_before + time.monotonic() - self.start

    def out_of_time(self) -> bool:
        budget = self.cfg.train.max_minutes
        return budget is not None and time.monotonic() - self.start > 60 * budget

    def log(self, record: dict[str, Any]) -> None:
        record = {"kind": self.kind, "time_s": round(self.seconds, 1), **record}
        with open(self.out / LOG_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.report(" ".join(f"{k}={_fmt(v)}" for k, v in record.items()))

    def due(self, step: int, every: int) -> bool:
        return every > 0 and step % every == 0

    def machine(self) -> str:
        if self.device.startswith("cuda"):
            return f"{torch.cuda.get_device_name(0)} (CUDA), host {platform.machine()}"
        return f"CPU {platform.machine()} ({_cpu_name()}), {torch.get_num_threads()} threads of {os.cpu_count()} cores"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _mean_logs(logs: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([entry[k] for entry in logs])) for k in logs[0]}


def _sampler(cfg: DiffusionConfig, synthetic: bool = False) -> tuple[BatchSampler, Any]:
    """Batches of the train split; with `synthetic` (the refiner), the config's synthetic
    pairs mixed in. The label embedding and the VAE learn real pairs only."""
    tiles = open_tiles(cfg.data)
    if synthetic:
        tiles = mix_train(tiles, cfg.data.synthetic, cfg.data.ratio)
    return BatchSampler(tiles, cfg.data, len(tiles.classes), cfg.train.seed), tiles


def _save_state(run: Run, step: int, **state: Any) -> None:
    torch.save({"step": step, "seconds": run.seconds, **state}, run.checkpoint / STATE_FILE)


def _load_state(run: Run) -> dict[str, Any]:
    path = run.checkpoint / STATE_FILE
    if not path.is_file():
        raise InputError(f"nothing to resume: {path} is missing")
    state = torch.load(path, weights_only=False)
    run.seconds_before = float(state.get("seconds", 0.0))
    return state


def _write_training(out: Path, info: dict[str, Any]) -> None:
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")


# --- label embedding ---------------------------------------------------------------------------


def train_label_embed(cfg: DiffusionConfig, resume: bool = False, report: Report = print) -> TrainResult:
    """Cross-entropy through noisy codes on real label maps, their coarse versions and one
    random map per batch; writes a `LabelEmbedding` folder."""
    run = Run(cfg, "label-embed", report)
    sampler, tiles = _sampler(cfg)
    k, t = len(tiles.classes), cfg.train
    embed = LabelEmbedding(num_classes=k, hidden=cfg.model.label_hidden).to(run.device)
    opt = torch.optim.Adam(embed.parameters(), lr=t.lr)
    step = 0
    if resume:
        state = _load_state(run)
        embed.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
    gen = torch.Generator().manual_seed(t.seed)
    window: list[dict[str, float]] = []
    while step < t.steps and not run.out_of_time():
        b = sampler.batch(step, t.batch_size)
        rand = torch.from_numpy(np.random.default_rng([t.seed, 2, step]).integers(0, k, b["labels"].shape[1:]))
        labels = torch.cat([b["labels"], b["coarse"], rand[None]]).to(run.device)
        window.append({"loss": label_embedding_step(embed, opt, labels, t.noise_std, gen)})
        step += 1
        if run.due(step, t.log_every):
            run.log({"step": step, **_mean_logs(window)})
            window = []
        if run.due(step, t.checkpoint_every):
            _save_state(run, step, model=embed.state_dict(), optimizer=opt.state_dict())
    _save_state(run, step, model=embed.state_dict(), optimizer=opt.state_dict())
    metrics = _embed_metrics(embed, sampler, t.noise_std, t.seed)
    embed.save_pretrained(run.out)
    _write_training(run.out, {"kind": "label-embed", "steps": step, "seconds": round(run.seconds),
                              "machine": run.machine(), "metrics": metrics, "config": cfg.to_dict()})
    run.log({"step": step, "final": True, **metrics})
    return TrainResult(run.out, step, run.seconds, metrics)


@torch.no_grad()
def _embed_metrics(embed: LabelEmbedding, sampler: BatchSampler, noise_std: float, seed: int) -> dict[str, float]:
    """Decoding accuracy of noisy codes, and the smallest distance between class codes."""
    labels = sampler.batch(0, 4, stream=1)["labels"].to(embed.device)
    codes = embed.encode(labels)
    noisy = codes + noise_std * torch.randn(codes.shape, generator=torch.Generator().manual_seed(seed)).to(codes.device)
    table = 2 * torch.sigmoid(embed.table.weight) - 1
    return {"noisy_accuracy": float((embed.decode(noisy).argmax(1) == labels).float().mean()),
            "min_code_distance": float(torch.pdist(table).min())}


# --- VAE ---------------------------------------------------------------------------------------


def train_vae(cfg: DiffusionConfig, resume: bool = False, report: Report = print) -> TrainResult:
    """The compact preset's VAE, on images and embedded label maps (both pass through it);
    the latent scaling factor is fitted on both at the end and stored in its config."""
    from diffusers import AutoencoderKL

    from .presets import compact_vae_config

    if cfg.model.preset != "compact":
        raise InputError("`idgbr train vae` trains the compact preset's VAE; sd15 uses Stable Diffusion's")
    if not cfg.model.label_embed:
        raise InputError("model.label_embed: the VAE learns embedded label maps, train the label embedding first")
    run = Run(cfg, "vae", report)
    sampler, _ = _sampler(cfg)
    t = cfg.train
    embed = LabelEmbedding.from_pretrained(cfg.model.label_embed, use_safetensors=True).to(run.device).eval().requires_grad_(False)
    torch.manual_seed(t.seed)
    vae = AutoencoderKL.from_config(compact_vae_config()).to(run.device)
    opt = torch.optim.AdamW(vae.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(t.warmup, t.steps))
    step = 0
    if resume:
        state = _load_state(run)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        step = state["step"]
    gen = torch.Generator(run.device).manual_seed(t.seed + step)
    n_labels = min(t.batch_size - 1, max(1, round(t.batch_size * t.label_share)))

    def inputs(step: int, stream: int = 0) -> torch.Tensor:
        b = sampler.batch(step, t.batch_size, stream)
        maps = torch.cat([b["labels"], b["coarse"]])[torch.randperm(2 * t.batch_size)[:n_labels]]
        with torch.no_grad():
            codes = embed.encode(maps.to(run.device))
        return torch.cat([b["image"][: t.batch_size - n_labels].to(run.device), codes])

    window: list[dict[str, float]] = []
    while step < t.steps and not run.out_of_time():
        window.append(vae_step(vae, opt, inputs(step), t.kl_weight, gen))
        sched.step()
        step += 1
        if run.due(step, t.log_every):
            run.log({"step": step, "lr": sched.get_last_lr()[0], **_mean_logs(window)})
            window = []
        if run.due(step, t.checkpoint_every):
            _save_state(run, step, model=vae.state_dict(), optimizer=opt.state_dict(), schedule=sched.state_dict())
    _save_state(run, step, model=vae.state_dict(), optimizer=opt.state_dict(), schedule=sched.state_dict())
    vae.eval()
    scale = fit_scaling_factor(vae, torch.cat([inputs(i, stream=1) for i in range(4)]))
    metrics = {"scaling_factor": scale, **_vae_metrics(vae, embed, sampler, run.device)}
    vae.save_pretrained(run.out)
    _write_training(run.out, {"kind": "vae", "steps": step, "seconds": round(run.seconds), "machine": run.machine(),
                              "metrics": metrics, "config": cfg.to_dict()})
    run.log({"step": step, "final": True, **metrics})
    return TrainResult(run.out, step, run.seconds, metrics)


@torch.no_grad()
def _vae_metrics(vae: Any, embed: LabelEmbedding, sampler: BatchSampler, device: str) -> dict[str, float]:
    """Image PSNR and label round-trip accuracy (labels → codes → VAE → labels)."""
    b = sampler.batch(100, 4, stream=1)
    image = b["image"].to(device)
    recon = vae.decode(vae.encode(image).latent_dist.mode()).sample.clamp(-1, 1)
    mse = float(((recon - image) / 2).pow(2).mean())
    labels = b["labels"].to(device)
    codes = vae.decode(vae.encode(embed.encode(labels)).latent_dist.mode()).sample
    acc = float((embed.decode(codes).argmax(1) == labels).float().mean())
    return {"image_psnr_db": 10 * float(np.log10(1.0 / max(mse, 1e-10))), "label_roundtrip_accuracy": acc}


# --- refiner -----------------------------------------------------------------------------------


def build_refiner_model(cfg: DiffusionConfig, num_classes: int) -> Any:
    from .presets import build

    m = cfg.model
    for what, folder in (("vae", m.vae), ("label_embed", m.label_embed), ("sd15", m.sd15)):
        if folder and not (Path(folder) / "config.json").is_file() and what != "sd15":
            raise InputError(f"model.{what}: {folder} is not a trained model folder (no config.json)")
    extra: dict[str, Any] = {"label_embed": m.label_embed, "label_hidden": m.label_hidden}
    if m.preset == "compact":
        if not m.vae:
            raise InputError("model.vae: the compact preset needs the VAE of `idgbr train vae`")
        extra["vae"] = m.vae
    elif m.preset == "sd15":
        extra["path"] = m.sd15
    if m.label_embed:  # a trained embedding fixes the decoder width
        extra["label_hidden"] = LabelEmbedding.from_pretrained(m.label_embed, use_safetensors=True).config.hidden
    return build(m.preset, num_classes, **extra)


def train_refiner(cfg: DiffusionConfig, resume: bool = False, report: Report = print) -> TrainResult:
    """RefinerTrainer driven over the batch sampler; validation refines whole val tiles with
    the EMA weights at the card's default sampling; the final folder holds the EMA weights."""
    from ..models.card import ModelCard

    run = Run(cfg, "refiner", report)
    sampler, tiles = _sampler(cfg, synthetic=True)
    k, t = len(tiles.classes), cfg.train
    model = build_refiner_model(cfg, k)
    teacher = DinoTeacher(cfg.model.repa_teacher) if cfg.model.repa_teacher else None
    trainer = RefinerTrainer(model, t if teacher else replace(t, repa_lambda=0.0), teacher=teacher,
                             device=run.device)
    if resume:
        run.seconds_before = float(torch.load(run.checkpoint / "progress.pt", weights_only=False)["seconds"]) \
            if (run.checkpoint / "progress.pt").is_file() else 0.0
        trainer.resume(run.checkpoint)
    val = validation_tiles(open_tiles(cfg.data, val=True), cfg.data, k, model.latent_factor, t.seed)

    def checkpoint() -> None:
        trainer.save(run.checkpoint)
        torch.save({"seconds": run.seconds}, run.checkpoint / "progress.pt")

    window: list[dict[str, float]] = []
    while trainer.step < t.steps and not run.out_of_time():
        window.append(trainer.train_step(sampler.batch(trainer.step, t.batch_size)))
        step = trainer.step
        if run.due(step, t.log_every):
            run.log({"step": step, **_mean_logs(window)})
            window = []
        if run.due(step, t.checkpoint_every):
            checkpoint()
        if run.due(step, t.validate_every) and step < t.steps:
            run.log({"step": step, "validation": validate(trainer, val, cfg.sampling, k)})
    checkpoint()
    metrics = validate(trainer, val, cfg.sampling, k)
    run.log({"step": trainer.step, "final": True, "validation": metrics})
    trainer.ema.swap()
    try:
        model.save_pretrained(run.out)
    finally:
        trainer.ema.swap()
    gsd = cfg.data.gsd_m or ((dataset_gsd(tiles) or 0) / cfg.data.scale or None)
    card = ModelCard(
        name=cfg.name, refiner="idgbr", task=cfg.card.task, description=cfg.card.description,
        classes=list(tiles.classes), background_class=0, building_classes=cfg.card.building_classes,
        gsd_m=round(gsd, 4) if gsd else None, tile_size=cfg.card.tile_size, overlap=cfg.card.overlap,
        normalization={"mean": [0.5] * 3, "std": [0.5] * 3},
        training={"preset": cfg.model.preset, "dataset": cfg.data.dataset or cfg.data.images, "split": cfg.data.split,
                  "coarse": cfg.data.coarse or cfg.data.recipes, "crop": cfg.data.crop, "scale": cfg.data.scale,
                  "batch_size": t.batch_size, "lr": t.lr, "steps": trainer.step, "seconds": round(run.seconds),
                  "machine": run.machine(), "sampling": dict(cfg.sampling),
                  **({"synthetic": tiles.describe()} if isinstance(tiles, MixedDataset) else {})},
        metrics={"validation": metrics, "validation_tiles": [v.tile_id for v in val],
                 "validation_split": cfg.data.val_split})
    card.save(run.out)
    (run.out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    return TrainResult(run.out, trainer.step, run.seconds, metrics)


@torch.no_grad()
def validate(trainer: RefinerTrainer, tiles: list[ValTile], sampling: dict[str, Any],
             num_classes: int) -> dict[str, Any]:
    """Refine the validation tiles with the EMA weights; metrics of the refined maps and of
    their coarse inputs (boundary F@3, WFm band3, mIoU), vs ground truth."""
    from ..evaluate import evaluate_pairs
    from .sampling import SamplingOptions, sample

    if not tiles:
        return {}
    model = trainer.model
    options = SamplingOptions(**sampling)
    trainer.ema.swap()
    model.eval()
    try:
        preds = []
        for tile in tiles:
            b = to_tensors(tile.image[None], tile.gt[None], tile.coarse[None])
            probs = sample(model, b["image"].to(trainer.device), b["coarse"].to(trainer.device), options).probs
            preds.append(probs.argmax(1)[0].cpu().numpy().astype(np.uint8))
    finally:
        trainer.ema.swap()
        model.train()
        for frozen in (model.vae, model.label_embed, model.cond_encoder):
            frozen.eval()
    refined = evaluate_pairs([(p, v.gt, v.coarse) for p, v in zip(preds, tiles)], num_classes)
    coarse = evaluate_pairs([(v.coarse, v.gt) for v in tiles], num_classes)
    out: dict[str, Any] = {"nfe_per_tile": options.nfe_per_tile, "tiles": len(tiles)}
    for prefix, scores in (("", refined), ("coarse_", coarse)):
        out |= {f"{prefix}boundary_f3": scores["boundary_f"]["3"], f"{prefix}wfm_band3": scores["wfm_band3"],
                f"{prefix}miou": scores["miou"]}
    return out


RUNNERS: dict[str, Callable[..., TrainResult]] = {
    "label-embed": train_label_embed, "vae": train_vae, "refiner": train_refiner}


def describe(result: TrainResult) -> str:
    return f"trained {result.steps} steps in {result.seconds:.0f} s → {result.out}" + (
        f" ({json.dumps(result.metrics)})" if result.metrics else "")


