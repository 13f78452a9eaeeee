"""Hardening (issue 14): every bad input and fault gets a named error and leaves nothing behind;
the traps of the defaults are guarded. Real files throughout: a 256² crop of the bundled NAIP
sample and its field layer, truncated GeoTIFFs, a real tmpfs for disk-full, real SIGTERM.
docs/reliability.md lists these cases with what the user sees."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.shutil
import shapely
from rasterio.features import rasterize
from rasterio.windows import Window

import idgbr
from idgbr import InputError, OutputError
from idgbr.eta import RunClock
from idgbr.io.aoi import parse_aoi
from idgbr.io.outputs import STAGING_PREFIX

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "sample"
ENGINE = REPO / "engine"
ENV = {**os.environ, "PYTHONPATH": f"{ENGINE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, Path]:
    """A 256² crop of the sample orthophoto (tiled, deflate), the field layer, and the field
    classes rasterized on the crop's grid."""
    folder = tmp_path_factory.mktemp("small")
    with rasterio.open(SAMPLE / "image.tif") as src:
        window = Window(384, 384, 256, 256)
        data = src.read(window=window)
        profile = dict(driver="GTiff", width=256, height=256, count=3, dtype="uint8", crs=src.crs,
                       transform=src.window_transform(window), tiled=True, blockxsize=64, blockysize=64,
                       compress="deflate")
    image = folder / "image.tif"
    with rasterio.open(image, "w", **profile) as dst:
        dst.write(data)
    fields = gpd.read_file(SAMPLE / "coarse.gpkg")
    classes = rasterize(((g, 1) for g in fields.geometry), out_shape=(256, 256), transform=profile["transform"],
                        dtype="uint8")
    raster = folder / "classes.tif"
    with rasterio.open(raster, "w", **{**profile, "count": 1, "nodata": 255}) as dst:
        dst.write(classes, 1)
    return {"image": image, "coarse": SAMPLE / "coarse.gpkg", "raster": raster, "folder": folder}


def _run(small: dict[str, Path], out: Path, **kwargs) -> idgbr.RefineResult:
    args = dict(image=small["image"], coarse=small["coarse"], model="identity", out_dir=out, tile_size=256)
    args.update(kwargs)
    return idgbr.refine(**args)


