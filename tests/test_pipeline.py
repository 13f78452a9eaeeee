"""The refine pipeline end to end on a real georeferenced orthophoto (a z19 mosaic of
buildings_hot_oam, Kampala) with its OSM building polygons."""
from __future__ import annotations

import json
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.features import rasterize
from rasterio.warp import calculate_default_transform, reproject, Resampling

import idgbr
from idgbr import Cancelled, InputError
from idgbr.xyz import build_xyz_mosaic, complete_z19_parents


@pytest.fixture(scope="module")
def scene(shared_data: Path, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("scene")
    area = shared_data / "buildings_hot_oam" / "area2"
    x19, y19 = complete_z19_parents(area)[0]
    image, gpkg = folder / "ortho.tif", folder / "buildings.gpkg"
    build_xyz_mosaic(area, x19, y19, image, gpkg)
    return {"image": image, "buildings": gpkg, "folder": folder}


def _truth(image: Path, gpkg: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rasterized polygons on the image grid, and the polygons' bounding-box mask."""
    with rasterio.open(image) as ds:
        df = gpd.read_file(gpkg).to_crs(ds.crs)
        truth = rasterize(((g, 1) for g in df.geometry), out_shape=ds.shape, transform=ds.transform, fill=0,
                          dtype="uint8")
        minx, miny, maxx, maxy = df.total_bounds
        rows, cols = np.mgrid[0:ds.height, 0:ds.width]
        xs, ys = rasterio.transform.xy(ds.transform, rows.ravel(), cols.ravel())
        inside = ((np.array(xs) > minx) & (np.array(xs) < maxx) & (np.array(ys) > miny)
                  & (np.array(ys) < maxy)).reshape(ds.shape)
    return truth, inside


def test_identity_from_vector_layer_reproduces_polygons_on_image_grid(scene, tmp_path) -> None:
    out = tmp_path / "out"
    result = idgbr.refine(scene["image"], scene["buildings"], "identity", out, tile_size=256, overlap=0.25)
    with rasterio.open(scene["image"]) as img, rasterio.open(result.refined) as ref:
        # Only where the layer and the image overlap is refined: a window of the image grid.
        assert ref.crs == img.crs and ref.res == img.res
        col, row = ~img.transform * (ref.transform.c, ref.transform.f)
        assert col == pytest.approx(round(col), abs=1e-6) and row == pytest.approx(round(row), abs=1e-6)
        window = rasterio.windows.Window(round(col), round(row), ref.width, ref.height)
        assert ref.width * ref.height < img.width * img.height
        refined = ref.read(1)
        assert ref.nodata == 255 and ref.colormap(1)[1][:3] != ref.colormap(1)[0][:3]
    truth, inside = (a[window.toslices()] for a in _truth(scene["image"], scene["buildings"]))
    assert inside.mean() > 0.9  # the window is the layer's extent, to the pixel
    # Inside the polygons' extent, the classes are the rasterized polygons, pixel for pixel
    # (one-pixel rim of the extent excluded: pixel-centre vs bounding-box rounding).
    core = inside & np.roll(inside, 1, 0) & np.roll(inside, -1, 0) & np.roll(inside, 1, 1) & np.roll(inside, -1, 1)
    assert np.array_equal(refined[core], truth[core])
    assert {p.name for p in out.iterdir()} == {"refined.tif", "confidence.tif", "coarse.tif", "refined.gpkg"}
    layers = gpd.list_layers(result.vectors)["name"].tolist()
    assert {"refined", "changes"} <= set(layers)
    polys = gpd.read_file(result.vectors, layer="refined")
    assert set(polys["class_id"]) == {1} and polys.is_valid.all()
    assert len(gpd.read_file(result.vectors, layer="changes")) == 0  # identity changes nothing
    # Web Mercator pixels shrink by cos(latitude) on the ground (Kampala: 0.35° N).
    with rasterio.open(scene["image"]) as ds:
        pixel_m2 = abs(ds.res[0] * ds.res[1]) * np.cos(np.radians(0.35)) ** 2
    assert result.class_areas_m2["class 1"] == pytest.approx(truth[core].sum() * pixel_m2, rel=0.01)
    with rasterio.open(result.confidence) as conf:
        c = conf.read(1)
        assert np.allclose(c[core], 1.0)
    assert any("where the coarse layer and the image overlap" in line for line in result.summary)


def test_coarse_raster_in_other_crs_and_resolution_matches_aligned(scene, tmp_path) -> None:
    aligned = idgbr.refine(scene["image"], scene["buildings"], "identity", tmp_path / "a", tile_size=256)
    with rasterio.open(aligned.coarse) as ds:
        src, src_profile = ds.read(1), ds.profile
    # The same classes as a UTM 36N raster at 0.05 m (3x finer), written by GDAL's warper.
    dst_crs = "EPSG:32636"
    transform, w, h = calculate_default_transform(src_profile["crs"], dst_crs, src.shape[1], src.shape[0],
                                                  *rasterio.transform.array_bounds(*src.shape, src_profile["transform"]),
                                                  resolution=0.05)
    utm = np.full((h, w), 255, np.uint8)
    reproject(src, utm, src_transform=src_profile["transform"], src_crs=src_profile["crs"], src_nodata=255,
              dst_transform=transform, dst_crs=dst_crs, dst_nodata=255, resampling=Resampling.nearest)
    coarse_utm = tmp_path / "coarse_utm.tif"
    with rasterio.open(coarse_utm, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8", crs=dst_crs,
                       transform=transform, nodata=255) as dst:
        dst.write(utm, 1)
    other = idgbr.refine(scene["image"], coarse_utm, "identity", tmp_path / "b", tile_size=256)
    ra, rb = _on_image_grid(aligned.refined, scene["image"]), _on_image_grid(other.refined, scene["image"])
    both = (ra != 255) & (rb != 255)
    assert both.sum() > 0.95 * (ra != 255).sum()
    assert (ra[both] == rb[both]).mean() > 0.995  # differences only where resampling rounds an edge


def _on_image_grid(path: Path, image: Path) -> np.ndarray:
    """An output (a window of the image grid: same CRS and resolution) placed on the whole image
    grid, NoData (255) around it."""
    with rasterio.open(image) as img, rasterio.open(path) as out:
        assert out.crs == img.crs and out.res == img.res
        col, row = (round(v) for v in ~img.transform * (out.transform.c, out.transform.f))
        full = np.full(img.shape, 255, np.uint8)
        full[row:row + out.height, col:col + out.width] = out.read(1)
    return full


def test_image_nodata_and_aoi_polygon_are_respected(scene, tmp_path) -> None:
    with rasterio.open(scene["image"]) as ds:
        profile, data = ds.profile, ds.read()
    data[:, :, :300] = 0  # a collar of NoData on the left
    image = tmp_path / "collar.tif"
    profile.update(nodata=0)
    with rasterio.open(image, "w", **profile) as dst:
        dst.write(data)
        bounds, crs = dst.bounds, dst.crs
    cx, cy = (bounds.left + bounds.right) / 2, (bounds.bottom + bounds.top) / 2
    aoi = gpd.GeoDataFrame(geometry=gpd.points_from_xy([cx], [cy]).buffer(50.0), crs=crs)
    aoi.to_file(tmp_path / "aoi.gpkg")
    result = idgbr.refine(image, scene["buildings"], "identity", tmp_path / "out", aoi=tmp_path / "aoi.gpkg",
                          tile_size=128)
    with rasterio.open(result.refined) as ref:
        refined = ref.read(1)
        # The output is the AOI's window of the image grid: same resolution, aligned.
        assert ref.res == pytest.approx(rasterio.open(image).res)
        left_px = int(round((bounds.left + 300 * ref.res[0] - ref.bounds.left) / ref.res[0]))
        yy, xx = np.mgrid[0:ref.height, 0:ref.width]
        px, py = rasterio.transform.xy(ref.transform, yy.ravel(), xx.ravel())
    outside_circle = (np.hypot(np.array(px) - cx, np.array(py) - cy) > 50.5).reshape(refined.shape)
    assert (refined[outside_circle] == 255).all()
    if left_px > 0:
        assert (refined[:, :left_px - 1] == 255).all()
    assert (refined != 255).mean() > 0.3


def test_cancel_leaves_nothing(scene, tmp_path) -> None:
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    out = tmp_path / "out"
    with pytest.raises(Cancelled):
        idgbr.refine(scene["image"], scene["buildings"], "identity", out, tile_size=128, cancel=cancel)
    assert not out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    calls["n"] = 0
    with pytest.raises(Cancelled):
        idgbr.refine(scene["image"], scene["buildings"], "identity", existing, tile_size=128, cancel=cancel)
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]


def test_progress_reports_tiles_and_finishes(scene, tmp_path) -> None:
    seen: list[tuple[float, str]] = []
    idgbr.refine(scene["image"], scene["buildings"], "identity", tmp_path / "o", tile_size=256,
                 progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(m.startswith("tile 25/25") for _, m in seen)


def _two_class_model(tmp_path: Path) -> Path:
    folder = tmp_path / "two_class"
    folder.mkdir()
    (folder / "model_card.json").write_text(json.dumps({
        "name": "two_class", "refiner": "identity",
        "classes": [{"id": 0, "name": "background", "color": "#000000"},
                    {"id": 1, "name": "building", "color": "#ff0000"}]}))
    return folder


def _no_crs_tif(path: Path) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=3, dtype="uint8") as dst:
        dst.write(np.zeros((3, 8, 8), np.uint8))
    return path


def _far_away_raster(path: Path) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8", crs="EPSG:32633",
                       transform=rasterio.transform.from_origin(400000, 5000000, 1, 1)) as dst:
        dst.write(np.ones((1, 8, 8), np.uint8))
    return path


