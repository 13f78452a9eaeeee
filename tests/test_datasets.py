"""Dataset splits over the real shared data, and the XYZ mosaic as a georeferenced orthophoto."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
from PIL import Image
from pyproj import Transformer

from idgbr.datasets import DATASETS, build_xyz_mosaic, complete_z19_parents, data_root, load_dataset
from idgbr.datasets import farmland_centre, xyz_tile_bounds
from idgbr.errors import InputError
from idgbr.xyz import parse_oam_stem, z19_parent

NAMES = sorted(DATASETS)
EXPECTED_COUNTS = {"buildings": (1281, 391), "landcover": (165, 42), "farmland": (24, 6), "roads": (119, 25)}


@pytest.fixture(scope="module")
def splits(shared_data: Path) -> dict[str, dict[str, object]]:
    return {n: {s: load_dataset(n, s, shared_data) for s in ("train", "val")} for n in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_splits_are_disjoint_and_complete(name: str, splits, shared_data: Path) -> None:
    train, val = splits[name]["train"], splits[name]["val"]
    assert (len(train), len(val)) == EXPECTED_COUNTS[name]
    assert not set(train.tile_ids) & set(val.tile_ids)
    assert not {t.group for t in train.tiles} & {t.group for t in val.tiles}
    images = list((shared_data / DATASETS[name].folder).rglob("images/*.png"))
    assert len(train) + len(val) == len(images)


@pytest.mark.parametrize("name", NAMES)
def test_splits_are_deterministic(name: str, splits, shared_data: Path) -> None:
    again = load_dataset(name, "val", shared_data)
    assert again.tile_ids == splits[name]["val"].tile_ids


def test_no_z19_parent_in_both_building_splits(splits) -> None:
    def parents(ds) -> set[tuple[str, int, int]]:
        out = set()
        for tid in ds.tile_ids:
            area, stem = tid.split("/")
            out.add((area, *z19_parent(*parse_oam_stem(stem))))
        return out

    train, val = parents(splits["buildings"]["train"]), parents(splits["buildings"]["val"])
    assert not train & val
    assert {a for a, _, _ in val} == {"area1", "area2", "area4", "area5"}  # every place in val


def test_landcover_val_is_a_leading_chip_run_per_scene(splits) -> None:
    runs: dict[str, list[int]] = {}
    for tid in splits["landcover"]["val"].tile_ids:
        scene, number = tid.rsplit("-", 1)
        runs.setdefault(scene, []).append(int(number))
    assert len(runs) == 2
    assert all(sorted(n) == list(range(len(n))) for n in runs.values())


def test_farmland_val_images_are_far_from_train(splits) -> None:
    def km(a: tuple[float, float], b: tuple[float, float]) -> float:
        (la1, lo1), (la2, lo2) = np.radians(a), np.radians(b)
        c = math.sin(la1) * math.sin(la2) + math.cos(la1) * math.cos(la2) * math.cos(lo1 - lo2)
        return 6371.0 * math.acos(min(1.0, c))

    train = [farmland_centre(t) for t in splits["farmland"]["train"].tile_ids]
    val = [farmland_centre(t) for t in splits["farmland"]["val"].tile_ids]
    assert min(km(a, b) for a in val for b in train) > 250


@pytest.mark.parametrize("name", NAMES)
def test_items_have_the_right_shapes_and_classes(name: str, splits) -> None:
    for ds in splits[name].values():
        assert ds.classes == list(DATASETS[name].classes) and len(ds.classes) >= 2
        for i in np.linspace(0, len(ds) - 1, 3).astype(int):
            image, label, tile_id = ds[int(i)]
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert label.dtype == np.uint8 and label.shape == image.shape[:2]
            assert int(label.max()) < len(ds.classes)
            assert tile_id == ds.tiles[int(i)].tile_id


def test_binary_labels_are_zero_one(splits) -> None:
    _, label, _ = splits["buildings"]["train"][0]
    assert set(np.unique(label)) <= {0, 1}


def test_bad_names_and_roots_are_input_errors(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(InputError):
        load_dataset("nope", "train", shared_data)
    with pytest.raises(InputError):
        load_dataset("roads", "test", shared_data)
    monkeypatch.setenv("IDGBR_DATA", str(tmp_path / "missing"))
    with pytest.raises(InputError):
        data_root()
    monkeypatch.setenv("IDGBR_DATA", str(shared_data))
    assert data_root() == shared_data


def test_xyz_tile_bounds() -> None:
    half = 20037508.342789244
    assert xyz_tile_bounds(0, 0, 0) == pytest.approx((-half, -half, half, half))
    assert xyz_tile_bounds(1, 0, 1) == pytest.approx((0, 0, half, half))  # north-east quarter


# --- the mosaic -------------------------------------------------------------------------------

AREA = "area5"  # Nairobi: dense buildings, many cut by tile edges


@pytest.fixture(scope="module")
def mosaic(shared_data: Path, tmp_path_factory) -> dict[str, object]:
    area_dir = shared_data / "buildings_hot_oam" / AREA
    x19, y19 = complete_z19_parents(area_dir)[0]
    out = tmp_path_factory.mktemp("mosaic")
    tif, gpkg = build_xyz_mosaic(area_dir, x19, y19, out / "m.tif", out / "m.gpkg"), out / "m.gpkg"
    with open(shared_data / "buildings_hot_oam" / "tiles.csv") as f:
        bounds = {(r["area"], r["stem"]): tuple(float(r[k]) for k in ("west", "south", "east", "north"))
                  for r in csv.DictReader(f)}
    return {"area_dir": area_dir, "x19": x19, "y19": y19, "tif": tif, "gpkg": gpkg, "lonlat": bounds}


def test_complete_parents(shared_data: Path) -> None:
    root = shared_data / "buildings_hot_oam"
    assert len(complete_z19_parents(root / "area1")) == 46  # every area1 parent has 16 children
    assert len(complete_z19_parents(root / "area2")) < 6  # Kampala misses some z21 tiles


def test_mosaic_grid_matches_tile_bounds(mosaic) -> None:
    to_lonlat = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
    with rasterio.open(mosaic["tif"]) as ds:
        assert ds.crs.to_epsg() == 3857 and (ds.width, ds.height, ds.count) == (1024, 1024, 3)
        assert ds.dtypes == ("uint8",) * 3
        transform, rgb = ds.transform, ds.read()
    x19, y19 = mosaic["x19"], mosaic["y19"]
    parent = mosaic["lonlat"][(AREA, f"OAM-{x19}-{y19}-19")]
    pixel_deg = (parent[2] - parent[0]) / 1024
    for r in range(4):
        for c in range(4):
            stem = f"OAM-{4 * x19 + c}-{4 * y19 + r}-21"
            west, north = to_lonlat.transform(*(transform * (c * 256, r * 256)))
            east, south = to_lonlat.transform(*(transform * ((c + 1) * 256, (r + 1) * 256)))
            assert np.allclose((west, south, east, north), mosaic["lonlat"][(AREA, stem)], atol=pixel_deg)
            with Image.open(mosaic["area_dir"] / "images" / f"{stem}.png") as im:
                assert np.array_equal(rgb[:, r * 256:(r + 1) * 256, c * 256:(c + 1) * 256],
                                      np.asarray(im.convert("RGB")).transpose(2, 0, 1))


def test_mosaic_polygons_reproduce_the_masks(mosaic) -> None:
    buildings = gpd.read_file(mosaic["gpkg"], layer="buildings")
    assert buildings.crs.to_epsg() == 4326 and (buildings["class_id"] == 1).all()
    assert set(buildings.geom_type) == {"Polygon"}
    with rasterio.open(mosaic["tif"]) as ds:
        shapes = ((g, 1) for g in buildings.to_crs(ds.crs).geometry)
        drawn = rasterio.features.rasterize(shapes, out_shape=(ds.height, ds.width), transform=ds.transform)
    truth = np.zeros((1024, 1024), np.uint8)
    x19, y19 = mosaic["x19"], mosaic["y19"]
    for r in range(4):
        for c in range(4):
            with Image.open(mosaic["area_dir"] / "masks" / f"OAM-{4 * x19 + c}-{4 * y19 + r}-21.png") as m:
                truth[r * 256:(r + 1) * 256, c * 256:(c + 1) * 256] = np.asarray(m) > 127
    iou = (drawn & truth).sum() / (drawn | truth).sum()
    assert iou > 0.98


def test_mosaic_joins_buildings_cut_by_tile_edges(mosaic) -> None:
    x19, y19 = mosaic["x19"], mosaic["y19"]
    pieces = [gpd.read_file(mosaic["area_dir"] / "labels_geojson" / f"OAM-{4 * x19 + c}-{4 * y19 + r}-21.geojson")
              for r in range(4) for c in range(4)]
    piece_ids = np.concatenate([p["osm_id"].dropna().to_numpy() for p in pieces])
    assert len(piece_ids) > len(set(piece_ids))  # tile edges do cut buildings here
    buildings = gpd.read_file(mosaic["gpkg"], layer="buildings")
    assert not buildings["osm_id"].dropna().duplicated().any()  # ... and each is one polygon again
    assert set(buildings["osm_id"].dropna()) == set(piece_ids)