def _refused(small, tmp_path: Path, error: type = InputError, match: str = "", **kwargs) -> None:
    """The run raises `error` matching `match`, and `tmp_path/work` holds what it held before."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    before = sorted(p.name for p in work.rglob("*"))
    with pytest.raises(error, match=match):
        _run(small, kwargs.pop("out_dir", work / "out"), **kwargs)
    assert sorted(p.name for p in work.rglob("*")) == before


def _truncated(source: Path, path: Path, keep: float | int) -> Path:
    """A cloud-optimised copy of `source` (header first, then the pixels) cut after `keep` bytes
    (an int) or that share of its size (a float): an interrupted download."""
    full = path.with_suffix(".full.tif")
    rasterio.shutil.copy(source, full, driver="COG", compress="deflate", blocksize=64)
    data = full.read_bytes()
    path.write_bytes(data[:keep if isinstance(keep, int) else int(len(data) * keep)])
    full.unlink()
    return path


# --- 1, 5: corrupt files are named errors, through the API too -------------------------------------

@pytest.mark.parametrize("which", ["image", "raster"])
@pytest.mark.parametrize("keep", [0.6, 300])
def test_truncated_geotiff_is_a_named_error(which: str, keep, small, tmp_path) -> None:
    bad = _truncated(small[which], tmp_path / "work" / f"cut_{which}.tif", keep) if (tmp_path / "work").mkdir() \
        is None else None
    kwargs = {"image": bad} if which == "image" else {"coarse": bad}
    _refused(small, tmp_path, match=rf"{bad.name} (is damaged or truncated|is (neither a raster nor a vector|not a "
                                    "raster))", **kwargs)


def test_corrupt_vector_layer_and_missing_layer_name_are_named_errors(small, tmp_path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    cut = work / "cut.gpkg"
    cut.write_bytes((SAMPLE / "coarse.gpkg").read_bytes()[:20000])  # a truncated SQLite file
    _refused(small, tmp_path, match="cut.gpkg", coarse=cut)
    two = work / "two.gpkg"
    fields = gpd.read_file(SAMPLE / "coarse.gpkg")
    fields.to_file(two, layer="fields")
    fields.to_file(two, layer="other")
    _refused(small, tmp_path, match=r"has no layer 'nope' \(its layers: fields, other\)", coarse=f"{two}|layername=nope")
    _refused(small, tmp_path, match=r"several layers \(fields, other\).*layername=NAME", coarse=two)


# --- 3, 4: models: a coarse segmentor as refiner, no weights, pickled weights ------------------------

def test_coarse_segmentor_as_model_says_how_to_use_it(small, tmp_path) -> None:
    _refused(small, tmp_path, match=r"'coarse-farmland' is a coarse segmentor.*--coarse-model.*installed refiners: "
                                    r".*identity", model="coarse-farmland")


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("role", ["coarse segmentor", "refiner"])
def test_model_folder_without_safetensors_weights_is_refused(role: str, small, tmp_path) -> None:
    src = REPO / "resources" / "models" / "coarse-farmland"
    folder = tmp_path / "model"
    folder.mkdir()
    card = json.loads((src / "model_card.json").read_text())
    if role == "refiner":
        card.update(name="diffusion", refiner="idgbr", task="farmland refinement")
    (folder / "model_card.json").write_text(json.dumps(card))
    shutil.copy(src / "config.json", folder / "config.json")
    kwargs = {"coarse": None, "coarse_model": folder} if role == "coarse segmentor" else {"model": folder}
    _refused(small, tmp_path, match=r"has no weights \(no \*\.safetensors", **kwargs)
    marker = tmp_path / "code-ran"
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump(_Payload(marker), f)
    _refused(small, tmp_path, match=r"pickle \(pytorch_model\.bin\).*only safetensors", **kwargs)
    assert not marker.exists()  # the pickle was never opened


# --- 6, 11: ranges and areas of interest ---------------------------------------------------------

@pytest.mark.parametrize("setting, value, message", [
    ("overlap", 0.99, r"--overlap must be between 0 and 0\.9"),
    ("tile_size", 100000, r"--tile-size must be between 32 and 4096"),
    ("tile_size", 0, r"--tile-size must be between 32 and 4096"),
    ("batch_size", 0, r"--batch-size must be between 1 and 256"),
    ("simplify", -1.0, r"--simplify must be at least 0"),
])
def test_settings_out_of_range_are_refused_with_the_range(setting, value, message, small, tmp_path) -> None:
    _refused(small, tmp_path, match=message, **{setting: value})


def test_aoi_messages_give_the_image_bounds_and_a_lonlat_box_needs_aoi_crs(small, tmp_path) -> None:
    with rasterio.open(small["image"]) as ds:
        crs, transform, bounds = ds.crs, ds.transform, ds.bounds
    _refused(small, tmp_path, match=r"minx is larger than maxx.*minx,miny,maxx,maxy",
             aoi=f"{bounds.right},{bounds.bottom},{bounds.left},{bounds.top}")
    lon, lat = -83.617, 43.3076
    box = f"{lon - 0.001},{lat - 0.001},{lon + 0.001},{lat + 0.001}"
    _refused(small, tmp_path, match=rf"lies outside the image, which covers {bounds.left:.8g}, .* in EPSG:32617; the "
                                    r"box looks like longitude/latitude: add --aoi-crs EPSG:4326", aoi=box)
    # A box smaller than a pixel, inside the image: that pixel.
    x, y = transform * (10.3, 20.6)
    window, _ = parse_aoi(f"{x},{y - 0.2},{x + 0.2},{y}", crs, transform, 256, 256)
    assert (window.col_off, window.row_off, window.width, window.height) == (10, 20, 1, 1)
    # The same lon/lat box with its CRS: refined where it lies (the sample's centre).
    result = _run(small, tmp_path / "lonlat", aoi=box, aoi_crs="EPSG:4326")
    with rasterio.open(result.refined) as ref:
        assert 0 < ref.width * ref.height < 256 * 256 and ref.crs == crs


# --- 7: only where the coarse layer and the image overlap ---------------------------------------

def test_only_the_overlap_of_coarse_layer_and_image_is_processed(small, tmp_path) -> None:
    with rasterio.open(SAMPLE / "image.tif") as ds:
        left, top = ds.bounds.left, ds.bounds.top
    corner = gpd.GeoDataFrame({"class_id": [1]}, geometry=[shapely.box(left + 100, top - 150, left + 160, top - 100)],
                              crs="EPSG:32617")
    corner.to_file(tmp_path / "corner.gpkg")
    result = idgbr.refine(SAMPLE / "image.tif", tmp_path / "corner.gpkg", "identity", tmp_path / "out",
                          class_field="class_id")
    with rasterio.open(result.refined) as ref:
        assert (ref.width, ref.height) == (60, 50) and ref.bounds.left == left + 100
    assert result.tiles == 1
    assert any("60 × 50 px where the coarse layer and the image overlap (the image is 1,024 × 1,024 px" in line
               for line in result.summary)
    # A raster layer: its valid data, not its NoData margin, sets the area.
    with rasterio.open(small["raster"]) as src:
        profile, data = src.profile, src.read(1)
    data[:, :200] = 255
    with rasterio.open(tmp_path / "margin.tif", "w", **profile) as dst:
        dst.write(data, 1)
    result = _run(small, tmp_path / "raster", coarse=tmp_path / "margin.tif")
    with rasterio.open(result.refined) as ref:
        assert ref.height == 256 and 56 <= ref.width <= 56 + 2 * 4  # one decimated block of margin at most


# --- 2: disk full ---------------------------------------------------------------------------------

DISK_FULL = r"""
import sys
from pathlib import Path
import idgbr
mount, small = Path(sys.argv[1]), Path(sys.argv[2])
filled = []
def fill(fraction, message):  # the disk fills up while the run writes (another program, say)
    if message.startswith("tile") and not filled:
        with open(mount / "other.bin", "wb") as f:
            try:
                while True:
                    f.write(b"x" * 65536)
                    f.flush()
            except OSError:
                pass
        filled.append(1)
