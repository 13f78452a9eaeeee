"""Vectorizing class rasters: exact coverages (no gaps, no overlaps) whatever the strip size,
geodesic areas in metres whatever the CRS, squared buildings, the changes layer and the CLI.
Real GeoTIFFs and GeoPackages throughout; real parcels (Denmark LPIS) and buildings (SpaceNet 7)."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from hypothesis import given, settings, strategies as st
from pyproj import Geod
from rasterio.features import rasterize, shapes, sieve
from rasterio.transform import from_origin
from scipy import ndimage

import idgbr.cli.vectorize as cli_vectorize
from idgbr.cli import main
from idgbr.errors import Cancelled, InputError
from idgbr.models.card import ClassInfo
from idgbr.vectorize import regularize, vectorize, vectorize_changes

UTM32 = "EPSG:32632"
NODATA = 255


def write_raster(path: Path, array: np.ndarray, crs: str | None = UTM32, transform=None,
                 nodata: float | None = NODATA) -> Path:
    transform = transform or from_origin(512000.0, 6245000.0, 10.0, 10.0)  # Denmark, UTM 32N, 10 m
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[1], height=array.shape[0], count=1,
                       dtype=array.dtype, crs=crs, transform=transform, nodata=nodata) as ds:
        ds.write(array, 1)
    return path


def blobs(seed: int, height: int, width: int, classes: int, sigma: float, nodata: bool) -> np.ndarray:
    """A land-cover-like class map: the argmax of smoothed noise fields (blobs of `classes`
    classes), with a rectangle of NoData."""
    rng = np.random.default_rng(seed)
    fields = ndimage.gaussian_filter(rng.normal(size=(classes, height, width)), (0, sigma, sigma))
    array = fields.argmax(0).astype(np.uint8)
    if nodata:
        r, c = rng.integers(0, height), rng.integers(0, width)
        array[r:r + height // 4 + 1, c:c + width // 3 + 1] = NODATA
    return array


def read(path: Path, layer: str):
    return pyogrio.read_dataframe(path, layer=layer)


def assert_no_overlaps(geoms: np.ndarray, max_area: float) -> None:
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = left < right
    overlaps = shapely.area(shapely.intersection(geoms[left[pairs]], geoms[right[pairs]]))
    assert overlaps.max(initial=0.0) <= max_area


def assert_clean(geoms: np.ndarray, pixel_area: float) -> None:
    assert len(geoms) and shapely.is_valid(geoms).all()
    assert set(shapely.get_type_id(geoms)) == {shapely.GeometryType.POLYGON}
    assert_no_overlaps(geoms, 1e-9 * pixel_area)


def valid_area(path: Path):
    """The raster's valid (not NoData) pixels as one map-coordinate geometry."""
    with rasterio.open(path) as ds:
        valid = ds.read_masks(1) > 0
        return shapely.union_all([shapely.geometry.shape(g) for g, v in
                                  shapes(valid.astype(np.uint8), mask=valid, transform=ds.transform)])


def assert_no_gaps(geoms: np.ndarray, path: Path) -> None:
    """Whatever of the raster the polygons leave uncovered is NoData: no gap between neighbours."""
    with rasterio.open(path) as ds:
        frame = shapely.box(*ds.bounds)
        nodata = shapely.difference(frame, valid_area(path)) if (ds.read_masks(1) == 0).any() else shapely.Polygon()
    for gap in shapely.get_parts(shapely.difference(frame, shapely.union_all(geoms))):
        assert gap.area < 1e-6 or shapely.intersection(gap, nodata).area > 0.5 * gap.area


def boundary_px(array: np.ndarray, value: int) -> int:
    """Length of the pixel edges around the pixels of `value`, in pixels."""
    inside = np.pad(array == value, 1)
    return int((inside[1:] != inside[:-1]).sum() + (inside[:, 1:] != inside[:, :-1]).sum())


def per_class_union(df) -> dict[int, shapely.Geometry]:
    return {int(c): shapely.union_all(df.geometry.values[df.class_id.values == c]) for c in np.unique(df.class_id)}


# ---------------------------------------------------------------------------------------------
# Properties on random class maps


