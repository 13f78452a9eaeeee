"""Refining on a real Dask cluster (2 worker processes on this machine) gives the in-process
result, also when a worker dies mid-run, and a cancelled run leaves nothing behind. The scene is
a real georeferenced orthophoto (a z19 mosaic of buildings_hot_oam, Kampala, 1024² px at 0.15 m)
with its OSM building polygons, cut into 16 blocks of 256² px so that blocks share many tiles."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely

import idgbr
from idgbr import Cancelled, InputError
from idgbr.xyz import build_xyz_mosaic, complete_z19_parents

distributed = pytest.importorskip("distributed")

# A deterministic refiner that uses the image (guided filter); tiles small enough to make blocks share them.
RUN = dict(model="guided", tile_size=256, overlap=0.25, block_size=256)
RASTERS = ("refined.tif", "confidence.tif")


@pytest.fixture(scope="module")
def scene(shared_data: Path, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("scene")
    area = shared_data / "buildings_hot_oam" / "area2"
    image, gpkg = folder / "ortho.tif", folder / "buildings.gpkg"
    build_xyz_mosaic(area, *complete_z19_parents(area)[0], image, gpkg)
    return {"image": image, "buildings": gpkg, "folder": folder}


def _refine(scene: dict[str, Path], out: Path, **kwargs):
    run = {**RUN, **kwargs}
    return idgbr.refine(scene["image"], scene["buildings"], run.pop("model"), out, **run)


@pytest.fixture(scope="module")
def reference(scene) -> idgbr.RefineResult:
    """The in-process run; its refined layer is the buildings' features (a polygon coarse layer)."""
    result = _refine(scene, scene["folder"] / "in_process")
    assert result.distributed is None and result.features is not None
    return result