try:
    idgbr.refine(small / "image.tif", small / "classes.tif", "identity", mount / "a" / "out", tile_size=64,
                 progress=fill)
except idgbr.OutputError as e:
    print("OutputError:", e)
try:
    idgbr.refine(small / "image.tif", small / "classes.tif", "identity", mount / "b" / "out", tile_size=64)
except idgbr.OutputError as e:
    print("OutputError:", e)
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare to mount a private tmpfs")
def test_disk_full_is_a_named_error_and_leaves_nothing(small, tmp_path) -> None:
    mount = tmp_path / "mnt"
    mount.mkdir()
    script = tmp_path / "disk_full.py"
    script.write_text(DISK_FULL)
    probe = subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.strip()}")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=600k tmpfs "{mount}" && '
                           f'"{sys.executable}" "{script}" "{mount}" "{small["folder"]}" && ls -A "{mount}"'],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # While writing: the disk filled up, said as such; the folders the run made are gone.
    assert lines[0].startswith("OutputError: writing the results to ") and "no space left on the disk" in lines[0]
    # Before starting: the outputs' estimate does not fit in what is left, with the figures.
    assert lines[1].startswith("OutputError: not enough free space") and "they need about" in lines[1] \
        and "MB free" in lines[1]
    assert lines[2:] == ["other.bin"]


# --- 8, 9: SIGTERM, stale staging folders, created folders ------------------------------------------

