"""Pick the torch device, and say which one: users' first complaint about such tools is a GPU
silently left unused."""
from __future__ import annotations

import logging

from .errors import InputError

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> str:
    """'auto' → 'cuda' when torch sees a GPU, else 'cpu'; 'cuda' without a GPU is an error."""
    import torch

    if name not in ("auto", "cpu", "cuda") and not name.startswith("cuda:"):
        raise InputError(f"device must be auto, cpu or cuda, not {name!r}")
    has_cuda = torch.cuda.is_available()
    if name == "auto":
        name = "cuda" if has_cuda else "cpu"
        log.info("device: %s (%s)", name, torch.cuda.get_device_name(0) if has_cuda else "no CUDA GPU found")
    elif name.startswith("cuda") and not has_cuda:
        raise InputError("device 'cuda' asked for, but this torch build sees no CUDA GPU "
                         f"(torch {torch.__version__}); install a CUDA build or use --device cpu")
    return name
