"""Vector layers named the way QGIS names them: `path` or `path|layername=NAME`."""
from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pyogrio

from ..errors import InputError


def split_source(source: str | Path) -> tuple[Path, str | None]:
    """QGIS layer source → (file, layer name or None)."""
    text = str(source)
    path, _, rest = text.partition("|")
    layer = None
    for part in rest.split("|"):
        key, _, value = part.partition("=")
        if key == "layername":
            layer = value
    return Path(path), layer


def read_vector(source: str | Path, what: str) -> gpd.GeoDataFrame:
    """Read a vector layer, its fids as the index; refuses files without a CRS or that hold no
    vector layer."""
    path, layer = split_source(source)
    if not path.exists():
        raise InputError(f"{what} {path} does not exist")
    try:
        layers = pyogrio.list_layers(path)
    except Exception as e:  # pyogrio raises DataSourceError and friends
        raise InputError(f"{what} {path} is neither a raster nor a vector layer GDAL can read ({e})") from e
    if len(layers) == 0:
        raise InputError(f"{what} {path} holds no vector layer")
    names = [str(n) for n in layers[:, 0]]
    if layer is None and len(layers) > 1:
        raise InputError(f"{what} {path} holds several layers ({', '.join(names)}): "
                         f"name one as {path}|layername=NAME")
    if layer is not None and layer not in names:
        raise InputError(f"{what} {path} has no layer {layer!r} (its layers: {', '.join(names)})")
    try:
        df = gpd.read_file(path, layer=layer, engine="pyogrio", fid_as_index=True)
    except (RuntimeError, OSError, ValueError) as e:  # pyogrio's errors are RuntimeErrors
        raise InputError(f"{what} {path} is damaged or unreadable: {str(e).strip() or type(e).__name__}") from e
    if df.crs is None:
        raise InputError(f"{what} {path} has no coordinate reference system")
    return df
