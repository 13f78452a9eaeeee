"""The area of interest: a bounding box in the image's CRS ("minx,miny,maxx,maxy") or a polygon
layer (its polygons, reprojected to the image CRS). It becomes a window of the image grid, and
a polygon AOI also masks what lies outside it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely
from rasterio.crs import CRS
from rasterio.windows import Window, from_bounds

from ..errors import InputError
from .layers import read_vector


def parse_aoi(aoi: str | Path | tuple[float, float, float, float] | None, crs: CRS,
              transform, width: int, height: int) -> tuple[Window, shapely.Geometry | None]:
    """The image window to refine, and the AOI polygon (None for a box or no AOI)."""
    full = Window(0, 0, width, height)
    if aoi is None:
        return full, None
    geom = None
    if isinstance(aoi, tuple) or (isinstance(aoi, str) and not Path(aoi.split("|")[0]).exists()
                                  and aoi.count(",") == 3):
        try:
            box = tuple(float(v) for v in (aoi if isinstance(aoi, tuple) else aoi.split(",")))
        except ValueError:
            raise InputError(f"AOI {aoi!r} is neither a file nor 'minx,miny,maxx,maxy'") from None
    else:
        df = read_vector(aoi, "AOI layer")
        polys = df[df.geom_type.isin(["Polygon", "MultiPolygon"])]
        if len(polys) == 0:
            raise InputError(f"AOI layer {aoi} holds no polygons")
        geom = shapely.union_all(shapely.make_valid(np.asarray(polys.to_crs(crs).geometry.values)))
        box = tuple(shapely.bounds(geom))
    minx, miny, maxx, maxy = box
    if not (maxx > minx and maxy > miny):
        raise InputError(f"AOI {aoi!r} has zero size")
    win = from_bounds(minx, miny, maxx, maxy, transform).round_offsets(op="floor").round_lengths(op="ceil")
    try:
        win = win.intersection(full)
    except Exception:  # rasterio raises WindowError when the windows do not intersect
        raise InputError(f"AOI {aoi!r} lies outside the image") from None
    if win.width < 1 or win.height < 1:
        raise InputError(f"AOI {aoi!r} lies outside the image")
    return Window(int(win.col_off), int(win.row_off), int(win.width), int(win.height)), geom
