"""Build the demo sample of `make demo` from the shared data. Run from the repository root:

    .venv/bin/python resources/sample/build_sample.py [--data ../shared/data]

Writes, next to this script:
  image.tif    one NAIP scene of fields_agoro_naip (1024×1024 RGB, ~1 m), JPEG-in-TIFF, placed
               north-up in its UTM zone centred on the lat/lng of its file name (approximate
               georeferencing: the source PNG has none);
  truth.gpkg   the hand-drawn Agoro field polygons of that scene, layer `fields`, class_id = 1;
  coarse.gpkg  the same fields degraded the way an old layer or a rough digitisation is wrong
               (layer `fields`, class_id = 1; background is the uncovered area).
The scene is in the farmland `val` split of idgbr.datasets, so no model trained on the `train`
split has seen it. Everything is seeded: running it again gives the same files.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from PIL import Image
from pyproj import Transformer
from shapely.geometry import Polygon, box

from idgbr.datasets import farmland_centre, load_dataset

SCENE = "43.3076215923193--83.6174134101217"  # Michigan: rectangular fields, woods, farmsteads
SEED = 20240611
SIZE_PX = 1024
GSD_M = 1.0
OUT = Path(__file__).resolve().parent

# How the coarse layer is wrong, in metres (1 m = 1 px here).
SHIFT_ALL_M = (4.0, -3.0)   # the old layer's misregistration, the same for every field
SHIFT_EACH_M = 3.0          # plus up to this much per field (digitised on different days)
SIMPLIFY_M = 5.0            # coarse vertex spacing
ROUND_M = 15.0              # radius of rounded corners
GROW_M = (-6.0, 6.0)        # each field drawn too tight or too loose by up to this much
JITTER_M = 2.0              # hand wobble of each vertex
DROP_SMALLER_THAN_M2 = 8000.0  # fields below this size may be missing ...
DROP_PROBABILITY = 0.5         # ... with this probability each


def utm_grid(lat: float, lng: float) -> tuple[str, Affine]:
    """CRS and transform of a SIZE_PX² north-up image centred on (lat, lng) in its UTM zone."""
    zone = int((lng + 180) // 6) + 1
    crs = f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"
    e, n = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lng, lat)
    half = SIZE_PX * GSD_M / 2
    return crs, Affine(GSD_M, 0, round(e - half), 0, -GSD_M, round(n + half))


def write_image(png: Path, crs: str, transform: Affine, out: Path) -> None:
    """JPEG-in-TIFF in YCbCr: a ~1 m NAIP scene at a fraction of its PNG size."""
    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
    profile = {
        "driver": "GTiff", "width": SIZE_PX, "height": SIZE_PX, "count": 3, "dtype": "uint8",
        "crs": crs, "transform": transform, "tiled": True, "blockxsize": 256, "blockysize": 256,
        "compress": "jpeg", "jpeg_quality": 90, "photometric": "ycbcr", "interleave": "pixel",
    }
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(rgb)


def true_fields(regions: list[dict], transform: Affine) -> gpd.GeoSeries:
    """Agoro polygons (VIA pixel vertices, taken as pixel centres) in map coordinates."""
    frame = box(*rasterio.transform.array_bounds(SIZE_PX, SIZE_PX, transform))
    out = []
    for region in regions:
        shape = region["shape_attributes"]
        ring = [transform * (x + 0.5, y + 0.5) for x, y in zip(shape["all_points_x"], shape["all_points_y"])]
        if len(ring) >= 3:
            out.append(_polygonal(shapely.make_valid(Polygon(ring))).intersection(frame))
    return gpd.GeoSeries([g for g in out if not g.is_empty])


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """The area parts of a geometry (make_valid may return stray lines and points)."""
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts)


def degrade(field: shapely.Geometry, rng: np.random.Generator) -> shapely.Geometry:
    """One field as a rough, old digitisation draws it: simplified, corners rounded, too tight
    or too loose, wobbly, and shifted."""
    g = field.simplify(SIMPLIFY_M)
    opened = g.buffer(-ROUND_M, quad_segs=4).buffer(ROUND_M + rng.uniform(*GROW_M), quad_segs=4)
    # an opening rounds convex corners; a strip thinner than 2 * ROUND_M vanishes under it
    g = opened if not opened.is_empty else g.buffer(rng.uniform(0, GROW_M[1]), quad_segs=4)
    g = _wobble(g.simplify(1.0).segmentize(20.0), rng)
    dx, dy = np.add(SHIFT_ALL_M, rng.uniform(-SHIFT_EACH_M, SHIFT_EACH_M, 2))
    return shapely.affinity.translate(g, dx, dy)


def _wobble(geom: shapely.Geometry, rng: np.random.Generator) -> shapely.Geometry:
    """Move every vertex by N(0, JITTER_M), keeping rings closed."""
    def ring(coords: shapely.coords.CoordinateSequence) -> np.ndarray:
        xy = np.asarray(coords)[:-1] + rng.normal(0, JITTER_M, (len(coords) - 1, 2))
        return np.vstack([xy, xy[:1]])

    parts = [Polygon(ring(p.exterior.coords), [ring(h.coords) for h in p.interiors])
             for p in shapely.get_parts(geom)]
    return _polygonal(shapely.make_valid(shapely.MultiPolygon(parts)))


def coarse_fields(truth: gpd.GeoSeries, frame: Polygon, rng: np.random.Generator) -> gpd.GeoSeries:
    """The degraded layer: some small fields missing, the rest degraded, clipped to the image."""
    out = []
    for field in truth:
        if field.area < DROP_SMALLER_THAN_M2 and rng.random() < DROP_PROBABILITY:
            continue
        g = degrade(field, rng).intersection(frame)
        if not g.is_empty:
            out.append(g)
    return gpd.GeoSeries(out)


def write_fields(geoms: gpd.GeoSeries, crs: str, out: Path) -> None:
    """One `fields` layer, class_id = 1 (field), single polygons."""
    gdf = gpd.GeoDataFrame({"class_id": np.ones(len(geoms), np.int32)}, geometry=geoms.values, crs=crs)
    gdf = gdf.explode(index_parts=False, ignore_index=True)
    gdf = gdf[gdf.geom_type == "Polygon"].reset_index(drop=True)
    out.unlink(missing_ok=True)
    gdf.to_file(out, layer="fields", driver="GPKG")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="shared data folder (default: $IDGBR_DATA, else ../shared/data)")
    args = parser.parse_args()
    val = load_dataset("farmland", "val", args.data)
    if SCENE not in val.tile_ids:
        raise SystemExit(f"{SCENE} is not in the farmland val split")
    png = val.tiles[val.tile_ids.index(SCENE)].image
    crs, transform = utm_grid(*farmland_centre(SCENE))
    write_image(png, crs, transform, OUT / "image.tif")
    regions = json.loads((png.parents[1] / "annotations.json").read_text())[SCENE]["regions"]
    truth = true_fields(regions, transform)
    frame = box(*rasterio.transform.array_bounds(SIZE_PX, SIZE_PX, transform))
    coarse = coarse_fields(truth, frame, np.random.default_rng(SEED))
    write_fields(truth, crs, OUT / "truth.gpkg")
    write_fields(coarse, crs, OUT / "coarse.gpkg")
    print(f"{SCENE}: {crs}, {len(truth)} true fields, {len(coarse)} coarse fields -> {OUT}")


if __name__ == "__main__":
    main()
