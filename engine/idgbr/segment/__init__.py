"""The coarse segmentor stage: SegFormer / DINOv2 models that give the coarse semantics the
refiners then clean up, their training (`idgbr train coarse`), k-fold cross-prediction
(`idgbr predict coarse --kfold`) and the refiner training-data builder (`idgbr data build`).

    from idgbr.segment import load_segmentor
    seg = load_segmentor("coarse-buildings", device="cpu")
    probs = seg.predict(tiles)        # (B, 3, H, W) float32 in [0, 1] → (B, K, H, W)

The torch-based parts are imported on first use, so the command line starts fast.
"""
from .config import CoarseConfig

_LAZY = {"COARSE_TASK": "segmentor", "Segmentor": "segmentor", "load_segmentor": "segmentor"}
__all__ = ["CoarseConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