def _class_three(scene, path: Path) -> Path:
    df = gpd.read_file(scene["buildings"])
    df["cls"] = 3
    df.to_file(path)
    return path


BAD_INPUTS = {
    "missing image": (lambda s, t: dict(image=t / "nope.tif"), "does not exist"),
    "image not a raster": (lambda s, t: dict(image=(t / "x.tif").write_text("hello") and t / "x.tif"),
                           "not a raster"),
    "image without CRS": (lambda s, t: dict(image=_no_crs_tif(t / "nocrs.tif")), "no coordinate reference system"),
    "coarse missing": (lambda s, t: dict(coarse=t / "gone.gpkg"), "does not exist"),
    "layers do not overlap": (lambda s, t: dict(coarse=_far_away_raster(t / "far.tif")), "does not overlap"),
    "AOI outside the image": (lambda s, t: dict(aoi="0,0,10,10"), "outside the image"),
    "zero-size AOI": (lambda s, t: dict(aoi="3629000,39000,3629000,39100"), "zero size"),
    "class id out of range": (lambda s, t: dict(coarse=_class_three(s, t / "c3.gpkg"), class_field="cls",
                                                model=_two_class_model(t)), "outside the model's range 0..1"),
    "vector without the field": (lambda s, t: dict(class_field="klasse"), "has no field 'klasse'"),
    "output folder is a file": (lambda s, t: dict(out_dir=(t / "f").write_text("x") and t / "f"), "is a file"),
    "output folder not writable": (lambda s, t: dict(out_dir=Path("/proc/idgbr-out")), "not writable"),
    "unknown model": (lambda s, t: dict(model="no-such-model"), "unknown model"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_clear_error_and_writes_nothing(case: str, scene, tmp_path) -> None:
    make, message = BAD_INPUTS[case]
    work = tmp_path / "work"
    work.mkdir()
    kwargs = dict(image=scene["image"], coarse=scene["buildings"], model="identity", out_dir=work / "out")
    kwargs.update(make(scene, work))
    before = sorted(p.name for p in work.iterdir())
    with pytest.raises(InputError, match=message):
        idgbr.refine(tile_size=256, **kwargs)
    assert sorted(p.name for p in work.iterdir()) == before
    assert not (work / "out").exists()


def test_existing_results_are_refused_unless_overwrite(scene, tmp_path) -> None:
    out = tmp_path / "out"
    idgbr.refine(scene["image"], scene["buildings"], "identity", out, tile_size=256)
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(InputError, match="already holds results"):
        idgbr.refine(scene["image"], scene["buildings"], "identity", out, tile_size=256)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamp
    idgbr.refine(scene["image"], scene["buildings"], "identity", out, tile_size=256, overwrite=True, preview=True)
    assert (out / "preview.png").is_file() and not any(p.name.startswith(".idgbr") for p in out.iterdir())


def test_cli_refine_and_models_list(scene, tmp_path) -> None:
    import subprocess
    import sys

    idgbr_cli = Path(sys.executable).with_name("idgbr")
    done = subprocess.run([str(idgbr_cli), "refine", str(scene["image"]), "--coarse", str(scene["buildings"]),
                           "--out", str(tmp_path / "cli"), "--tile-size", "256", "--preview"],
                          capture_output=True, text=True, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0, done.stderr
    assert "refined 25 tiles" in done.stdout and (tmp_path / "cli" / "preview.png").is_file()
    bad = subprocess.run([str(idgbr_cli), "refine", str(scene["image"]), "--coarse", str(tmp_path / "no.gpkg"),
                          "--out", str(tmp_path / "cli2")], capture_output=True, text=True)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and not (tmp_path / "cli2").exists()
    listed = subprocess.run([str(idgbr_cli), "models", "list"], capture_output=True, text=True)
    assert listed.returncode == 0 and "identity" in listed.stdout


def test_the_previews_refined_panel_leaves_out_regions_under_the_minimum_mapping_unit(scene, tmp_path) -> None:
    """Specks of a few pixels in refined.tif are merged away in the preview, as the vectorizer
    merges them away in the feature layers; without a minimum mapping unit they are drawn."""
    from PIL import Image
    from scipy import ndimage

    from idgbr.io.image import ImageReader
    from idgbr.preview import before_after

    out = tmp_path / "out"
    result = idgbr.refine(scene["image"], scene["buildings"], "identity", out, tile_size=256)
    specked = tmp_path / "specked.tif"
    with rasterio.open(result.refined) as src:
        profile, labels, bounds = src.profile, src.read(1), src.bounds
    clear = ndimage.minimum_filter(labels == 0, size=24, mode="constant")  # 8x8 specks touching nothing
    free = np.argwhere(clear)
    for r, c in free[np.linspace(0, len(free) - 1, 40).astype(int)]:
        labels[r - 4:r + 4, c - 4:c + 4] = 1
    with rasterio.open(specked, "w", **profile) as dst:
        dst.write(labels, 1)
    with rasterio.open(scene["image"]) as image:  # the outputs cover the part of the image the layer covers
        window = rasterio.windows.from_bounds(*bounds, transform=image.transform).round_offsets().round_lengths()
    assert (window.height, window.width) == labels.shape
    reader = ImageReader.open(scene["image"], None, window)
    pngs = {}
    for name, refined, mmu in (("plain", result.refined, 0), ("specked", specked, 0),
                               ("plain-sieved", result.refined, 400), ("specked-sieved", specked, 400)):
        before_after(reader, window, result.coarse, refined, result.classes, tmp_path / f"{name}.png", mmu)
        pngs[name] = np.asarray(Image.open(tmp_path / f"{name}.png"))
    reader.ds.close()
    assert not np.array_equal(pngs["plain"], pngs["specked"])
    np.testing.assert_array_equal(pngs["plain-sieved"], pngs["specked-sieved"])
