"""Feature-preserving output: a polygon coarse layer comes back feature by feature, with its fids
and attributes, as a gapless coverage. Real data: the bundled NAIP farmland sample (35 parcels)
and a Kampala buildings mosaic from ../shared/data with adjoining buildings."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely

import idgbr
from idgbr.features import STATUSES

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "sample"


def with_attributes(source: Path, layer: str | None, out: Path) -> gpd.GeoDataFrame:
    """The layer with attributes of every kind an analyst's layer has (string, date, float),
    saved as a GeoPackage whose fids are not 1..n (so that a test can tell fids apart from rows)."""
    df = gpd.read_file(source, layer=layer)
    n = len(df)
    df["owner_name"] = [f"Parcel owner {i} — ß" for i in range(n)]
    df["surveyed"] = pd.to_datetime([dt.date(2020, 1, 1) + dt.timedelta(days=37 * i) for i in range(n)])
    df["yield_t_ha"] = np.linspace(1.5, 9.5, n)
    df.index = np.arange(n) * 3 + 10
    df.index.name = "fid"
    pyogrio.write_dataframe(df.reset_index(), out, layer="parcels")
    return pyogrio.read_dataframe(out, fid_as_index=True)


def read_outputs(gpkg: Path) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, gpd.GeoDataFrame]:
    return tuple(pyogrio.read_dataframe(gpkg, layer=name, fid_as_index=True) for name in ("refined", "removed", "new"))


def assert_attributes_kept(inputs: gpd.GeoDataFrame, outputs: gpd.GeoDataFrame) -> None:
    assert set(outputs.index) <= set(inputs.index)
    columns = [c for c in inputs.columns if c != inputs.geometry.name]
    pd.testing.assert_frame_equal(pd.DataFrame(outputs[columns]), pd.DataFrame(inputs.loc[outputs.index, columns]))


def resolve_overlaps(geoms: np.ndarray) -> np.ndarray:
    """Each polygon less the smaller polygons overlapping it: how the output resolves overlaps."""
    area = shapely.area(geoms)
    return np.array([shapely.difference(g, shapely.union_all(geoms[area < a])) for g, a in zip(geoms, area)])


def overlap_fraction(geoms: np.ndarray) -> float:
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = left < right
    overlaps = shapely.area(shapely.intersection(geoms[left[pairs]], geoms[right[pairs]])).sum()
    return float(overlaps / shapely.area(geoms).sum())


@pytest.fixture(scope="module")
def parcels(tmp_path_factory) -> tuple[Path, gpd.GeoDataFrame]:
    path = tmp_path_factory.mktemp("parcels") / "parcels.gpkg"
    return path, with_attributes(SAMPLE / "coarse.gpkg", None, path)


def test_identity_gives_back_every_parcel_unchanged(parcels, tmp_path) -> None:
    path, inputs = parcels
    result = idgbr.refine(SAMPLE / "image.tif", path, "identity", tmp_path / "out", class_field="class_id")
    refined, removed, new = read_outputs(result.vectors)
    assert len(inputs) == 35 and len(refined) + len(removed) == 35
    assert len(removed) == 0 and len(new) == 0
    assert_attributes_kept(inputs, refined)
    assert (refined["refine_status"] == "unchanged").all()
    assert result.features.statuses["unchanged"] == 35
    assert refined.crs == inputs.crs
    # Geometry: the input's within the rasterization tolerance (a 1 m pixel's diagonal, plus the
    # 1 px simplification), where parcels overlap (10 of the sample's do) less the part a smaller
    # parcel keeps.
    resolved = resolve_overlaps(inputs.geometry.values)
    shift = shapely.hausdorff_distance(refined.geometry.values, resolved[inputs.index.get_indexer(refined.index)])
    assert shift.max() <= 2 ** 0.5 + 1.0
    assert (refined["overlap_m2"] > 0).sum() == result.features.overlapping > 0
    assert refined["iou_to_input"].min() > 0.9


def test_guided_parcels_stay_separate_and_cover_the_refined_fields(parcels, tmp_path) -> None:
    path, inputs = parcels
    result = idgbr.refine(SAMPLE / "image.tif", path, "guided", tmp_path / "out", class_field="class_id")
    refined, removed, new = read_outputs(result.vectors)
    # Every parcel is in `refined` or, reported, in `removed`; none is dissolved into another.
    assert len(refined) + len(removed) == len(inputs)
    assert set(removed["refine_status"]) <= {"removed", "merged"}
    assert_attributes_kept(inputs, pd.concat([refined, removed]))
    assert set(refined["refine_status"]) <= set(STATUSES) and (refined["refine_status"] != "unchanged").any()
    geoms = refined.geometry.values
    assert overlap_fraction(np.concatenate([geoms, new.geometry.values])) < 1e-6
    # The features (and the refined regions of no feature) cover exactly the refined field class.
    with rasterio.open(result.refined) as ds:
        field_area = float((ds.read(1) == 1).sum()) * abs(ds.transform.a * ds.transform.e)
    union = shapely.union_all(np.concatenate([geoms, new.geometry.values])).area
    assert union == pytest.approx(field_area, rel=1e-3)
    # Measures say what happened: area change against the input, in m² (UTM: planar = ground, ~).
    change = refined.geometry.area - inputs.loc[refined.index].geometry.area
    np.testing.assert_allclose(refined["area_change_m2"], change, rtol=0.01, atol=5.0)


def test_overlapping_parcels_smaller_keeps_the_overlap(tmp_path) -> None:
    df = gpd.read_file(SAMPLE / "coarse.gpkg")
    big = df.geometry.area.idxmax()
    inner = df.geometry[big].centroid.buffer(25.0)  # a small plot inside the largest parcel
    both = gpd.GeoDataFrame({"class_id": [1, 1], "name": ["small", "big"]},
                            geometry=[inner, df.geometry[big]], crs=df.crs)
    both.to_file(tmp_path / "overlap.gpkg", layer="plots")
    result = idgbr.refine(SAMPLE / "image.tif", tmp_path / "overlap.gpkg", "identity", tmp_path / "out",
                          class_field="class_id")
    refined = pyogrio.read_dataframe(result.vectors, layer="refined").set_index("name")
    assert result.features.overlapping == 1
    assert refined.loc["big", "overlap_m2"] == pytest.approx(inner.area, rel=0.01)
    assert refined.loc["small", "overlap_m2"] == 0
    assert refined.geometry["small"].area == pytest.approx(inner.area, rel=0.05)
    assert refined.geometry["big"].intersection(refined.geometry["small"]).area < 1e-6 * inner.area


@pytest.fixture(scope="module")
def buildings(shared_data: Path, tmp_path_factory) -> tuple[Path, Path, gpd.GeoDataFrame]:
    from idgbr.datasets import build_xyz_mosaic, complete_z19_parents

    area = shared_data / "buildings_hot_oam" / "area4"
    parent = (443121, 241594)  # 31 buildings, five pairs of them sharing a wall
    assert parent in complete_z19_parents(area)
    folder = tmp_path_factory.mktemp("buildings")
    image, raw = folder / "ortho.tif", folder / "raw.gpkg"
    build_xyz_mosaic(area, *parent, image, raw)
    return image, folder / "buildings.gpkg", with_attributes(raw, "buildings", folder / "buildings.gpkg")


def adjoining_pairs(geoms: np.ndarray, tolerance: float) -> np.ndarray:
    left, right = shapely.STRtree(geoms).query(geoms, predicate="dwithin", distance=tolerance)
    return np.column_stack([left, right])[left < right]


def test_adjoining_buildings_stay_separate_features(buildings, tmp_path) -> None:
    image, path, inputs = buildings
    result = idgbr.refine(image, path, "guided", tmp_path / "out", class_field="class_id", tile_size=512,
                          regularize_classes=(1,))
    refined, removed, _ = read_outputs(result.vectors)
    assert len(refined) + len(removed) == len(inputs)
    assert_attributes_kept(inputs, pd.concat([refined, removed]))
    assert refined.crs == inputs.crs
    metric = refined.to_crs(3857)
    assert overlap_fraction(metric.geometry.values) < 1e-6
    # Buildings that adjoin in the input (within 10 cm) are two features in the output too.
    source = inputs.to_crs(3857)
    pairs = adjoining_pairs(source.geometry.values, 0.1)
    assert len(pairs) >= 5  # the mosaic has row houses: the point of this test
    fids = source.index.to_numpy()[pairs]
    kept = np.isin(fids, metric.index).all(axis=1)
    assert kept.sum() >= 4
    for a, b in fids[kept]:
        assert metric.geometry[a].intersection(metric.geometry[b]).area < 1e-3


def test_identity_buildings_unchanged(buildings, tmp_path) -> None:
    image, path, inputs = buildings
    result = idgbr.refine(image, path, "identity", tmp_path / "out", class_field="class_id", tile_size=512,
                          regularize_classes=())
    refined, removed, new = read_outputs(result.vectors)
    assert len(removed) == 0 and len(new) == 0 and len(refined) == len(inputs)
    assert (refined["refine_status"] == "unchanged").all()
    pixel = 0.15  # m, about two z21 pixels (0.075 m at the equator): rasterization + 1 px simplification
    assert (refined["max_shift_m"] <= 2 * pixel * 1.5).all()


def test_raster_instance_mode_keeps_regions_apart(tmp_path) -> None:
    from scipy import ndimage

    first = idgbr.refine(SAMPLE / "image.tif", SAMPLE / "coarse.gpkg", "identity", tmp_path / "a",
                         class_field="class_id")
    result = idgbr.refine(SAMPLE / "image.tif", first.coarse, "guided", tmp_path / "b", instances=True)
    refined, removed, _ = read_outputs(result.vectors)
    with rasterio.open(first.coarse) as ds:
        _, regions = ndimage.label(ds.read(1) == 1)  # 4-connected, as polygonized
    # One feature per connected region of the coarse raster, whatever the refiner joined.
    assert len(refined) + len(removed) == regions
    assert overlap_fraction(refined.geometry.values) < 1e-6


def test_buildings_the_layer_lacks_go_to_new_whole(buildings, tmp_path, monkeypatch) -> None:
    """The refined map holds every building; the layer lacks three, one of them adjoining a
    building it keeps: the three come back in `new`, and the neighbour does not grow into it.
    Small strips and output chunks: features finished strip by strip keep their fids."""
    from idgbr.features import vectorize_features
    from idgbr.io.coarse import stage_coarse
    from idgbr.io.grid import Grid
    from idgbr.vectorize import _LayerWriter

    monkeypatch.setattr(_LayerWriter, "FLUSH_FEATURES", 4)

    image, path, inputs = buildings
    everything = idgbr.refine(image, path, "identity", tmp_path / "all", class_field="class_id",
                              regularize_classes=())
    metric = inputs.to_crs(3857)
    pairs = metric.index.to_numpy()[adjoining_pairs(metric.geometry.values, 0.1)]
    neighbour, adjoining = pairs[0]
    missing = [adjoining] + [f for f in metric.index if f not in pairs][:2]
    partial = tmp_path / "partial.gpkg"
    pyogrio.write_dataframe(inputs.drop(index=missing).reset_index(), partial, layer="parcels")
    with rasterio.open(everything.refined) as ds:  # the part of the image the layer covers
        grid = Grid(ds.crs, ds.transform, ds.width, ds.height)
    stats = stage_coarse(partial, grid, tmp_path / "coarse.tif", class_field="class_id",
                         instances_path=tmp_path / "instances.tif")
    summary = vectorize_features(everything.refined, tmp_path / "instances.tif", stats.features,
                                 tmp_path / "out.gpkg", skip_classes=(0,), simplify=1.0, strip_rows=128)
    refined, removed, new = read_outputs(tmp_path / "out.gpkg")
    assert summary.new_polygons == len(new) == 3 and len(removed) == 0
    assert (refined["refine_status"] == "unchanged").all()
    assert_attributes_kept(inputs, refined)
    found = new.to_crs(3857).geometry.values
    for fid in missing:
        truth = metric.geometry[fid]
        iou = shapely.area(shapely.intersection(found, truth)) / shapely.area(shapely.union(found, truth))
        assert iou.max() > 0.8, fid
    assert refined.loc[neighbour, "iou_to_input"] > 0.9
