"""The area of interest: a bounding box ("minx,miny,maxx,maxy", in the image's CRS or in
`aoi_crs`) or a polygon layer (its polygons, reprojected to the image CRS). It becomes a window
of the image grid, and a polygon AOI also masks what lies outside it. Every refusal says what
is wrong with the image's bounds and CRS at hand, so the user can correct the box."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import shapely
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform_bounds
from rasterio.windows import Window, bounds as window_bounds

from ..errors import InputError
from .layers import read_vector

Box = tuple[float, float, float, float]
# Pixel coordinates closer than this to a pixel edge count as on it (float noise of transforms).
EDGE_EPS = 1e-6


def parse_aoi(aoi: str | Path | Box | None, crs: CRS, transform, width: int, height: int,
              aoi_crs: str | None = None) -> tuple[Window, shapely.Geometry | None]:
    """The image window to refine, and the AOI polygon (None for a box or no AOI)."""
    full = Window(0, 0, width, height)
    if aoi is None:
        if aoi_crs is not None:
            raise InputError("--aoi-crs was given without an AOI box (--aoi minx,miny,maxx,maxy)")
        return full, None
    geom = None
    if isinstance(aoi, tuple) or (isinstance(aoi, str) and not Path(aoi.split("|")[0]).exists()
                                  and aoi.count(",") == 3):
        box = _box(aoi)
        if aoi_crs is not None:
            box = _reproject_box(box, aoi_crs, crs, aoi)
    else:
        if aoi_crs is not None:
            raise InputError(f"--aoi-crs applies to a box; the AOI layer {aoi} carries its own CRS")
        df = read_vector(aoi, "AOI layer")
        polys = df[df.geom_type.isin(["Polygon", "MultiPolygon"])]
        if len(polys) == 0:
            raise InputError(f"AOI layer {aoi} holds no polygons")
        geom = shapely.union_all(shapely.make_valid(np.asarray(polys.to_crs(crs).geometry.values)))
        box = tuple(shapely.bounds(geom))
    win = window_of(box, transform, width, height)
    if win is None:
        hint = ""
        if aoi_crs is None and not crs.is_geographic and _looks_like_lonlat(box):
            hint = "; the box looks like longitude/latitude: add --aoi-crs EPSG:4326"
        raise InputError(f"AOI {_shown(aoi)} lies outside the image, which covers "
                         f"{describe_bounds(window_bounds(full, transform), crs)}{hint}")
    return win, geom


def window_of(box: Box, transform, width: int, height: int) -> Window | None:
    """The smallest window of whole pixels that covers `box` (map coordinates), clipped to the
    raster; None when they do not overlap. A box smaller than a pixel still gets that pixel."""
    inv = ~transform
    xs, ys = zip(*(inv * (x, y) for x in (box[0], box[2]) for y in (box[1], box[3])))
    c0, c1 = math.floor(min(xs) + EDGE_EPS), math.ceil(max(xs) - EDGE_EPS)
    r0, r1 = math.floor(min(ys) + EDGE_EPS), math.ceil(max(ys) - EDGE_EPS)
    c1, r1 = max(c1, c0 + 1), max(r1, r0 + 1)
    c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, width), min(r1, height)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def describe_bounds(bounds: Box, crs: CRS | None) -> str:
    """'x0, y0 – x1, y1 in EPSG:…' for messages."""
    name = crs.to_string() if crs is not None else "an unknown CRS"
    return f"{bounds[0]:.8g}, {bounds[1]:.8g} – {bounds[2]:.8g}, {bounds[3]:.8g} in {name}"


def _box(aoi: str | Box) -> Box:
    try:
        box = tuple(float(v) for v in (aoi if isinstance(aoi, tuple) else aoi.split(",")))
    except ValueError:
        raise InputError(f"AOI {aoi!r} is neither a file nor 'minx,miny,maxx,maxy'") from None
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise InputError(f"AOI {aoi!r} must be four finite numbers: minx,miny,maxx,maxy")
    minx, miny, maxx, maxy = box
    swapped = [axis for axis, lo, hi in (("x", minx, maxx), ("y", miny, maxy)) if lo > hi]
    if swapped:
        raise InputError(f"AOI {_shown(aoi)}: min{swapped[0]} is larger than max{swapped[0]}; give the box as "
                         "minx,miny,maxx,maxy (west, south, east, north)")
    if minx == maxx or miny == maxy:
        raise InputError(f"AOI {_shown(aoi)} has zero size (minx = maxx or miny = maxy)")
    return box


def _reproject_box(box: Box, aoi_crs: str, crs: CRS, aoi: str | Box) -> Box:
    try:
        source = CRS.from_user_input(aoi_crs)
    except CRSError as e:
        raise InputError(f"--aoi-crs {aoi_crs!r} is not a CRS (e.g. EPSG:4326): {e}") from e
    try:
        return tuple(transform_bounds(source, crs, *box, densify_pts=21))
    except Exception as e:  # noqa: BLE001 — PROJ raises several types for impossible transforms
        raise InputError(f"AOI {_shown(aoi)} cannot be brought from {aoi_crs} to the image CRS "
                         f"{crs.to_string()} ({e})") from e


def _looks_like_lonlat(box: Box) -> bool:
    return all(abs(v) <= 180 for v in box[::2]) and all(abs(v) <= 90 for v in box[1::2])


def _shown(aoi: str | Path | Box) -> str:
    return ",".join(f"{v:g}" for v in aoi) if isinstance(aoi, tuple) else str(aoi)