@pytest.mark.parametrize("sig, code, said", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "cancelled")])
def test_sigterm_cleans_up_like_ctrl_c(sig, code, said, tmp_path) -> None:
    out = tmp_path / "new" / "out"
    run = subprocess.Popen([sys.executable, "-m", "idgbr", "refine", str(SAMPLE / "image.tif"), "--coarse",
                            str(SAMPLE / "coarse.gpkg"), "--model", "identity", "--out", str(out), "--tile-size",
                            "64"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                           # as in a terminal: a shell's background job (CI scripts, `cmd &`) ignores SIGINT
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300  # a loaded machine can take long to import
    while not (out.is_dir() and any(out.glob(f"{STAGING_PREFIX}*/refined.tif"))) and run.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run.poll() is None, "the run ended before it could be interrupted"
    run.send_signal(sig)
    _, err = run.communicate(timeout=60)
    assert run.returncode == code and f"{said}, nothing written" in err
    assert not (tmp_path / "new").exists()  # the run made new/ and new/out: both gone


def test_stale_staging_of_dead_runs_is_removed_and_parents_made_by_a_failed_run_too(small, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    stale = out / f"{STAGING_PREFIX}{dead.pid}@{host}.abc123"
    alive = out / f"{STAGING_PREFIX}{os.getpid()}@{host}.def456"
    other_host = out / f"{STAGING_PREFIX}{dead.pid}@elsewhere.ghi789"
    for folder in (stale, alive, other_host):
        folder.mkdir()
        (folder / "refined.tif").write_bytes(b"half")
    _run(small, out)
    assert not stale.exists() and alive.exists() and other_host.exists()
    # A run that fails removes every folder it made, not only the last one.
    with pytest.raises(InputError, match="outside the model's range"):
        _run(small, tmp_path / "a" / "b" / "out", model=_two_class_model(tmp_path), coarse=_class_three(small, tmp_path))
    assert not (tmp_path / "a").exists()


def _two_class_model(tmp_path: Path) -> Path:
    folder = tmp_path / "two_class"
    folder.mkdir()
    (folder / "model_card.json").write_text(json.dumps({
        "name": "two_class", "refiner": "identity",
        "classes": [{"id": 0, "name": "background", "color": "#000000"}, {"id": 1, "name": "field", "color": "#ff0"}]}))
    return folder


def _class_three(small, tmp_path: Path) -> Path:
    with rasterio.open(small["raster"]) as src:
        profile, data = src.profile, src.read(1)
    with rasterio.open(tmp_path / "three.tif", "w", **profile) as dst:
        dst.write(np.where(data == 1, 3, 0).astype(np.uint8), 1)
    return tmp_path / "three.tif"


# --- 10: coarse.tif carries the image's NoData ------------------------------------------------------

def test_coarse_tif_is_nodata_where_the_image_is(small, tmp_path) -> None:
    with rasterio.open(small["image"]) as src:
        profile, data = src.profile, src.read()
    data[:, :, :40] = 0
    with rasterio.open(tmp_path / "collar.tif", "w", **{**profile, "nodata": 0}) as dst:
        dst.write(data)
    result = _run(small, tmp_path / "out", image=tmp_path / "collar.tif", coarse=small["raster"])
    with rasterio.open(result.coarse) as c, rasterio.open(result.refined) as r:
        coarse, refined = c.read(1), r.read(1)
    assert (coarse[:, :40] == 255).all() and (coarse[:, 40:] != 255).all()
    assert np.array_equal(coarse == 255, refined == 255)


# --- 12, 13: the default model and minimum area come from model cards --------------------------------

def _card(root: Path, name: str, **fields) -> None:
    (root / name).mkdir(parents=True)
    card = {"name": name, "refiner": "morph", "task": "test refiner", "classes": None, **fields}
    (root / name / "model_card.json").write_text(json.dumps(card))


def test_default_model_and_min_area_come_from_the_cards(small, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("IDGBR_MODELS_PATH", str(tmp_path / "models"))
    fields = tmp_path / "fields.gpkg"  # the name says what the layer maps
    shutil.copy(SAMPLE / "coarse.gpkg", fields)
    plain = _run(small, tmp_path / "plain", model="auto")
    assert plain.model == "identity" and "no installed refiner is marked the default for this layer" in plain.summary[0]
    assert "min area 16 m² (16 image pixels)" in plain.summary[0]  # 1 m pixels

    _card(tmp_path / "models", "fieldref", default_for=["farmland"], min_area_m2={"class 1": 300.0, "background": 900})
    _card(tmp_path / "models", "anyref", default_for=["any"])
    farm = _run(small, tmp_path / "farm", model="auto", coarse=fields)
    assert farm.model == "fieldref"
    assert farm.summary[0].startswith("model fieldref: the installed default for farmland layers (its model card); "
                                      "radius 3, iterations 2")
    assert "min area 300 m² (model card)" in farm.summary[0]
    # A polygon layer comes back feature by feature (a parcel keeps its identity however small
    # its part inside the image); the card's minimum area sieves class polygons, as of a raster:
    sieved = _run(small, tmp_path / "sieved", model="fieldref", coarse=small["raster"])
    areas = gpd.read_file(sieved.vectors, layer="refined")["area_m2"]
    assert len(areas) and areas.min() >= 300 * 0.9  # outlines simplified after the merge
    other = _run(small, tmp_path / "other", model=None)
    assert other.model == "anyref" and "default for any layer" in other.summary[0]
    given = _run(small, tmp_path / "given", model="fieldref", min_area_m2=0.0)
    assert "chosen by the user" in given.summary[0] and "min area 0 m² (given)" in given.summary[0]


# --- 14: the ETA covers vectorizing ---------------------------------------------------------------

def test_eta_counts_the_vectorizing_still_to_come(small, tmp_path) -> None:
    seen: list[tuple[float, str]] = []
    _run(small, tmp_path / "out", tile_size=64, progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(m.startswith("vectorized") and "· ETA" in m for _, m in seen)
    clock = RunClock(lambda f, m: None, pixels=256 * 256)
    labels = np.zeros((256, 256), np.uint8)
    labels[:, 128:] = 1
    clock.count_edges(labels)
    clock.stage("tiles", 0.5, "tile 8/16")
    assert clock.left("tiles", 1.0) == (pytest.approx(clock.vectorize_estimate()), False)
    assert clock.vectorize_estimate() > 0


# --- 15, 16: the command line ---------------------------------------------------------------------

CLI_CHECKS = r"""
import argparse, io, sys, contextlib
from idgbr.cli import build_parser, main
missing = []
def walk(parser, name):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                walk(sub, f"{name} {sub_name}")
        elif action.option_strings and action.help in (None, "") and "-h" not in action.option_strings:
            missing.append(f"{name} {action.option_strings[0]}")
walk(build_parser(), "idgbr")
print("no help:", missing)
err = io.StringIO()
with contextlib.redirect_stderr(err):
    rc = main(["refine", sys.argv[1], "--coarse", sys.argv[2], "--out", sys.argv[3], "--tile-size", "0"])
print("rc:", rc, err.getvalue().strip())
print("torch loaded:", "torch" in sys.modules)
"""


def test_cli_help_version_errors_before_torch_and_models_sections(small, tmp_path) -> None:
    done = subprocess.run([sys.executable, "-c", CLI_CHECKS, str(small["image"]), str(small["coarse"]),
                           str(tmp_path / "out")], capture_output=True, text=True, env=ENV)
    assert done.stdout.splitlines() == [
        "no help: []",
        "rc: 2 idgbr: error: --tile-size must be between 32 and 4096 (pixels per tile side), got 0",
        "torch loaded: False"], done.stderr
    version = subprocess.run([sys.executable, "-m", "idgbr", "--version"], capture_output=True, text=True, env=ENV)
    assert version.stdout.strip() == f"idgbr {idgbr.__version__}"
    listed = subprocess.run([sys.executable, "-m", "idgbr", "models", "list"], capture_output=True, text=True,
                            env=ENV).stdout
    refiners, coarse = listed.split("Coarse segmentors")
    assert refiners.startswith("Refiners") and "  identity  [identity]" in refiners and "coarse-farmland" not in refiners
    assert "  coarse-farmland  [segformer]" in coarse and "  identity" not in coarse


def test_cli_routes_library_chatter_to_the_log(small, tmp_path, caplog) -> None:
    """A coarse segmentor run (64² px): transformers' loading bar and warnings stay out of the
    terminal; they are DEBUG records of the log (shown with -v)."""
    with rasterio.open(small["image"]) as ds:
        x, y = ds.transform * (0, 0)
    done = subprocess.run([sys.executable, "-m", "idgbr", "refine", str(small["image"]), "--coarse-model",
                           "coarse-farmland", "--model", "identity", "--tile-size", "64", "--aoi",
                           f"{x},{y - 64},{x + 64},{y}", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    assert "Loading weights" not in done.stderr and "Warning" not in done.stderr
    import warnings

    from idgbr.logs import quiet_libraries

    with caplog.at_level("DEBUG", logger="idgbr.libraries"), quiet_libraries():
        warnings.warn("a library's notice", UserWarning)
    assert "UserWarning: a library's notice" in caplog.text


# --- cases that already held: image kinds, odd layers, odd paths -----------------------------------

def _image_variant(small, path: Path, kind: str) -> Path:
    with rasterio.open(small["image"]) as src:
        profile, data = src.profile, src.read()
    if kind == "grey":
        data = data[:1]
    elif kind == "rgba":  # alpha 0 on the top rows: NoData there
        alpha = np.full((1, 256, 256), 255, np.uint8)
        alpha[:, :50] = 0
        data = np.concatenate([data, alpha])
        profile["photometric"] = "RGB"
    elif kind == "uint16":  # 11-bit imagery, as pan-sharpened satellite images come
        data = data.astype(np.uint16) * 8 + 100
        profile["dtype"] = "uint16"
    profile["count"] = len(data)
    with rasterio.open(path, "w", **profile, **({"alpha": "YES"} if kind == "rgba" else {})) as dst:
        dst.write(data)
    return path


@pytest.mark.parametrize("kind", ["grey", "rgb", "rgba", "uint16"])
def test_one_three_four_band_and_16_bit_images_refine(kind, small, tmp_path) -> None:
    image = _image_variant(small, tmp_path / f"{kind}.tif", kind)
    result = _run(small, tmp_path / "out", image=image, coarse=small["raster"], model="guided")
    with rasterio.open(result.refined) as ref, rasterio.open(small["raster"]) as truth:
        refined, coarse = ref.read(1), truth.read(1)
    nodata = np.zeros((256, 256), bool)
    if kind == "rgba":
        nodata[:50] = True
    assert (refined[nodata] == 255).all() and set(np.unique(refined[~nodata])) == {0, 1}
    assert (refined[~nodata] == coarse[~nodata]).mean() > 0.9  # the guided filter moves edges, not fields


def test_empty_layer_invalid_polygons_and_non_ascii_paths(small, tmp_path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    fields = gpd.read_file(SAMPLE / "coarse.gpkg")
    fields.iloc[:0].to_file(work / "empty.gpkg")
    _refused(small, tmp_path, match="empty.gpkg holds no polygons", coarse=work / "empty.gpkg")
    # A self-intersecting "bow tie" over the crop: repaired (make_valid), not refused.
    with rasterio.open(small["image"]) as ds:
        b = ds.bounds
    bowtie = shapely.Polygon([(b.left, b.bottom), (b.right, b.top), (b.right, b.bottom), (b.left, b.top)])
    assert not bowtie.is_valid
    gpd.GeoDataFrame({"class_id": [1]}, geometry=[bowtie], crs=fields.crs).to_file(tmp_path / "bowtie.gpkg")
    result = _run(small, tmp_path / "bowtie", coarse=tmp_path / "bowtie.gpkg", class_field="class_id")
    with rasterio.open(result.refined) as ref:
        classes = ref.read(1)
    assert 0.4 < (classes == 1).mean() < 0.6  # the two triangles
    # Paths with accents and spaces, for every input and output.
    odd = tmp_path / "Ørthofoto é ü"
    odd.mkdir()
    shutil.copy(small["image"], odd / "bild_ä.tif")
    shutil.copy(SAMPLE / "coarse.gpkg", odd / "felder_é.gpkg")
    result = _run(small, odd / "résultats", image=odd / "bild_ä.tif", coarse=odd / "felder_é.gpkg")
    assert result.refined.is_file() and len(gpd.read_file(result.vectors, layer="refined")) > 0
