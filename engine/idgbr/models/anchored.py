"""The coarse-anchored refiners (`idgbr.anchored`) behind the refiner protocol.

Tiles whose coarse map has no boundary are returned as the coarse map without running the
network (most tiles of a large orthophoto are all background or all field interior).
Options: `steps` (diffusion steps, default the card's), `samples` (several give the
uncertainty), `seed` (with the tile's position in the run's grid it seeds the tile's noise, so a
diffusion run gives the same result in-process and on a cluster, whatever the blocks), `gate` (a
pixel leaves its coarse class only when the refined probability of its new class exceeds this;
0.5: no gate), `close_gate` (the same gate, only on tiles where the refined outlines stay
within CLOSE_PX of the coarse ones at almost every pixel: the layer was already close, as a
recent OSM layer is, and the model's doubtful edits there are mostly wrong; a layer that is off
by more keeps every edit. The model reads how far off the layer is from its own output, tile by
tile, so one default serves close and misregistered layers; see docs/anchored_refiner.md),
`precision` ("auto": bfloat16 on CPUs with native bf16 support — the same argmax
as float32 on the val tiles checked, 1.5× faster — else float32; "fp32"), `reach`
(pixels, at the model's GSD, that a boundary may move: at most the trained band, its default; a
short reach suits layers that are already close, e.g. recent OSM outlines, see
docs/anchored_refiner.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..device import resolve_device
from ..errors import InputError
from .base import NO_COARSE, TileBatch, one_hot
from .card import ModelCard
from .registry import register_refiner

OPTIONS = ("steps", "samples", "seed", "precision", "gate", "close_gate", "reach")
# a tile is "close" when under CLOSE_SHARE of its refined boundary pixels lie CLOSE_PX or more from
# the coarse boundary (picked on 120 buildings val tiles that the benchmark's 100 do not include)
CLOSE_PX, CLOSE_SHARE = 3, 0.05


@register_refiner("anchored")
class AnchoredRefiner:
    def __init__(self, card: ModelCard, folder: Path, device: str = "auto", **options: Any) -> None:
        from ..anchored.net import AnchoredRefinerNet

        if card.num_classes is None:
            raise InputError(f"model {card.name!r}: an anchored model card must list its classes")
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise InputError(f"unknown options {sorted(unknown)} for model {card.name!r} (known: {list(OPTIONS)})")
        chosen = {**card.training.get("sampling", {}), **{k: v for k, v in options.items() if v is not None}}
        self.card = card
        self.num_classes = card.num_classes
        self.device = resolve_device(device)
        self.net = AnchoredRefinerNet.from_pretrained(folder, use_safetensors=True).to(self.device).eval()
        if self.net.config.num_classes != card.num_classes:
            raise InputError(f"model {card.name!r}: card has {card.num_classes} classes, weights "
                             f"{self.net.config.num_classes}")
        self.diffusion = self.net.config.mode == "diffusion"
        self.steps = int(chosen.get("steps") or self.net.config.steps)
        self.samples = int(chosen.get("samples") or 1)
        self.seed = int(chosen.get("seed") or 0)
        self.gate = float(chosen.get("gate") or 0.5)
        self.close_gate = float(chosen.get("close_gate") or 0.5)
        for key, value in (("gate", self.gate), ("close_gate", self.close_gate)):
            if not 0.5 <= value < 1.0:
                raise InputError(f"model {card.name!r}: {key} must be in [0.5, 1), got {value}")
        trained = int(self.net.config.band_px)
        self.reach = trained if chosen.get("reach") is None else int(chosen["reach"])
        if not 1 <= self.reach <= trained:
            raise InputError(f"model {card.name!r}: reach must be 1..{trained} px (the trained band), got {self.reach}")
        precision = chosen.get("precision") or "auto"
        if precision not in ("auto", "fp32"):
            raise InputError(f"model {card.name!r}: precision must be auto or fp32, not {precision!r}")
        self.bf16 = precision == "auto" and self.device == "cpu" and _cpu_bf16()
        if not 1 <= self.steps <= self.net.config.steps or self.samples < 1:
            raise InputError(f"model {card.name!r}: steps must be 1..{self.net.config.steps} and samples ≥ 1 "
                             f"(got steps={self.steps}, samples={self.samples})")

    @property
    def nfe_per_tile(self) -> int:
        return self.steps * self.samples if self.diffusion else 1

    def describe(self) -> dict[str, Any]:
        mode = self.net.config.mode
        return {"mode": mode, "nfe_per_tile": self.nfe_per_tile, "device": self.device,
                "precision": "bf16" if self.bf16 else "fp32",
                **({"steps": self.steps, "samples": self.samples, "seed": self.seed} if self.diffusion else {}),
                **({"gate": self.gate} if self.gate > 0.5 else {}),
                **({"close_gate": self.close_gate} if self.close_gate > 0.5 else {}),
                **({"reach_px": self.reach} if self.reach < self.net.config.band_px else {})}

    def bind_classes(self, num_classes: int) -> None:
        self.card.check_classes(num_classes)

    def predict(self, batch: TileBatch) -> np.ndarray:
        return self._run(batch)[0]

    def predict_with_uncertainty(self, batch: TileBatch) -> tuple[np.ndarray, np.ndarray]:
        return self._run(batch)

    def _prior(self, coarse: np.ndarray) -> np.ndarray:
        """What the network outputs where it changes nothing: softmax of the coarse logits."""
        k, logit = self.num_classes, float(self.net.config.prior_logit)
        on = np.exp(logit) / (np.exp(logit) + k - 1)
        probs = one_hot(coarse, k)
        known = coarse != NO_COARSE
        probs.transpose(1, 0, 2, 3)[:, known] = np.where(probs.transpose(1, 0, 2, 3)[:, known] > 0.5, on,
                                                         (1 - on) / (k - 1))
        return probs

    def _run(self, batch: TileBatch) -> tuple[np.ndarray, np.ndarray]:
        probs = self._prior(batch.coarse)
        unc = np.zeros((len(batch),) + batch.coarse.shape[1:], np.float32)
        c = batch.coarse
        known = c != NO_COARSE
        changes = ((c[:, 1:] != c[:, :-1]) & known[:, 1:] & known[:, :-1]).any((1, 2)) | \
                  ((c[:, :, 1:] != c[:, :, :-1]) & known[:, :, 1:] & known[:, :, :-1]).any((1, 2))
        todo = np.flatnonzero(changes)
        origins = batch.origins if batch.origins is not None else np.stack([np.zeros(len(c), np.int64),
                                                                             np.arange(len(c))], 1)
        if todo.size:
            p, u = self._refine(batch.image[todo], c[todo], [tile_seed(self.seed, o) for o in origins[todo]])
            if max(self.gate, self.close_gate) > 0.5:  # doubtful changes fall back to the coarse class
                cc, refined = c[todo], p.argmax(1)
                gate = np.full(len(todo), self.gate)
                if self.close_gate > 0.5:
                    gate[close_tiles(refined, cc)] = max(self.gate, self.close_gate)
                doubtful = (refined != cc) & (p.max(1) < gate[:, None, None]) & (cc != NO_COARSE) & \
                           (gate[:, None, None] > 0.5)
                p = np.where(doubtful[:, None], probs[todo], p)
            probs[todo] = p
            if u is not None:
                unc[todo] = u
        return probs, unc

    def _refine(self, image: np.ndarray, coarse: np.ndarray, seeds: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
        """fp32 on CPU: one tile per network call, because fp32 kernels give a tile other numbers
        in the last bit depending on its batch size, which would make a cluster's blocks differ
        from the in-process run. bf16 CPU kernels did not (checked on val tiles, and by the
        cluster test), and batches of 4 are 5-10 % faster end to end there, so they stay."""
        from ..anchored.process import refine_arrays

        if self.device != "cpu" or self.bf16:
            return refine_arrays(self.net, image, coarse, self.steps, self.samples, seeds, self.bf16, self.reach)
        parts = [refine_arrays(self.net, image[i:i + 1], coarse[i:i + 1], self.steps, self.samples, seeds[i:i + 1],
                               self.bf16, self.reach) for i in range(len(coarse))]
        unc = None if parts[0][1] is None else np.concatenate([u for _, u in parts])
        return np.concatenate([p for p, _ in parts]), unc


def close_tiles(refined: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """(B,) bool: tiles whose refined boundary pixels lie under CLOSE_PX from the coarse
    boundary but for a share under CLOSE_SHARE (a tile without refined boundary is close)."""
    import torch

    from ..anchored.net import boundary_distance

    dist = boundary_distance(torch.from_numpy(coarse.astype(np.int64)), CLOSE_PX).numpy()
    edge = boundary_distance(torch.from_numpy(refined.astype(np.int64)), 0).numpy() == 0
    far = ((dist >= CLOSE_PX) & edge).sum((1, 2))
    return far < CLOSE_SHARE * np.maximum(edge.sum((1, 2)), 1)


def tile_seed(seed: int, origin: np.ndarray) -> int:
    """A noise seed for the tile at grid position `origin` (row, col) of a run seeded `seed`."""
    return int(np.random.SeedSequence([seed, *(int(v) for v in origin)]).generate_state(1, np.uint64)[0]) >> 1


def _cpu_bf16() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