@pytest.fixture(scope="module")
def cluster():
    """An existing cluster (reached by its address, as `tcp://host:port`), shared by the tests
    that need to see its workers."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c, \
            distributed.Client(c) as client:
        yield c, client


def _assert_same_layers(a_path: Path, b_path: Path, layers: dict[str, str]) -> None:
    """Layers (name in a: name in b) equal feature for feature: fids, order, every column (the
    input's attributes and ADDED_COLUMNS included) and geometries, vertex for vertex."""
    for a_layer, b_layer in layers.items():
        a = pyogrio.read_dataframe(a_path, layer=a_layer, fid_as_index=True)
        b = pyogrio.read_dataframe(b_path, layer=b_layer, fid_as_index=True)
        assert list(a.index) == list(b.index), f"layer {b_layer}: fids differ"
        assert a.drop(columns="geometry").equals(b.drop(columns="geometry")), f"layer {b_layer}: attributes differ"
        assert a.geometry.geom_equals_exact(b.geometry, tolerance=0).all(), f"layer {b_layer}: geometries differ"


def _assert_same_outputs(reference: Path, out: Path) -> None:
    for name in RASTERS:
        with rasterio.open(reference / name) as a, rasterio.open(out / name) as b:
            assert (a.transform, a.crs, a.nodata, a.profile["compress"], a.block_shapes) == \
                   (b.transform, b.crs, b.nodata, b.profile["compress"], b.block_shapes)
            assert a.colorinterp == b.colorinterp and a.tags(1) == b.tags(1)
            left, right = a.read(1), b.read(1)
            assert np.array_equal(left, right), f"{name} differs in {np.count_nonzero(left != right)} pixels"
    layers = ("refined", "removed", "new", "changes")
    assert sorted(pyogrio.list_layers(out / "refined.gpkg")[:, 0]) == sorted(layers)
    _assert_same_layers(reference / "refined.gpkg", out / "refined.gpkg", dict(zip(layers, layers)))
    assert len(pyogrio.read_dataframe(out / "refined.gpkg", layer="refined")) > 0


def test_local_cluster_gives_the_in_process_result(scene, reference, tmp_path) -> None:
    seen: list[str] = []
    result = _refine(scene, tmp_path / "out", scheduler="local:2", progress=lambda f, m: seen.append(m))
    stats = result.distributed
    assert stats.workers == 2 and stats.blocks == 16
    # Blocks recompute the tiles they share, and each worker process loaded the model once.
    assert stats.tile_computations > result.tiles + result.tiles_skipped
    assert len(stats.peak_rss_mb) == 2
    assert any(m.startswith("block 16/16") for m in seen) and any("ETA" in m for m in seen)
    assert "16 blocks of up to 256 px on 2 workers" in result.summary[-1]
    _assert_same_outputs(reference.out_dir, tmp_path / "out")
    assert result.features == reference.features
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["coarse.tif", "confidence.tif", "refined.gpkg",
                                                                   "refined.tif"]


def test_vectorizing_on_the_cluster_gives_the_in_process_polygons(reference, cluster, tmp_path) -> None:
    """The class and change polygons of the refined raster, polygonized in bands of 4 strips on the
    cluster's workers and merged across strip lines here, are the in-process ones: same features,
    same order, same geometries (sieving, coverage simplification and squaring included)."""
    from idgbr.distributed import DaskBands
    from idgbr.vectorize import vectorize, vectorize_changes

    _, client = cluster
    raster, coarse = reference.refined, reference.coarse
    out = tmp_path / "polygons.gpkg"
    with rasterio.open(raster) as src:
        width, height, to_pixels = src.width, src.height, ~src.transform
    classes = dict(skip_classes=(0,), simplify=1.0, min_area_m2=2.0, regularize_classes=(1,), strip_rows=64)
    settings = dict(min_area_m2=0.1, strip_rows=64)
    areas = vectorize(raster, out, "in_process", **classes)
    changes = vectorize_changes(raster, coarse, out, "changes_in_process", **settings)
    with distributed.get_task_stream(client) as stream:
        bands = DaskBands(client, 4 * 64 * width)
        assert vectorize(raster, out, "cluster", bands=bands, **classes) == areas
        assert vectorize_changes(raster, coarse, out, "changes_cluster", bands=bands, **settings) == changes > 0
    tasks = [t for t in stream.data if str(t["key"]).startswith("idgbr-vectorize-")]
    assert len(tasks) == 2 * height // 256 and len({t["worker"] for t in tasks}) == 2
    _assert_same_layers(out, out, {"in_process": "cluster", "changes_in_process": "changes_cluster"})
    for layer in ("in_process", "changes_in_process"):
        assert _crosses_band_lines(gpd.read_file(out, layer=layer), to_pixels, 256)
    # Cancelled after the first band: the layer is not written, no band is left running.
    seen: list[str] = []
    with pytest.raises(Cancelled):
        vectorize(raster, out, "cancelled", bands=bands, progress=lambda f, m: seen.append(m),
                  cancel=lambda: len(seen) >= 4, **classes)
    assert "cancelled" not in pyogrio.list_layers(out)[:, 0]
    _assert_idle(client)


def test_feature_layers_on_the_cluster_are_the_in_process_ones(scene, reference, cluster, tmp_path) -> None:
    """A polygon coarse layer's features (fids, attributes, ADDED_COLUMNS, geometries), the
    buildings it lacks (layer `new`) and those the refined map no longer has (`removed`), made in
    bands of 4 strips on the cluster's workers and merged across strip lines here, are the
    in-process ones, and so is the summary."""
    from scipy import ndimage

    from idgbr.distributed import DaskBands
    from idgbr.features import vectorize_features
    from idgbr.io.coarse import stage_coarse
    from idgbr.io.grid import Grid

    _, client = cluster
    with rasterio.open(reference.refined) as src:
        grid = Grid(src.crs, src.transform, src.width, src.height)
        background = src.read(1) == 0
    # The layer lacks every fifth building (found again: `new`) and has one more where the refined
    # map is farthest from any building (a demolished one: `removed`), and an attribute of its own.
    layer = pyogrio.read_dataframe(scene["buildings"], fid_as_index=True)
    row, col = np.unravel_index(np.argmax(ndimage.distance_transform_edt(background)), background.shape)
    x, y = grid.transform * (col + 0.5, row + 0.5)
    gone = gpd.GeoSeries([shapely.box(x - 2, y - 2, x + 2, y + 2)], crs=grid.crs).to_crs(layer.crs)
    extra = gpd.GeoDataFrame(layer.iloc[:1].drop(columns="geometry"), geometry=gone.values, crs=layer.crs)
    extra.index = [layer.index.max() + 1]
    layer = pd.concat([layer.drop(index=layer.index[::5]), extra])
    layer["owner"] = [f"owner {i} — ß" for i in range(len(layer))]
    layer.index.name = "fid"
    pyogrio.write_dataframe(layer.reset_index(), tmp_path / "layer.gpkg", layer="buildings")
    instances = tmp_path / "instances.tif"
    features = stage_coarse(tmp_path / "layer.gpkg", grid, tmp_path / "coarse.tif",
                            instances_path=instances).features
    settings = dict(skip_classes=(0,), simplify=1.0, min_area_m2=2.0, regularize_classes=(1,), strip_rows=64)
    summary = vectorize_features(reference.refined, instances, features, tmp_path / "in_process.gpkg", **settings)
    assert summary.statuses["removed"] == 1 and summary.new_polygons >= 2
    bands = DaskBands(client, 4 * 64 * grid.width)
    with distributed.get_task_stream(client) as stream:
        assert vectorize_features(reference.refined, instances, features, tmp_path / "cluster.gpkg", bands=bands,
                                  **settings) == summary
    tasks = [t for t in stream.data if str(t["key"]).startswith("idgbr-vectorize-")]
    assert len(tasks) == grid.height // 256 and len({t["worker"] for t in tasks}) == 2
    layers = ("refined", "removed", "new")
    _assert_same_layers(tmp_path / "in_process.gpkg", tmp_path / "cluster.gpkg", dict(zip(layers, layers)))
    refined = pyogrio.read_dataframe(tmp_path / "cluster.gpkg", layer="refined", fid_as_index=True)
    assert list(refined["owner"]) == list(layer.loc[refined.index, "owner"])
    assert _crosses_band_lines(refined.to_crs(grid.crs), ~grid.transform, 256)
    # Cancelled after the first band: nothing is written, no band is left running.
    seen: list[str] = []
    with pytest.raises(Cancelled):
        vectorize_features(reference.refined, instances, features, tmp_path / "cancelled.gpkg", bands=bands,
                           progress=lambda f, m: seen.append(m), cancel=lambda: len(seen) >= 4, **settings)
    assert not (tmp_path / "cancelled.gpkg").exists()
    _assert_idle(client)


def _crosses_band_lines(frame: gpd.GeoDataFrame, to_pixels, band_rows: int) -> bool:
    """Whether a polygon spans a line between bands: it was merged there from two bands."""
    top, bottom = (np.array([(to_pixels * (0, y))[1] for y in frame.bounds[k]]) for k in ("maxy", "miny"))
    return bool((np.floor(top / band_rows) < np.floor((bottom - 1) / band_rows)).any())


def _assert_idle(client) -> None:
    """No task left running on the cluster (cancelled bands end)."""
    deadline = time.monotonic() + 30
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(client.processing().values())


def test_a_worker_killed_mid_run_changes_nothing(scene, reference, cluster, tmp_path) -> None:
    local, client = cluster
    before = set(client.run(os.getpid).values())
    killed: list[int] = []

    def progress(fraction: float, message: str) -> None:
        # After the first block, kill (SIGKILL) a worker process that is computing a block.
        if message.startswith("block 1/") and not killed:
            busy = [address for address, keys in client.processing().items() if keys]
            pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    _refine(scene, tmp_path / "out", scheduler=local.scheduler_address, progress=progress)
    assert killed and killed[0] in before
    client.wait_for_workers(2, timeout=60)
    assert killed[0] not in client.run(os.getpid).values()  # the nanny started a new worker process
    _assert_same_outputs(reference.out_dir, tmp_path / "out")


def test_cancel_mid_run_leaves_nothing(scene, cluster, tmp_path) -> None:
    local, client = cluster
    seen: list[str] = []
    out = tmp_path / "out"
    with pytest.raises(Cancelled):
        _refine(scene, out, scheduler=local.scheduler_address, progress=lambda f, m: seen.append(m),
                cancel=lambda: any(m.startswith("block 2/") for m in seen))
    assert not out.exists()
    # Blocks that were running when the run was cancelled end without writing anything.
    deadline = time.monotonic() + 60
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not out.exists()
    # An existing output folder keeps only what was there.
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    seen.clear()
    with pytest.raises(Cancelled):
        _refine(scene, out, scheduler=local.scheduler_address, progress=lambda f, m: seen.append(m),
                cancel=lambda: any(m.startswith("block 1/") for m in seen))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("spec, problem", [("local:0", "1 to 256"), ("local", "local:N"),
                                           ("http://host:8786", "tcp://host:8786")])
def test_bad_scheduler_is_refused_before_anything_runs(scene, tmp_path, spec, problem) -> None:
    with pytest.raises(InputError, match=problem):
        _refine(scene, tmp_path / "out", scheduler=spec)
    assert not (tmp_path / "out").exists()


def test_block_size_must_align_with_output_tiles(scene, tmp_path) -> None:
    with pytest.raises(InputError, match="multiple of 256"):
        _refine(scene, tmp_path / "out", scheduler="local:1", block_size=1000)
    assert not (tmp_path / "out").exists()


def test_runs_without_a_scheduler_do_not_import_dask() -> None:
    """Plain runs do not pay for Dask: the engine's pipeline (distributed.py included) and the
    command line load without it."""
    code = ("import sys, idgbr.pipeline, idgbr.cli\n"
            "idgbr.cli.build_parser().parse_args(['refine', 'x.tif', '--out', 'o', '--scheduler', 'local:2'])\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'dask', 'distributed'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(Path(idgbr.__file__).parents[1])})
    assert done.stdout.strip() == "[]"


def test_a_diffusion_refiner_on_the_cluster_gives_the_in_process_result(scene, cluster, tmp_path) -> None:
    """The shipped diffusion refiner draws noise; it is seeded per tile position, so blocks that
    batch and order tiles differently still give the in-process run's numbers."""
    local, _ = cluster
    run = dict(model="buildings-diffusion", block_size=512, tile_size=256, overlap=0.25)
    idgbr.refine(scene["image"], scene["buildings"], out_dir=tmp_path / "in", **run)
    idgbr.refine(scene["image"], scene["buildings"], out_dir=tmp_path / "dask", scheduler=local.scheduler_address, **run)
    for name in RASTERS:
        with rasterio.open(tmp_path / "in" / name) as a, rasterio.open(tmp_path / "dask" / name) as b:
            left, right = a.read(1), b.read(1)
            assert np.array_equal(left, right), f"{name} differs in {np.count_nonzero(left != right)} pixels"
