"""Slippy-map (XYZ) tiles of buildings_hot_oam as georeferenced data.

The tiles are PNGs without georeferencing, but their names (`OAM-<x>-<y>-<z>`) fix their
EPSG:3857 bounds. The 16 z21 tiles under one z19 tile make a real 1024×1024 orthophoto with a
real building layer, which end-to-end tests and benchmarks need (the pipeline reads GeoTIFF and
GeoPackage, not PNG tiles).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from PIL import Image
from rasterio.transform import from_bounds

from .errors import InputError

WEB_MERCATOR_HALF = 20037508.342789244
"""Half the width of the EPSG:3857 world square, metres."""
TILE_PX = 256
PARENT_ZOOM = 19
CHILD_ZOOM = 21
CHILDREN_PER_SIDE = 2 ** (CHILD_ZOOM - PARENT_ZOOM)
MOSAIC_PX = TILE_PX * CHILDREN_PER_SIDE
BUILDING_CLASS_ID = 1
_STEM = re.compile(r"^OAM-(\d+)-(\d+)-(\d+)$")


def parse_oam_stem(stem: str) -> tuple[int, int, int]:
    """`OAM-<x>-<y>-<z>` → (x, y, z)."""
    m = _STEM.match(stem)
    if not m:
        raise InputError(f"not an XYZ tile name (OAM-x-y-z): {stem}")
    x, y, z = (int(v) for v in m.groups())
    return x, y, z


def xyz_tile_bounds(x: int, y: int, z: int) -> tuple[float, float, float, float]:
    """EPSG:3857 (west, south, east, north) of a slippy-map tile; y grows southward."""
    size = 2 * WEB_MERCATOR_HALF / 2**z
    west = -WEB_MERCATOR_HALF + x * size
    north = WEB_MERCATOR_HALF - y * size
    return west, north - size, west + size, north


def z19_parent(x: int, y: int, z: int) -> tuple[int, int]:
    """The z19 tile covering tile (x, y, z), z >= 19: the unit that must not straddle splits."""
    shift = z - PARENT_ZOOM
    if shift < 0:
        raise InputError(f"zoom {z} is coarser than z{PARENT_ZOOM}")
    return x >> shift, y >> shift


def tile_gsd_m(y: int, z: int) -> float:
    """Ground size of one pixel at the tile's centre latitude (Mercator scale is 1/cos(lat))."""
    lat = math.atan(math.sinh(math.pi * (1 - 2 * (y + 0.5) / 2**z)))
    return 2 * WEB_MERCATOR_HALF / 2**z / TILE_PX * math.cos(lat)


def _children(x19: int, y19: int) -> list[tuple[int, int, int, int]]:
    """(row, col, x21, y21) of the z21 tiles under a z19 tile, rows southward."""
    n = CHILDREN_PER_SIDE
    return [(r, c, n * x19 + c, n * y19 + r) for r in range(n) for c in range(n)]


def _child_stem(x: int, y: int) -> str:
    return f"OAM-{x}-{y}-{CHILD_ZOOM}"


def complete_z19_parents(area_dir: str | Path) -> list[tuple[int, int]]:
    """z19 tiles of an area whose 16 z21 children all have an image and a label file."""
    area = Path(area_dir)
    have = {p.stem for p in (area / "images").glob("OAM-*.png")}
    have &= {p.stem for p in (area / "labels_geojson").glob("OAM-*.geojson")}
    parents = {z19_parent(*parse_oam_stem(s)) for s in have}
    return sorted(p for p in parents if all(_child_stem(x, y) in have for _, _, x, y in _children(*p)))


def build_xyz_mosaic(
    area_dir: str | Path, x19: int, y19: int, out_tif: str | Path, out_gpkg: str | Path | None = None
) -> Path:
    """Mosaic the 16 z21 tiles under z19 tile (x19, y19) into a 1024×1024 RGB GeoTIFF in
    EPSG:3857, and optionally their building polygons into one GeoPackage layer `buildings`
    (EPSG:4326, `class_id` = 1, one polygon per building even where tiles cut it)."""
    area = Path(area_dir)
    children = _children(x19, y19)
    stems = [_child_stem(x, y) for _, _, x, y in children]
    missing = [s for s in stems if not (area / "images" / f"{s}.png").is_file()]
    if missing:
        raise InputError(f"{area}: z19 tile {x19},{y19} lacks z21 children {missing}")
    rgb = np.zeros((MOSAIC_PX, MOSAIC_PX, 3), np.uint8)
    for (r, c, _, _), stem in zip(children, stems):
        with Image.open(area / "images" / f"{stem}.png") as im:
            rgb[r * TILE_PX:(r + 1) * TILE_PX, c * TILE_PX:(c + 1) * TILE_PX] = np.asarray(im.convert("RGB"))
    transform = from_bounds(*xyz_tile_bounds(x19, y19, PARENT_ZOOM), MOSAIC_PX, MOSAIC_PX)
    profile = {
        "driver": "GTiff", "width": MOSAIC_PX, "height": MOSAIC_PX, "count": 3, "dtype": "uint8",
        "crs": "EPSG:3857", "transform": transform,
        "tiled": True, "blockxsize": TILE_PX, "blockysize": TILE_PX, "compress": "deflate",
        "predictor": 2, "photometric": "RGB", "interleave": "pixel",
    }
    out_tif = Path(out_tif)
    with rasterio.open(out_tif, "w", **profile) as dst:
        dst.write(rgb.transpose(2, 0, 1))
    if out_gpkg is not None:
        _write_gpkg(_merge_tile_pieces([area / "labels_geojson" / f"{s}.geojson" for s in stems]), out_gpkg)
    return out_tif


def _merge_tile_pieces(geojsons: list[Path]) -> gpd.GeoDataFrame:
    """Buildings of adjacent tiles, with the pieces a tile edge cut apart joined again.

    The per-tile polygons are clipped at tile edges and keep their `osm_id`, so pieces are
    joined by id (a plain union would also fuse neighbours sharing a wall); the few pieces
    without an id are joined where they touch."""
    pieces = gpd.GeoDataFrame(pd.concat([gpd.read_file(p).to_crs("EPSG:4326") for p in geojsons],
                                        ignore_index=True), crs="EPSG:4326")
    ids = pieces["osm_id"] if "osm_id" in pieces else pd.Series(pd.NA, index=pieces.index)  # tiles may be empty
    keyed = pieces[ids.notna()].assign(osm_id=ids.astype("Int64")).dissolve("osm_id", as_index=False)
    loose = gpd.GeoDataFrame({"osm_id": pd.array([pd.NA], dtype="Int64")},
                             geometry=[pieces[ids.isna()].union_all()], crs="EPSG:4326")
    parts = [p for p in (keyed[["osm_id", "geometry"]], loose) if not p.geometry.is_empty.all()]
    merged = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True) if parts else loose.iloc[:0], crs="EPSG:4326")
    merged = merged.explode(index_parts=False, ignore_index=True)
    merged = merged[merged.geom_type == "Polygon"]
    merged.insert(0, "class_id", BUILDING_CLASS_ID)
    return merged.reset_index(drop=True)


def _write_gpkg(buildings: gpd.GeoDataFrame, out_gpkg: str | Path) -> Path:
    """Write a fresh single-layer GeoPackage (an old file is replaced, not appended to)."""
    out_gpkg = Path(out_gpkg)
    out_gpkg.unlink(missing_ok=True)
    buildings.to_file(out_gpkg, layer="buildings", driver="GPKG")
    return out_gpkg
