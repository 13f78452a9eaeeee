"""The quality benchmark's before/after figure: image | ground truth | coarse | refined, zoomed
on one crop. The crop is where the coarse map is most wrong near true boundaries, chosen
before the refiner runs, so the picture shows what the refiner does where there is work to
do, not a crop picked because it did well there."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from ..models import ClassInfo

PANEL_PX = 256  # displayed side of each panel
NEAR_PX = 3  # "near a boundary": within this many pixels of a ground-truth class change
ALPHA = 0.45  # opacity of the class fill over the image


def boundary_errors(gt: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """Pixels the coarse map gets wrong within NEAR_PX of a ground-truth boundary."""
    edge = ndimage.maximum_filter(gt, 3) != ndimage.minimum_filter(gt, 3)
    near = ndimage.binary_dilation(edge, iterations=NEAR_PX)
    return near & (coarse != gt)


def pick_crop(maps: Sequence[tuple[np.ndarray, np.ndarray]], side: int) -> tuple[int, tuple[int, int, int]]:
    """(tile index, (top, left, side)) of the square window, at most `side` and inside its
    tile, holding the most boundary errors, over (gt, coarse) pairs."""
    best = (-1.0, 0, (0, 0, 0))
    for i, (gt, coarse) in enumerate(maps):
        s = min(side, *gt.shape)
        density = ndimage.uniform_filter(boundary_errors(gt, coarse).astype(np.float32), s, mode="constant")
        h0, w0 = s // 2, s // 2  # window centres that keep the window inside the tile
        inner = density[h0:gt.shape[0] - s + h0 + 1, w0:gt.shape[1] - s + w0 + 1]
        y, x = np.unravel_index(int(inner.argmax()), inner.shape)
        if inner[y, x] > best[0]:
            best = (float(inner[y, x]), i, (int(y), int(x), s))
    return best[1], best[2]


def overlay(image: np.ndarray, labels: np.ndarray, classes: Sequence[ClassInfo]) -> np.ndarray:
    """The image with every class but "background" filled in its colour, and all class
    boundaries drawn in the colour of the higher class id (objects keep their outline colour)."""
    lut = np.array([c.rgba()[:3] for c in classes], np.float32)
    fill = np.array([c.name != "background" for c in classes])[labels]
    out = image.astype(np.float32)
    out[fill] = (1 - ALPHA) * out[fill] + ALPHA * lut[labels[fill]]
    edge = ndimage.maximum_filter(labels, 3) != ndimage.minimum_filter(labels, 3)
    out[edge] = lut[ndimage.maximum_filter(labels, 3)[edge]]
    return out.astype(np.uint8)


def save_figure(path: Path, image: np.ndarray, panels: Sequence[tuple[str, np.ndarray | None]],
                classes: Sequence[ClassInfo], window: tuple[int, int, int]) -> None:
    """One row of titled panels cropped to window (top, left, side) and enlarged to PANEL_PX;
    a panel with labels None is the plain image. Saved as a 256-colour PNG to stay small."""
    top, left, side = window
    crop = (slice(top, top + side), slice(left, left + side))
    title_h, gap = 18, 6
    sheet = Image.new("RGB", (len(panels) * (PANEL_PX + gap) - gap, PANEL_PX + title_h), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (title, labels) in enumerate(panels):
        rgb = image[crop] if labels is None else overlay(image[crop], labels[crop], classes)
        x = k * (PANEL_PX + gap)
        sheet.paste(Image.fromarray(rgb).resize((PANEL_PX, PANEL_PX), Image.NEAREST), (x, title_h))
        draw.text((x + 2, 3), title, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
