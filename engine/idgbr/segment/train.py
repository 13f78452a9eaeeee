"""Train a coarse segmentor: augmented random crops, cross-entropy (+ optional Dice), AdamW with
warmup and polynomial decay, validation mIoU / boundary F@3 / WFm on whole validation tiles,
a resumable checkpoint, and the best model (by validation mIoU) saved as a model folder.

The schedule decays over whichever runs out first, `steps` or `max_minutes`, so a
time-boxed run on a slow machine still ends with a low learning rate instead of mid-climb.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..datasets import TileDataset
from ..device import resolve_device
from ..errors import InputError
from ..evaluate import evaluate_pairs
from ..models.card import ModelCard
from ..synth.mix import MixedDataset, mix_train
from .augment import PAD_LABEL, Augment
from .config import CoarseConfig
from .data import resolve_datasets
from .model import IMAGENET_NORM, build_network
from .segmentor import COARSE_TASK, Segmentor

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
LOG_FILE = "log.jsonl"


@dataclass
class TrainResult:
    out: Path
    steps: int
    seconds: float
    metrics: dict[str, Any]  # of the saved (best) model on the validation tiles; {} without val
    losses: list[float]  # mean training loss of each logging interval


def train_coarse(cfg: CoarseConfig, train_set: TileDataset | None = None, val_set: TileDataset | None = None,
                 resume: bool = False, report: Callable[[str], None] = log.info) -> TrainResult:
    """Train as `cfg` says and write the model folder `cfg.out`. `train_set`/`val_set`
    replace the config's data (k-fold training passes subsets, already mixed with the
    config's synthetic pairs)."""
    if train_set is None:
        train_set, val_set = resolve_datasets(cfg.data)
        train_set = mix_train(train_set, cfg.data.synthetic, cfg.data.ratio)
    if len(train_set) == 0:
        raise InputError("no training tiles")
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device)
    torch.manual_seed(t.seed)
    rng = np.random.default_rng(t.seed)
    classes = train_set.classes
    net = build_network(cfg.model.arch, len(classes), cfg.model.variant, cfg.model.pretrained,
                        cfg.model.overrides).to(device)
    card = _card(cfg, train_set)
    segmentor = Segmentor(net, card, device)
    optim = torch.optim.AdamW(net.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    augment = Augment(crop=t.crop) if t.augment else Augment.crops_only(t.crop)
    work = cfg.work_path
    work.mkdir(parents=True, exist_ok=True)
    step, spent, spent_cpu, best, drawn = 0, 0.0, 0.0, {}, 0  # drawn: synthetic samples so far
    if resume and (work / CHECKPOINT).is_file():
        state = torch.load(work / CHECKPOINT, map_location=device, weights_only=False)
        net.load_state_dict(state["net"])
        optim.load_state_dict(state["optim"])
        step, spent, spent_cpu, best = state["step"], state["seconds"], state.get("cpu_seconds", 0.0), state["best"]
        drawn = state.get("synthetic_drawn", 0)
        rng = np.random.default_rng([t.seed, step])
        report(f"resumed at step {step} ({spent:.0f} s spent)")
    limit_s = t.max_minutes * 60 if t.max_minutes else float("inf")
    started = time.perf_counter() - spent
    cpu_started = time.process_time() - spent_cpu
    order: list[int] = []
    losses, window = [], []
    net.train()
    while step < t.steps and time.perf_counter() - started < limit_s:
        if len(order) < t.batch_size:
            order += rng.permutation(len(train_set)).tolist()
        batch, order = order[:t.batch_size], order[t.batch_size:]
        if isinstance(train_set, MixedDataset):
            drawn += sum(map(train_set.is_synthetic, batch))
        x, y = _batch(train_set, batch, augment, rng, cfg.data.ignore_index)
        progress = max(step / t.steps, (time.perf_counter() - started) / limit_s)
        for group in optim.param_groups:
            group["lr"] = _lr(t.lr, step, t.warmup_steps, progress)
        logits = net(segmentor.normalize(x.to(device)))
        loss = _loss(logits, y.to(device), t.dice_weight)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        step += 1
        window.append(float(loss.detach()))
        last = step >= t.steps or time.perf_counter() - started >= limit_s
        if not (step % t.log_every == 0 or step % t.val_every == 0 or last):
            continue
        losses.append(float(np.mean(window)))
        window = []
        entry: dict[str, Any] = {"step": step, "seconds": round(time.perf_counter() - started, 1),
                                 "loss": round(losses[-1], 4), "lr": optim.param_groups[0]["lr"]}
        if (step % t.val_every == 0 or last) and val_set is not None and len(val_set):
            entry["val"] = metrics = validate(segmentor, val_set, cfg.data.ignore_index, t.val_max_tiles)
            net.train()
            if not best or (metrics["miou"] or 0.0) >= (best["miou"] or 0.0):
                best = {**metrics, "step": step}
                _save(segmentor, card, Path(cfg.out), best, _training_info(
                    cfg, train_set, val_set, step, entry["seconds"], time.process_time() - cpu_started, device,
                    drawn))
        _log(work, entry, report)
        if step % t.val_every == 0 or last:
            torch.save({"net": net.state_dict(), "optim": optim.state_dict(), "step": step,
                        "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started,
                        "best": best, "synthetic_drawn": drawn}, work / CHECKPOINT)
    seconds = time.perf_counter() - started
    if not best:
        _save(segmentor, card, Path(cfg.out), {},
              _training_info(cfg, train_set, val_set, step, seconds, time.process_time() - cpu_started, device,
                             drawn))
    return TrainResult(Path(cfg.out), step, seconds, best, losses)


@torch.inference_mode()
def validate(segmentor: Segmentor, val_set: TileDataset, ignore_index: int | None = None,
             max_tiles: int | None = None) -> dict[str, Any]:
    """mIoU, boundary F@3 and WFm (band 3) over whole validation tiles, one tile at a time."""
    segmentor.net.eval()
    n = len(val_set) if max_tiles is None else min(max_tiles, len(val_set))

    def pairs():
        for i in range(n):
            image, label, _ = val_set[i]
            yield segmentor.predict_labels(image), label

    r = evaluate_pairs(pairs(), segmentor.num_classes, ignore_index)
    return {"tiles": n, "miou": r["miou"], "boundary_f3": r["boundary_f"]["3"], "wfm_band3": r["wfm_band3"],
            "oa": r["oa"], "per_class_iou": [c["iou"] for c in r["per_class"]]}


def _batch(ds: TileDataset, indices: list[int], augment: Augment, rng: np.random.Generator,
           ignore_index: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for i in indices:
        image, label, _ = ds[i]
        if ignore_index is not None and ignore_index != PAD_LABEL:
            label = np.where(label == ignore_index, PAD_LABEL, label).astype(np.uint8)
        img, lbl = augment(image, label, rng)
        images.append(img)
        labels.append(lbl)
    return torch.stack(images), torch.stack(labels)


def _lr(base: float, step: int, warmup: int, progress: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * max(1.0 - progress, 0.0) ** 0.9


def _loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float) -> torch.Tensor:
    loss = F.cross_entropy(logits, target, ignore_index=PAD_LABEL)
    if dice_weight > 0:
        loss = loss + dice_weight * _dice(logits, target)
    return loss


def _dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − mean soft Dice over the classes, labelled pixels only."""
    known = (target != PAD_LABEL).unsqueeze(1)
    probs = torch.softmax(logits, 1) * known
    onehot = F.one_hot(target.clamp(max=logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2) * known
    inter = (probs * onehot).sum((0, 2, 3))
    total = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1.0 - ((2 * inter + 1.0) / (total + 1.0)).mean()


def _card(cfg: CoarseConfig, train_set: TileDataset) -> ModelCard:
    classes = train_set.classes
    names = [c.name for c in classes]
    gsds = [t.gsd_m for t in train_set.tiles if t.gsd_m]
    return ModelCard(
        name=cfg.name, refiner=cfg.model.arch, task=COARSE_TASK,
        description=cfg.description or f"coarse {cfg.model.arch} segmentor trained on {train_set.name}",
        classes=classes, background_class=names.index("background") if "background" in names else None,
        building_classes=[c.id for c in classes if c.name == "building"],
        gsd_m=round(float(np.median(gsds)), 3) if gsds else None, tile_size=cfg.train.tile_size,
        overlap=cfg.train.overlap, normalization=dict(IMAGENET_NORM))


def _training_info(cfg: CoarseConfig, train_set: TileDataset, val_set: TileDataset | None, step: int,
                   seconds: float, cpu_seconds: float, device: str, synthetic_drawn: int) -> dict[str, Any]:
    info = {
        "data": train_set.name, "train_tiles": len(train_set), "val_tiles": len(val_set) if val_set else 0,
        "split": "place-based train/val of idgbr.datasets" if cfg.data.dataset else "given folders",
        "arch": cfg.model.arch, "variant": cfg.model.variant, "pretrained": cfg.model.pretrained,
        "steps": step, "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1), "crop": cfg.train.crop,
        "batch_size": cfg.train.batch_size,
        "lr": cfg.train.lr, "dice_weight": cfg.train.dice_weight, "machine": _machine(device),
    }
    if isinstance(train_set, MixedDataset):  # train_tiles counts the repeats; this says what they are
        info["synthetic"] = {**train_set.describe(), "samples_drawn": synthetic_drawn}
    return info


def _machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    return f"CPU {platform.machine()}, {torch.get_num_threads()} threads of {os.cpu_count()} cores " \
           f"(torch {torch.__version__})"


def _save(segmentor: Segmentor, card: ModelCard, folder: Path, metrics: dict[str, Any],
          training: dict[str, Any]) -> None:
    """Write the model folder through a sibling staging folder, so a reader never sees half of it."""
    card.metrics = {"val": metrics} if metrics else {}
    card.training = training
    stage = folder.with_name(f".{folder.name}.saving")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    net: nn.Module = segmentor.net
    net.save(stage)  # type: ignore[operator]
    card.save(stage)
    shutil.rmtree(folder, ignore_errors=True)
    stage.rename(folder)


def _log(work: Path, entry: dict[str, Any], report: Callable[[str], None]) -> None:
    with open(work / LOG_FILE, "a") as f:
        f.write(json.dumps(entry) + "\n")
    val = entry.get("val")
    extra = (f" · val mIoU {_fmt(val['miou'])} BF3 {_fmt(val['boundary_f3'])} WFm {_fmt(val['wfm_band3'])}"
             if val else "")
    report(f"step {entry['step']} · {entry['seconds']:.0f} s · loss {entry['loss']:.4f}{extra}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