@st.composite
def class_maps(draw) -> tuple[np.ndarray, int, float]:
    height, width = draw(st.integers(6, 300)), draw(st.integers(6, 300))
    array = blobs(draw(st.integers(0, 2**32 - 1)), height, width, draw(st.integers(2, 5)),
                  draw(st.floats(1.5, 8.0)), draw(st.booleans()))
    strip_rows = draw(st.integers(2, 6)) if height < 24 else draw(st.integers(8, height // 3))  # several strips
    return array, strip_rows, draw(st.sampled_from([0.0, 0.0, 0.7, 1.5, 3.0]))


@settings(max_examples=25, deadline=None)
@given(case=class_maps())
def test_polygons_are_a_gapless_non_overlapping_cover_with_pixel_exact_areas(case, tmp_path_factory) -> None:
    array, strip_rows, tolerance = case
    folder = tmp_path_factory.mktemp("prop")
    tif = write_raster(folder / "classes.tif", array)
    areas = vectorize(tif, folder / "out.gpkg", simplify=tolerance, strip_rows=strip_rows)
    df = read(folder / "out.gpkg", "refined")
    if (array == NODATA).all():
        assert len(df) == 0 and areas == {}
        return
    geoms = df.geometry.values
    assert_clean(geoms, 100.0)
    # (a region thinner than the tolerance between two junctions may collapse and vanish)
    assert set(df.class_id) <= set(np.unique(array[array != NODATA]).tolist())
    for c, union in per_class_union(df).items():
        pixels = (array == c).sum() * 100.0
        # Ground areas (geodesic) are the UTM areas divided by the squared scale factor (~0.9996 here).
        assert areas[c] == pytest.approx(df.area_m2[df.class_id == c].sum())
        assert areas[c] == pytest.approx(union.area / 0.9996**2, rel=2e-4)
        if tolerance == 0:
            assert union.area == pytest.approx(pixels, rel=1e-9)
        else:  # edges move by at most the tolerance (in practice by a small fraction of it)
            assert abs(union.area - pixels) <= tolerance * boundary_px(array, c) * 100.0
    cover, valid = shapely.union_all(geoms), valid_area(tif)
    if tolerance == 0:
        assert shapely.symmetric_difference(cover, valid).area == pytest.approx(0.0, abs=1e-6)
    else:
        # Neighbours share their simplified edges exactly: no gaps; only the edge of NoData moves.
        assert_no_gaps(geoms, tif)
        assert cover.area == pytest.approx(valid.area, abs=tolerance * boundary_px(array, NODATA) * 100.0)


@pytest.mark.parametrize("strip_rows", [9, 40, 128])
def test_strips_give_the_whole_raster_result(strip_rows: int, tmp_path: Path) -> None:
    array = blobs(7, 256, 300, 4, 4.0, nodata=True)
    tif = write_raster(tmp_path / "classes.tif", array)
    out = tmp_path / "out.gpkg"
    vectorize(tif, out, "whole", strip_rows=256)
    vectorize(tif, out, "strips", strip_rows=strip_rows)
    whole, strips = read(out, "whole"), read(out, "strips")
    assert len(strips) == len(whole)
    for c, union in per_class_union(whole).items():
        assert shapely.symmetric_difference(union, per_class_union(strips)[c]).area == pytest.approx(0, abs=1e-6)
    # Simplified strip by strip, the lines differ from the whole-raster simplification by much
    # less than simplifying moves them at all (less so with taller strips).
    vectorize(tif, out, "whole_simple", simplify=1.5, strip_rows=256)
    vectorize(tif, out, "strips_simple", simplify=1.5, strip_rows=strip_rows)
    raw, simple, strip_simple = (per_class_union(read(out, n)) for n in ("whole", "whole_simple", "strips_simple"))

    def moved(a: dict, b: dict) -> float:
        return sum(shapely.symmetric_difference(a[c], b[c]).area for c in a)
    assert moved(simple, strip_simple) < (0.7 if strip_rows < 32 else 0.3) * moved(simple, raw)
    assert_no_gaps(read(out, "strips_simple").geometry.values, tif)


def test_memory_does_not_grow_with_raster_height(tmp_path: Path, monkeypatch) -> None:
    """Peak memory (numpy arrays and Python objects) of a raster 8 times as tall as another:
    about the same, and below what reading the raster whole would take. (Features are written
    in chunks of a fixed count, made small here.)"""
    monkeypatch.setattr("idgbr.vectorize._LayerWriter.FLUSH_FEATURES", 50)
    peaks = []
    for height in (384, 3072):
        array = np.tile(blobs(1, 384, 120, 3, 5.0, nodata=True), (height // 384, 1))
        tif = write_raster(tmp_path / f"classes{height}.tif", array)
        tracemalloc.start()
        vectorize(tif, tmp_path / "out.gpkg", simplify=1.0, min_area_m2=500.0, skip_classes=(0,), strip_rows=64)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.5 * peaks[0] and peaks[1] < array.size * 4  # the tall raster as int32


def test_min_area_merges_small_regions_into_neighbours_without_holes(tmp_path: Path) -> None:
    array = blobs(3, 200, 180, 3, 1.2, nodata=False)  # noisy: many regions of a few pixels
    tif = write_raster(tmp_path / "classes.tif", array)
    out = tmp_path / "out.gpkg"
    vectorize(tif, out, "whole", min_area_m2=1000.0, strip_rows=200)  # 10 pixels of 10 m × 10 m
    vectorize(tif, out, "strips", min_area_m2=1000.0, strip_rows=40)
    vectorize(tif, out, "raw")
    whole, strips = read(out, "whole"), read(out, "strips")
    assert len(whole) < len(read(out, "raw")) / 2
    expected = sieve(array, 10, connectivity=4)
    for df in (whole, strips):
        geoms = df.geometry.values
        assert_clean(geoms, 100.0)
        assert shapely.area(geoms).min() >= 1000.0 - 1e-6
        assert shapely.union_all(geoms).area == pytest.approx(array.size * 100.0)  # no holes
    for c, union in per_class_union(whole).items():
        assert union.area == pytest.approx((expected == c).sum() * 100.0)
    # Strips are sieved with a halo of rows, so small regions are measured whole (which of two
    # neighbours absorbs one could differ only if both were cut by the 64-row halo).
    for c, union in per_class_union(strips).items():
        assert shapely.symmetric_difference(union, per_class_union(whole)[c]).area == pytest.approx(0, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Real data


@pytest.fixture(scope="module")
def parcels(shared_data: Path, tmp_path_factory) -> dict:
    """Danish LPIS parcels rasterized on the grid of their Sentinel-2 image (EPSG:32632, 10 m):
    the three main crops are classes 1-3, other crops 4, no parcel 0."""
    folder = tmp_path_factory.mktemp("parcels")
    base = shared_data / "fields_denmark_s2"
    df = pyogrio.read_dataframe(base / "labels" / "marker2016_small.shp")
    crops = {"Vårbyg": 1, "Græs med kløver/lucerne": 2, "Silomajs": 3}
    df["class_id"] = [crops.get(c, 4) for c in df.Afgroede]
    with rasterio.open(base / "images" / "RGB_small.tif") as img:
        shape, transform, crs = img.shape, img.transform, img.crs.to_string()
    array = rasterize(zip(df.geometry, df.class_id), out_shape=shape, transform=transform, dtype="uint8")
    return {"array": array, "tif": write_raster(folder / "parcels.tif", array, crs, transform),
            "polygons": df, "image": base / "images" / "RGB_small.tif", "folder": folder}


def test_denmark_parcels(parcels, tmp_path: Path) -> None:
    array, out = parcels["array"], tmp_path / "parcels.gpkg"
    classes = [ClassInfo(0, "none", "#000000"), ClassInfo(1, "spring barley", "#e0c040"),
               ClassInfo(2, "grass-clover", "#40a040"), ClassInfo(3, "silage maize", "#c08020"),
               ClassInfo(4, "other crops", "#a0a0a0")]
    areas = vectorize(parcels["tif"], out, "all", classes=classes, simplify=1.0, min_area_m2=500.0, strip_rows=64)
    df = read(out, "all")
    assert_clean(df.geometry.values, 100.0)
    assert_no_gaps(df.geometry.values, parcels["tif"])
    assert df.class_name[df.class_id == 2].unique().tolist() == ["grass-clover"]
    assert df.area_m2.min() >= 0.5 * 500.0  # sieved at 5 pixels, then edges moved by up to a pixel
    # Ground area of the whole scene: UTM area over the squared scale factor (0.9996 near 9° E).
    assert sum(areas.values()) == pytest.approx(array.size * 100.0 / 0.9996**2, rel=2e-3)
    sieved = sieve(array, 5, connectivity=4)
    for c, area in areas.items():
        assert area == pytest.approx((sieved == c).sum() * 100.0 / 0.9996**2, rel=0.01)
    assert np.allclose(df.perimeter_m, shapely.length(df.geometry.values) / 0.9996, rtol=2e-3)

    # Background skipped: the parcels alone, their shared edges identical to the full cover's.
    fields = vectorize(parcels["tif"], out, "fields", skip_classes=(0,), simplify=1.0, min_area_m2=500.0,
                       strip_rows=64)
    assert fields == pytest.approx({c: a for c, a in areas.items() if c != 0})
    assert pyogrio.list_layers(out)[:, 0].tolist() == ["all", "fields"]
    kept = read(out, "fields")
    parcels_only = shapely.union_all(df.geometry.values[df.class_id.values != 0])
    assert shapely.union_all(kept.geometry.values).equals(parcels_only)


def test_area_in_metres_in_geographic_crs(parcels, tmp_path: Path) -> None:
    """The same parcels on an EPSG:4326 grid: areas come out in m², as on the UTM grid."""
    polygons = parcels["polygons"].to_crs("EPSG:4326")
    minx, miny, maxx, maxy = polygons.total_bounds
    transform = from_origin(minx, maxy, 1.5e-4, 0.9e-4)  # about 9.4 × 10 m at 56° N
    shape = (int(np.ceil((maxy - miny) / 0.9e-4)), int(np.ceil((maxx - minx) / 1.5e-4)))
    array = rasterize(zip(polygons.geometry, polygons.class_id), out_shape=shape, transform=transform,
                      dtype="uint8")
    tif = write_raster(tmp_path / "parcels_4326.tif", array, "EPSG:4326", transform)
    areas = vectorize(tif, tmp_path / "out.gpkg", skip_classes=(0,), strip_rows=50)
    utm = vectorize(parcels["tif"], tmp_path / "out.gpkg", "utm", skip_classes=(0,))
    for c in utm:
        assert areas[c] == pytest.approx(utm[c], rel=0.02)  # different pixels, same fields
    df = read(tmp_path / "out.gpkg", "refined")
    assert df.crs.to_epsg() == 4326 and shapely.area(df.geometry.values).sum() < 1.0  # degrees²
    geod = Geod(ellps="WGS84")
    for polygon, area in zip(df.geometry, df.area_m2):
        if not polygon.interiors:
            assert area == pytest.approx(abs(geod.polygon_area_perimeter(*polygon.exterior.xy)[0]))


def test_spacenet_buildings_in_web_mercator(shared_data: Path, tmp_path: Path) -> None:
    """SpaceNet 7 buildings on their EPSG:3857 image grid (38° N): area_m2 is the ground area,
    about cos²(38°) = 0.62 of the inflated Mercator area, and squared buildings stay clean."""
    base = shared_data / "georef_fixtures" / "gdl_spacenet"
    name = "SN7_global_monthly_2020_01_mosaic_L15-0331E-1257N_1327_3160_13_uint8_clipped"
    buildings = pyogrio.read_dataframe(base / "labels" / f"{name}.gpkg")
    with rasterio.open(base / "images" / f"{name}.tif") as img:
        array = rasterize(((g, 1) for g in buildings.geometry), out_shape=img.shape, transform=img.transform,
                          dtype="uint8")
        tif = write_raster(tmp_path / "buildings.tif", array, img.crs.to_string(), img.transform)
    out = tmp_path / "buildings.gpkg"
    areas = vectorize(tif, out, skip_classes=(0,), simplify=0.5, regularize_classes=(1,), strip_rows=20)
    df = read(out, "refined")
    assert_clean(df.geometry.values, 1.0)
    mercator = shapely.area(df.geometry.values).sum()
    lat = np.radians(37.967)
    assert areas[1] == pytest.approx(mercator * np.cos(lat) ** 2, rel=0.01)
    assert 25 <= len(df) <= len(buildings)  # touching buildings merge


# ---------------------------------------------------------------------------------------------
# Regularization


def corner_angles(polygon: shapely.Polygon) -> np.ndarray:
    ring = np.asarray(polygon.exterior.coords)[:-1]
    a, b = np.roll(ring, 1, axis=0) - ring, np.roll(ring, -1, axis=0) - ring
    return np.degrees(np.arccos(np.sum(a * b, axis=1) / np.hypot(*a.T) / np.hypot(*b.T)))


@pytest.mark.parametrize("angle", [0.0, 25.0, 62.0])
def test_regularized_building_has_right_angles(angle: float, tmp_path: Path) -> None:
    """A 30 m × 20 m building at 0.5 m resolution, rotated, its outline jittered by a pixel."""
    transform = from_origin(500000.0, 6000000.0, 0.5, 0.5)
    building = shapely.affinity.rotate(shapely.box(500012, 5999965, 500042, 5999985), angle)
    array = rasterize([(building, 1)], out_shape=(120, 120), transform=transform, dtype="uint8")
    rim = rasterize([(building.boundary.buffer(0.6), 1)], out_shape=array.shape, transform=transform,
                    dtype="uint8").astype(bool)
    array[rim & (np.random.default_rng(1).random(array.shape) < 0.15)] ^= 1
    tif = write_raster(tmp_path / "building.tif", array, transform=transform)
    out = tmp_path / "out.gpkg"
    vectorize(tif, out, "plain", skip_classes=(0,), simplify=1.0, min_area_m2=2.0)
    vectorize(tif, out, "square", skip_classes=(0,), simplify=1.0, min_area_m2=2.0, regularize_classes=(1,))
    plain, square = read(out, "plain").geometry.values[0], read(out, "square").geometry.values[0]
    assert np.abs(corner_angles(plain) - 90).max() > 20
    assert len(square.exterior.coords) == 5 and square.is_valid
    assert np.abs(corner_angles(square) - 90).max() < 3
    assert square.area == pytest.approx(building.area, rel=0.05)
    assert shapely.symmetric_difference(square, building).area < 0.1 * building.area


def test_regularize_squares_an_l_shape_and_keeps_what_it_cannot_square() -> None:
    ell = shapely.Polygon([(0, 0), (30, 0), (30, 10), (10, 10), (10, 25), (0, 25)])
    jittered = shapely.Polygon(np.asarray(ell.exterior.coords) + np.random.default_rng(0).normal(0, 0.3, (7, 2)))
    squared = regularize(jittered)
    assert len(squared.exterior.coords) == 7 and np.abs(corner_angles(squared) - 90).max() < 1e-6
    assert shapely.symmetric_difference(squared, ell).area < 0.08 * ell.area  # turned by ~1° at most
    triangle = shapely.Polygon([(0, 0), (10, 0), (5, 8)])
    assert regularize(triangle) is triangle


# ---------------------------------------------------------------------------------------------
# Changes layer


def test_changes_layer_has_the_expected_from_to_polygons(tmp_path: Path) -> None:
    coarse = np.array([[0, 0, 0, 0, 0, 0, 0, 0],
                       [0, 1, 1, 1, 1, 0, 0, 0],
                       [0, 1, 1, 1, 1, 0, 2, 2],
                       [0, 0, 0, 0, 0, 0, 2, 2],
                       [NODATA, 0, 0, 0, 0, 0, 0, 0]], np.uint8)
    refined = np.array([[0, 0, 0, 0, 0, 0, 0, 0],
                        [0, 1, 1, 1, 1, 1, 0, 0],   # building grew by one pixel: 0 → 1
                        [0, 1, 1, 0, 0, 0, 2, 1],   # 1 → 0 (2 px), 2 → 1 (1 px)
                        [1, 0, 0, 0, 0, 0, 2, 2],   # 0 → 1 next to the NoData pixel
                        [1, 0, 0, 0, 0, 0, 0, NODATA]], np.uint8)
    transform = from_origin(512000.0, 6245000.0, 2.0, 2.0)
    write_raster(tmp_path / "coarse.tif", coarse, transform=transform)
    write_raster(tmp_path / "refined.tif", refined, transform=transform)
    out = tmp_path / "out.gpkg"
    classes = [ClassInfo(0, "background", "#000000"), ClassInfo(1, "building", "#ff0000"),
               ClassInfo(2, "road", "#808080")]
    count = vectorize_changes(tmp_path / "refined.tif", tmp_path / "coarse.tif", out, classes=classes,
                              strip_rows=2)
    df = read(out, "changes").sort_values(["from_class", "to_class"]).reset_index(drop=True)
    assert count == len(df) == 4

    def cells(*rc: tuple[int, int]) -> shapely.Geometry:
        return shapely.union_all([shapely.box(512000 + 2 * c, 6245000 - 2 * r - 2, 512002 + 2 * c, 6245000 - 2 * r)
                                  for r, c in rc])
    expected = [(0, 1, cells((1, 5))), (0, 1, cells((3, 0))), (1, 0, cells((2, 3), (2, 4))), (2, 1, cells((2, 7)))]
    got = sorted(zip(df.from_class, df.to_class, df.geometry), key=lambda t: (t[0], t[1], t[2].bounds))
    for (f, t, geom), (ef, et, eg) in zip(got, sorted(expected, key=lambda t: (t[0], t[1], t[2].bounds))):
        assert (f, t) == (ef, et) and geom.equals(eg)
    assert df.from_name.tolist()[-1] == "road" and df.to_name.tolist()[-1] == "building"
    assert df.area_m2.sum() == pytest.approx(5 * 4.0, rel=2e-3)
    # Changes smaller than the minimum area are dropped, not merged.
    assert vectorize_changes(tmp_path / "refined.tif", tmp_path / "coarse.tif", out, "big", min_area_m2=6.0) == 1
    assert read(out, "big").to_class.tolist() == [0]


def test_changes_need_the_same_grid(tmp_path: Path) -> None:
    a = write_raster(tmp_path / "a.tif", np.zeros((10, 10), np.uint8))
    b = write_raster(tmp_path / "b.tif", np.zeros((10, 12), np.uint8))
    with pytest.raises(InputError, match="same grid"):
        vectorize_changes(a, b, tmp_path / "out.gpkg")


# ---------------------------------------------------------------------------------------------
# Progress, cancel, layers of an existing GeoPackage


def test_progress_cancel_and_other_layers_kept(tmp_path: Path) -> None:
    tif = write_raster(tmp_path / "classes.tif", blobs(5, 100, 80, 3, 3.0, nodata=False))
    out = tmp_path / "out.gpkg"
    reports: list[tuple[float, str]] = []
    vectorize(tif, out, "first", strip_rows=30, progress=lambda f, m: reports.append((f, m)))
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) == 4
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        vectorize(tif, out, "second", strip_rows=30, cancel=lambda: next(calls) >= 2)
    vectorize(tif, out, "third", strip_rows=30)
    layers = pyogrio.list_layers(out)[:, 0].tolist()
    assert "first" in layers and "third" in layers
    assert len(read(out, "first")) == len(read(out, "third"))


def test_bad_inputs(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.tif").write_text("not a raster")
    cases = {
        tmp_path / "missing.tif": "no such file",
        tmp_path / "notes.tif": "not a raster",
        write_raster(tmp_path / "float.tif", np.zeros((8, 8), np.float32)): "float32",
        write_raster(tmp_path / "nocrs.tif", np.zeros((8, 8), np.uint8), crs=None): "no coordinate reference",
    }
    for path, message in cases.items():
        with pytest.raises(InputError, match=message):
            vectorize(path, tmp_path / "out.gpkg")
        assert main(["vectorize", str(path), "--out", str(tmp_path / "out.gpkg")]) == 2
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["float.tif", "nocrs.tif", "notes.tif"]


# ---------------------------------------------------------------------------------------------
# Command line


def test_cli_writes_refuses_to_overwrite_and_leaves_nothing_on_failure(tmp_path: Path, monkeypatch) -> None:
    tif = write_raster(tmp_path / "classes.tif", blobs(11, 90, 120, 3, 3.0, nodata=True))
    out = tmp_path / "polygons.gpkg"
    args = ["vectorize", str(tif), "--out", str(out), "--layer", "classes", "--simplify", "1",
            "--min-area", "300", "--skip-classes", "0", "--regularize", "2"]
    assert main(args) == 0
    df = read(out, "classes")
    assert set(df.class_id) == {1, 2} and shapely.is_valid(df.geometry.values).all()
    before = out.read_bytes()
    assert main(args) == 2 and out.read_bytes() == before  # exists: refused
    assert main(args + ["--overwrite", "--simplify-units", "map", "--simplify", "5"]) == 0

    # A run cancelled half-way, with features already written, leaves no partial file behind.
    real, calls, seen = cli_vectorize.vectorize, iter(range(100)), []

    def cancel_third_strip() -> bool:
        seen.extend(p.name for p in tmp_path.iterdir() if "partial" in p.name)
        return next(calls) >= 2
    monkeypatch.setattr("idgbr.vectorize._LayerWriter.FLUSH_FEATURES", 1)
    monkeypatch.setattr(cli_vectorize, "vectorize",
                        lambda *a, **k: real(*a, **k, strip_rows=20, cancel=cancel_third_strip))
    assert main(["vectorize", str(tif), "--out", str(tmp_path / "cancelled.gpkg")]) == 130
    assert seen and sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif", "polygons.gpkg"]
