"""Segmentation and boundary metrics (numpy/scipy only), accumulated over whole datasets.

- `ConfusionMatrix`: per-class IoU/F1, mIoU, mF1, OA, kappa, fwIoU.
- `weighted_fmeasure`, `boundary_band`, `WFmBand`: Margolin's weighted F-measure and the IDGBR
  paper's "WFm (3px B)".
- `BoundaryMetrics`, `boundary_fscore`, `boundary_iou`: class-aware boundary F at a tolerance
  and Boundary IoU.
- `RepairPreservation`: refined-map mIoU where the coarse map was wrong / right.
"""
from .boundary import BoundaryMetrics, boundary_fscore, boundary_iou, mask_boundary
from .confusion import ConfusionMatrix, ConfusionScores, confusion_scores
from .repair import RepairPreservation
from .wfm import WFmBand, boundary_band, weighted_fmeasure

__all__ = [
    "BoundaryMetrics", "boundary_fscore", "boundary_iou", "mask_boundary",
    "ConfusionMatrix", "ConfusionScores", "confusion_scores",
    "RepairPreservation",
    "WFmBand", "boundary_band", "weighted_fmeasure",
]
