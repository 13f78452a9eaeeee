"""Coarse-mask synthesis: degrade a class map the way real coarse layers are wrong, so refiners
can be trained and benchmarked without a second, worse labelling of every tile.

    from idgbr.coarsen import coarsen, list_recipes
    coarse = coarsen(labels, "buildings-osm", seed, num_classes=2)

Each perturbation is a function `(labels, rng, num_classes, **params) -> labels` on a 2-D
uint8 class map; a recipe is a named sequence of them, each applied with a probability. All
randomness comes from the numpy Generator passed in, so a (seed, tile) pair always gives the
same coarse map. Pixels equal to `ignore` are filled from their neighbours while perturbing
and put back afterwards: they never gain a class, and no class is ever moved onto them.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from scipy import ndimage

from .errors import InputError

Perturbation = Callable[..., np.ndarray]


# ---------------------------------------------------------------------------------------------
# helpers


def agreement_iou(labels: np.ndarray, coarse: np.ndarray, num_classes: int) -> float:
    """Mean IoU of `coarse` against `labels` over the classes present in `labels` (only the
    foreground class of a binary map, whose background IoU says little). NaN when none."""
    conf = _confusion(labels, coarse, num_classes)
    return _mean_iou(conf, _scored_classes(conf, num_classes))


def _confusion(labels: np.ndarray, coarse: np.ndarray, k: int) -> np.ndarray:
    idx = labels.astype(np.int64).ravel() * k + coarse.astype(np.int64).ravel()
    return np.bincount(idx, minlength=k * k).reshape(k, k)


def _scored_classes(conf: np.ndarray, k: int) -> np.ndarray:
    present = np.flatnonzero(conf.sum(1))
    return present[present > 0] if k == 2 else present


def _mean_iou(conf: np.ndarray, classes: np.ndarray) -> float:
    if classes.size == 0:
        return float("nan")
    tp = conf[classes, classes]
    union = conf[classes, :].sum(1) + conf[:, classes].sum(0) - tp
    return float(np.mean(tp / union))


def _fill_from_others(labels: np.ndarray, remove: np.ndarray) -> np.ndarray:
    """`labels` with the pixels of `remove` taken from the nearest pixel outside it."""
    if not remove.any() or remove.all():
        return labels.copy()
    idx = ndimage.distance_transform_edt(remove, return_distances=False, return_indices=True)
    return labels[idx[0], idx[1]]


def _foreground(labels: np.ndarray, num_classes: int, classes: Sequence[int] | None) -> list[int]:
    """The classes an object-level perturbation acts on: given, or all but background (0)."""
    wanted = range(1, num_classes) if classes is None else classes
    present = set(np.unique(labels).tolist())
    return [c for c in wanted if c in present]


def _ellipse(shape: tuple[int, int], centre: tuple[int, int], axes: tuple[float, float],
             angle: float) -> tuple[tuple[slice, slice], np.ndarray]:
    """A rotated filled ellipse as (window slices, boolean mask of that window)."""
    r = int(np.ceil(max(axes)))
    y0, y1 = max(centre[0] - r, 0), min(centre[0] + r + 1, shape[0])
    x0, x1 = max(centre[1] - r, 0), min(centre[1] + r + 1, shape[1])
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dy, dx = yy - centre[0], xx - centre[1]
    c, s = np.cos(angle), np.sin(angle)
    u, v = (c * dx + s * dy) / axes[0], (-s * dx + c * dy) / axes[1]
    return (slice(y0, y1), slice(x0, x1)), u * u + v * v <= 1.0


def _random_pixel(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    flat = np.flatnonzero(mask)
    i = flat[rng.integers(flat.size)]
    return int(i // mask.shape[1]), int(i % mask.shape[1])


def _anywhere(shape: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
    y, x = rng.integers((0, 0), shape)
    return int(y), int(x)


# ---------------------------------------------------------------------------------------------
# perturbations


def morph_to_iou(labels: np.ndarray, rng: np.random.Generator, num_classes: int,
                 band: tuple[float, float] = (0.75, 0.9), max_radius: float = 0.025,
                 max_steps: int = 300) -> np.ndarray:
    """Dilate or erode one class inside random discs on its boundary until the map's IoU
    against the input falls to a target drawn from `band` (as CascadePSP and SegRefiner make
    their training inputs). Steps that would go below the band are discarded. The largest
    dilation radius is a share of the tile side (at least 2 px)."""
    k = num_classes
    out = labels.copy()
    edges = np.zeros(labels.shape, bool)
    edges[:-1] |= labels[:-1] != labels[1:]
    edges[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    conf = _confusion(labels, out, k)
    scored = _scored_classes(conf, k)
    if not edges.any() or scored.size == 0:
        return out
    target = rng.uniform(*band)
    side = min(labels.shape)
    for _ in range(max_steps):
        if _mean_iou(conf, scored) <= target:
            break
        cy, cx = _random_pixel(edges, rng)
        disc_r = int(rng.integers(max(side // 16, 4), max(side // 5, 8) + 1))
        r = int(rng.integers(1, max(round(max_radius * side), 2) + 1))
        m = disc_r + r
        y0, y1, x0, x1 = max(cy - m, 0), min(cy + m + 1, out.shape[0]), max(cx - m, 0), min(cx + m + 1, out.shape[1])
        crop = out[y0:y1, x0:x1]
        yy, xx = np.ogrid[y0 - cy:y1 - cy, x0 - cx:x1 - cx]
        disc = yy * yy + xx * xx <= disc_r * disc_r
        new = _grow_or_shrink(crop, int(crop[cy - y0, cx - x0]), r, bool(rng.random() < 0.5))
        new = np.where(disc, new, crop)
        gt = labels[y0:y1, x0:x1]
        step = conf - _confusion(gt, crop, k) + _confusion(gt, new, k)
        if _mean_iou(step, scored) >= band[0]:
            out[y0:y1, x0:x1] = new
            conf = step
    return out


def _grow_or_shrink(crop: np.ndarray, c: int, r: int, grow: bool) -> np.ndarray:
    """Class `c` dilated (grow) or eroded by `r` px; eroded pixels take the nearest other class."""
    is_c = crop == c
    if is_c.all():
        return crop
    if grow:
        return np.where(ndimage.distance_transform_edt(~is_c) <= r, np.uint8(c), crop)
    dist, idx = ndimage.distance_transform_edt(is_c, return_indices=True)
    return np.where(is_c & (dist <= r), crop[idx[0], idx[1]], crop)


def grow_shrink(labels: np.ndarray, rng: np.random.Generator, num_classes: int,
                classes: Sequence[int] | None = None, radius: tuple[int, int] = (1, 2)) -> np.ndarray:
    """Widen or narrow each class of `classes` everywhere by a radius drawn from `radius` (px):
    the fixed rendering width of centreline-drawn roads or rivers, too wide or too narrow."""
    out = labels
    for c in _foreground(labels, num_classes, classes):
        r = int(rng.integers(radius[0], radius[1] + 1))
        out = _grow_or_shrink(out, c, r, bool(rng.random() < 0.5))
    return out


def blocky(labels: np.ndarray, rng: np.random.Generator, num_classes: int,
           factors: Sequence[int] = (4, 8, 16)) -> np.ndarray:
    """Majority-downsample by a factor from `factors` on a randomly shifted grid, then
    upsample by repetition: the stair-stepped edges of a low-resolution classification."""
    f = int(rng.choice(factors))
    oy, ox = (int(v) for v in rng.integers(0, f, 2))
    h, w = labels.shape
    hb, wb = -(-(h + oy) // f), -(-(w + ox) // f)
    padded = np.pad(labels, ((oy, hb * f - h - oy), (ox, wb * f - w - ox)), mode="edge")
    block = (np.arange(hb * f)[:, None] // f) * wb + np.arange(wb * f)[None, :] // f
    counts = np.bincount((block * num_classes + padded).ravel(), minlength=hb * wb * num_classes)
    mode = counts.reshape(hb, wb, num_classes).argmax(-1).astype(np.uint8)
    return np.repeat(np.repeat(mode, f, 0), f, 1)[oy:oy + h, ox:ox + w]


def polygons(labels: np.ndarray, rng: np.random.Generator, num_classes: int,
             classes: Sequence[int] | None = None, tolerance: tuple[float, float] = (0.5, 3.0),
             vertex_jitter: tuple[float, float] = (0.3, 1.2), object_shift: float = 0.0,
             drop: float = 0.0) -> np.ndarray:
    """Redraw each object of `classes` as a hand-digitised polygon: simplified with a random
    per-object tolerance (px), vertices jittered (shared vertices move together), optionally
    shifted per object (std px) and dropped with probability `drop` (OSM's missing buildings)."""
    out = labels.copy()
    for c in _foreground(labels, num_classes, classes):
        mask = out == c
        if mask.all():
            continue  # the class covers the whole tile: nothing to redraw against
        geoms = np.array([shapely.geometry.shape(g) for g, _ in
                          rasterio.features.shapes(mask.view(np.uint8), mask=mask, connectivity=4)])
        geoms = geoms[rng.random(geoms.size) >= drop]
        base = _fill_from_others(out, mask)
        if geoms.size:
            geoms = shapely.simplify(geoms, rng.uniform(*tolerance, geoms.size), preserve_topology=True)
            coords, owner = shapely.get_coordinates(geoms, return_index=True)
            uniq, inv = np.unique(coords, axis=0, return_inverse=True)
            noise = rng.normal(0.0, rng.uniform(*vertex_jitter), uniq.shape)[inv.ravel()]
            offset = rng.normal(0.0, object_shift, (geoms.size, 2))[owner] if object_shift > 0 else 0.0
            # vertices on the tile edge stay on it, or the class would retreat from the edge
            on_edge = (coords == 0) | (coords == np.array(labels.shape[::-1]))
            geoms = shapely.set_coordinates(geoms, coords + np.where(on_edge, 0.0, noise + offset))
            base = rasterio.features.rasterize([(g, c) for g in geoms if not g.is_empty], out=base,
                                               transform=Affine.identity())
        out = base
    return out


def shift(labels: np.ndarray, rng: np.random.Generator, num_classes: int, max_px: float = 3,
          min_px: float | None = None) -> np.ndarray:
    """Misregister the whole map: by 1..max_px pixels per axis, or, with `min_px`, by an offset
    of length min_px..max_px in a random direction (edges repeated into the gap)."""
    if min_px is None:
        max_px = int(max_px)
        dy = dx = 0
        while dy == 0 and dx == 0:
            dy, dx = (int(v) for v in rng.integers(-max_px, max_px + 1, 2))
    else:
        length, angle = rng.uniform(min_px, max_px), rng.uniform(0, 2 * np.pi)
        dy, dx = int(round(length * np.sin(angle))), int(round(length * np.cos(angle)))
        if dy == 0 and dx == 0:
            dx = 1
        max_px = max(abs(dy), abs(dx))
    h, w = labels.shape
    padded = np.pad(labels, max_px, mode="edge")
    return padded[max_px - dy:max_px - dy + h, max_px - dx:max_px - dx + w].copy()


def blobs(labels: np.ndarray, rng: np.random.Generator, num_classes: int, count: tuple[int, int] = (1, 4),
          radius: tuple[float, float] = (0.02, 0.08), holes: float = 0.5) -> np.ndarray:
    """Random elliptic holes in objects (filled from their surroundings) and spurious blobs
    of another class, like the speckle of a pixel classifier. Radii are shares of the tile side."""
    out = labels.copy()
    side = min(labels.shape)
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        axes = tuple(float(a) for a in rng.uniform(*radius, 2) * side + 1.0)
        objects = out != 0 if num_classes == 2 else np.ones(out.shape, bool)
        hole = rng.random() < holes and objects.any()
        centre = _random_pixel(objects, rng) if hole else _anywhere(out.shape, rng)
        win, shape = _ellipse(out.shape, centre, axes, rng.uniform(0, np.pi))
        here = int(out[centre])
        if hole:
            remove = np.zeros(out.shape, bool)
            remove[win] = shape & (out[win] == here)
            out = _fill_from_others(out, remove)
        else:
            other = [c for c in range(num_classes) if c != here]
            out[win][shape] = rng.choice(other)
    return out


def drop_segments(labels: np.ndarray, rng: np.random.Generator, num_classes: int,
                  classes: Sequence[int] | None = None, fraction: tuple[float, float] = (0.05, 0.2),
                  radius: tuple[float, float] = (0.02, 0.06), max_cuts: int = 40) -> np.ndarray:
    """Cut pieces out of thin structures (a road map's missed segments): discs centred on the
    class remove it until a share drawn from `fraction` of its pixels is gone."""
    out = labels.copy()
    side = min(labels.shape)
    for c in _foreground(labels, num_classes, classes):
        mask = out == c
        goal = rng.uniform(*fraction) * mask.sum()
        remove = np.zeros(mask.shape, bool)
        for _ in range(max_cuts):
            if remove.sum() >= goal:
                break
            r = rng.uniform(*radius) * side + 1.0
            win, disc = _ellipse(mask.shape, _random_pixel(mask & ~remove, rng), (r, r), 0.0)
            remove[win] |= disc & mask[win]
        out = _fill_from_others(out, remove)
    return out


def class_swap(labels: np.ndarray, rng: np.random.Generator, num_classes: int, count: tuple[int, int] = (1, 2),
               radius: tuple[float, float] = (0.1, 0.25)) -> np.ndarray:
    """Relabel one class as another inside random ellipses: a classifier's confusions
    (vegetation called ground, a roof called clutter), which no boundary refinement repairs."""
    out = labels.copy()
    side = min(labels.shape)
    present = np.unique(labels)
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        centre = _anywhere(out.shape, rng)
        a = int(out[centre])
        others = [int(c) for c in present if c != a] if present.size > 1 else []
        if not others or rng.random() < 0.3:
            others = [c for c in range(num_classes) if c != a]
        win, shape = _ellipse(out.shape, centre, tuple(rng.uniform(*radius, 2) * side + 1.0), rng.uniform(0, np.pi))
        sub = out[win]
        sub[shape & (sub == a)] = rng.choice(others)
    return out


# ---------------------------------------------------------------------------------------------
# recipes


@dataclass(frozen=True)
class Step:
    """One perturbation of a recipe, applied with probability `p`. The parameters named in
    `ground` are lengths in pixels at the recipe's `gsd_m`: they are rescaled to the tile's GSD,
    so an error of "1 m" stays 1 m on a 0.3 m tile."""

    op: Perturbation
    params: dict[str, Any] = field(default_factory=dict)
    p: float = 1.0
    ground: tuple[str, ...] = ()

    def scaled(self, factor: float) -> dict[str, Any]:
        if factor == 1.0 or not self.ground:
            return self.params
        def scale(v: Any) -> Any:
            return tuple(x * factor for x in v) if isinstance(v, tuple) else v * factor
        return {k: scale(v) if k in self.ground else v for k, v in self.params.items()}


@dataclass(frozen=True)
class Recipe:
    """A named sequence of perturbations. `iou_band` is the range of IoU against the labels
    the recipe is made for (measured means on the shared datasets sit inside it)."""

    name: str
    description: str
    steps: tuple[Step, ...]
    iou_band: tuple[float, float]
    gsd_m: float | None = None  # the GSD its `ground` parameters are given at; None: pixels only

    def apply(self, labels: np.ndarray, rng: np.random.Generator, num_classes: int,
              gsd_m: float | None = None) -> np.ndarray:
        factor = self.gsd_m / gsd_m if self.gsd_m and gsd_m else 1.0
        out = labels
        for step in self.steps:
            if step.p >= 1.0 or rng.random() < step.p:
                out = step.op(out, rng, num_classes, **step.scaled(factor))
        return out


def _one_of(labels: np.ndarray, rng: np.random.Generator, num_classes: int, names: Sequence[str]) -> np.ndarray:
    return RECIPES[str(rng.choice(names))].apply(labels, rng, num_classes)


_POLYGON_LENGTHS = ("tolerance", "vertex_jitter", "object_shift")
_SHIFT_LENGTHS = ("max_px", "min_px")


_RECIPES = (
    Recipe("buildings-osm", "OSM-style outlines: simplified, jittered polygons, some objects offset "
           "or missing, the whole layer misregistered by 1-3 px",
           (Step(polygons, {"tolerance": (1.0, 4.0), "vertex_jitter": (0.5, 2.0), "object_shift": 2.0,
                            "drop": 0.05}),
            Step(shift, {"max_px": 3}, p=0.7)),
           (0.6, 0.97)),
    Recipe("blocky", "a low-resolution classification: majority-downsampled by 4, 8 or 16 and "
           "upsampled, stair-stepped edges",
           (Step(blocky, {"factors": (4, 8, 16)}),),
           (0.6, 0.98)),
    Recipe("cascadepsp", "CascadePSP/SegRefiner training inputs: random dilation/erosion on "
           "boundary regions to an IoU of 0.75-0.9, sometimes a few holes and blobs",
           (Step(morph_to_iou, {"band": (0.75, 0.9)}),
            Step(blobs, {"count": (1, 3), "radius": (0.01, 0.04)}, p=0.3)),
           (0.7, 0.9)),
    Recipe("landcover", "a pixel classifier at coarser resolution: blocky by 4 or 8, eroded/dilated "
           "boundaries, a confused region and some speckle",
           (Step(blocky, {"factors": (4, 8)}, p=0.5),
            Step(morph_to_iou, {"band": (0.7, 0.9)}),
            Step(class_swap, {"count": (1, 2), "radius": (0.05, 0.15)}, p=0.5),
            Step(blobs, {"count": (1, 4), "radius": (0.01, 0.05)}, p=0.5)),
           (0.55, 0.9)),
    Recipe("roads", "centreline-rendered roads: width 1-2 px too wide or narrow, segments missing, "
           "misregistered by 1-3 px",
           (Step(grow_shrink, {"radius": (1, 2)}),
            Step(drop_segments, {"fraction": (0.05, 0.2)}, p=0.7),
            Step(shift, {"max_px": 3}, p=0.7)),
           (0.6, 0.95)),
    Recipe("buildings-old", "an old building layer: generalised outlines (0.2-0.5 m), jittered vertices, "
           "single buildings offset, the whole layer misregistered by 0.5-1 m; sizes in ground metres",
           (Step(polygons, {"tolerance": (3.0, 7.0), "vertex_jitter": (0.7, 2.0), "object_shift": 2.0,
                            "drop": 0.03}, ground=_POLYGON_LENGTHS),
            Step(shift, {"min_px": 7.0, "max_px": 13.0}, ground=_SHIFT_LENGTHS)),
           (0.5, 0.9), gsd_m=0.075),
    Recipe("fields-old", "a hand-digitised parcel layer: outlines generalised by 1-3 m, vertices off by "
           "0.5-1.5 m, the whole layer misregistered by 2-5 m; sizes in ground metres",
           (Step(polygons, {"tolerance": (1.0, 3.0), "vertex_jitter": (0.5, 1.5), "object_shift": 1.0},
                 ground=_POLYGON_LENGTHS),
            Step(shift, {"min_px": 2.0, "max_px": 5.0}, ground=_SHIFT_LENGTHS)),
           (0.7, 0.97), gsd_m=1.0),
)
_RECIPES += (Recipe("mixed", "one of the other recipes, drawn per tile (for training on varied errors)",
                    (Step(_one_of, {"names": tuple(r.name for r in _RECIPES if r.gsd_m is None)}),),
                    (0.6, 0.95)),)
RECIPES: dict[str, Recipe] = {r.name: r for r in _RECIPES}


def list_recipes() -> dict[str, str]:
    """Recipe names and what each imitates."""
    return {name: r.description for name, r in RECIPES.items()}


def tile_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of one tile: depends on the run's seed and the tile's name only, so a
    tile's coarse map does not change with the order or the set of tiles processed."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest, "little")])


def coarsen(labels: np.ndarray, recipe: str | Recipe, rng: np.random.Generator | int,
            num_classes: int | None = None, ignore: int | None = None, gsd_m: float | None = None) -> np.ndarray:
    """A coarse version (uint8) of the class map `labels` (2-D, class ids 0..num_classes-1,
    `ignore` where unlabelled). num_classes defaults to the largest id + 1 (at least 2).
    `gsd_m` (the tile's ground sampling distance) rescales recipes whose errors are given in
    ground metres (`buildings-old`, `fields-old`); without it they act at their nominal GSD."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be a 2-D integer class map, got {labels.dtype} {labels.shape}")
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise InputError(f"unknown coarsening recipe {recipe!r} (known: {', '.join(RECIPES)})")
        recipe = RECIPES[recipe]
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    unlabelled = labels == ignore if ignore is not None else np.zeros(labels.shape, bool)
    ids = labels[~unlabelled]
    top = int(ids.max()) if ids.size else 0
    k = max(top + 1, 2) if num_classes is None else int(num_classes)
    if ids.size and (int(ids.min()) < 0 or top >= k):
        raise InputError(f"labels hold class ids {int(ids.min())}..{top}, outside 0..{k - 1}")
    if not 2 <= k <= 255 or (ignore is not None and not k <= ignore <= 255):
        raise InputError(f"need 2..255 classes and an ignore value in {k}..255 (got {k} classes, ignore={ignore})")
    if unlabelled.all():
        return labels.astype(np.uint8)
    work = _fill_from_others(labels.astype(np.uint8), unlabelled)
    out = recipe.apply(work, rng, k, gsd_m)
    if ignore is not None:
        out[unlabelled] = ignore
    return out
