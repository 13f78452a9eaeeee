"""Model weights are only ever read from safetensors files. A pickle (`.bin`, `.pt`, `.ckpt`)
can run arbitrary code while it is loaded, so a model folder that holds weights only in that
form is refused with a message instead of being loaded."""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def check_weights(folder: Path, what: str = "model") -> None:
    """Refuse a trained model's folder unless it holds safetensors weights; say why."""
    folder = Path(folder)
    files = [p for p in folder.rglob("*") if p.is_file()]
    if any(p.suffix == ".safetensors" for p in files):
        return
    pickles = sorted(str(p.relative_to(folder)) for p in files if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise InputError(f"{what} {folder} holds its weights as a pickle ({', '.join(pickles[:3])}), which can run "
                         "code when loaded: only safetensors weights are loaded. Save them as *.safetensors "
                         "(save_pretrained(..., safe_serialization=True) or safetensors.torch.save_file) first")
    raise InputError(f"{what} {folder} has no weights (no *.safetensors file): an unfinished training run "
                     "or an incomplete copy? Copy the whole model folder")
