"""The "idgbr" Processing provider: through processing.run in-process, and through the qgis_process
command line with the plugin found in a temporary QGIS profile.

Debian's /usr/bin/qgis_process wrapper is broken (it passes QGIS_OPTS=--noversioncheck from
/etc/default/qgis as a command), so the binary /usr/bin/qgis_process.bin is called directly.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import QgsApplication, QgsProcessingException, QgsRasterLayer, QgsVectorLayer

from tests.qgis_helpers import REPO, mosaic, plugin_package  # noqa: F401 (fixtures)

QGIS_PROCESS = "/usr/bin/qgis_process.bin"


@pytest.fixture()
def processing(qgis_app, plugin_package):  # noqa: F811
    """Processing initialised, with the provider registered as the plugin's initProcessing does."""
    from processing.core.Processing import Processing

    from qgis_idgbr.processing.provider import IdgbrProvider

    Processing.initialize()
    provider = IdgbrProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    import processing

    yield processing
    QgsApplication.processingRegistry().removeProvider(provider)


def test_refine_and_vectorize_through_processing_run(processing, mosaic, tmp_path):  # noqa: F811
    tif, gpkg = mosaic
    out = processing.run("idgbr:refine", {"IMAGE": str(tif), "COARSE": f"{gpkg}|layername=buildings",
                                          "CLASS_FIELD": "class_id", "MODEL": "identity",
                                          "OUTPUT": str(tmp_path / "refined")})
    assert out["OUTPUT"] == str(tmp_path / "refined")
    image = QgsRasterLayer(str(tif), "image")
    for key in ("REFINED", "CONFIDENCE"):
        assert QgsRasterLayer(out[key], key).crs() == image.crs()
    # A polygon coarse layer comes back feature by feature; what no feature holds goes to NEW.
    polygons = QgsVectorLayer(out["POLYGONS"], "polygons", "ogr")
    buildings = QgsVectorLayer(f"{gpkg}|layername=buildings", "buildings", "ogr")
    removed = QgsVectorLayer(out["REMOVED"], "removed", "ogr")
    assert polygons.isValid() and polygons.featureCount() + removed.featureCount() == buildings.featureCount()
    assert polygons.fields().indexOf("refine_status") >= 0 and polygons.crs() == buildings.crs()
    assert QgsVectorLayer(out["NEW"], "new", "ogr").isValid()

    again = processing.run("idgbr:vectorize", {"INPUT": out["REFINED"], "OUTPUT": str(tmp_path / "v.gpkg")})
    assert QgsVectorLayer(again["OUTPUT"], "v", "ogr").featureCount() > 0

    algorithm = QgsApplication.processingRegistry().algorithmById("idgbr:refine")
    advanced = {p.name() for p in algorithm.parameterDefinitions() if p.flags() & p.FlagAdvanced}
    assert {"STEPS", "GUIDANCE", "SAMPLES", "REACH", "TILE_SIZE", "BATCH_SIZE", "MIN_AREA", "SCHEDULER",
            "BLOCK_SIZE"} <= advanced


def test_refine_reports_engine_errors(processing, mosaic, tmp_path):  # noqa: F811
    tif, gpkg = mosaic
    (tmp_path / "empty").mkdir()
    with pytest.raises(QgsProcessingException, match="empty is not a model folder: model_card.json is missing"):
        processing.run("idgbr:refine", {"IMAGE": str(tif), "COARSE": str(gpkg), "MODEL_FOLDER": str(tmp_path / "empty"),
                                        "OUTPUT": str(tmp_path / "x")})
    with pytest.raises(QgsProcessingException, match="Incorrect parameter value for MODEL"):
        processing.run("idgbr:refine", {"IMAGE": str(tif), "COARSE": str(gpkg), "MODEL": "nope",
                                        "OUTPUT": str(tmp_path / "x")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
    with pytest.raises(QgsProcessingException, match="is a coarse segmentor .* --coarse-model"):
        processing.run("idgbr:refine", {"IMAGE": str(tif), "COARSE": f"{gpkg}|layername=buildings",
                                        "MODEL_FOLDER": str(REPO / "resources" / "models" / "coarse-buildings"),
                                        "OUTPUT": str(tmp_path / "x")})
    assert not (tmp_path / "x").exists()


def test_reruns_replace_the_results_and_without_overwrite_nothing_changes(processing, mosaic, tmp_path):  # noqa: F811
    """Processing replaces its outputs by default; with OVERWRITE off the message names Processing's switch."""
    tif, gpkg = mosaic
    out = tmp_path / "refined"
    parameters = {"IMAGE": str(tif), "COARSE": str(gpkg), "OUTPUT": str(out)}  # the default model
    processing.run("idgbr:refine", parameters)
    first = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    processing.run("idgbr:refine", parameters)
    second = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert second.keys() == first.keys() and all(second[n] > first[n] for n in first)
    with pytest.raises(QgsProcessingException) as refused:
        processing.run("idgbr:refine", {**parameters, "OVERWRITE": False})
    assert f"output folder {out} already holds results" in str(refused.value)
    assert "'Overwrite existing results'" in str(refused.value) and "--overwrite" not in str(refused.value)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == second  # no staging folder either


def test_model_lists_the_installed_refiners_with_their_cards(processing):
    from idgbr.models import list_models

    algorithm = QgsApplication.processingRegistry().algorithmById("idgbr:refine")
    model = algorithm.parameterDefinition("MODEL")
    cards = list_models()
    coarse = [c for c in cards if c.refiner == "segformer"]
    assert coarse and all(c.name.startswith("coarse-") for c in coarse)
    assert model.options() == ["auto"] + [c.name for c in cards if c not in coarse]
    assert model.defaultValue() == "auto" and model.usesStaticStrings()
    assert "MODEL=guided" in model.help()
    for card in cards:
        assert (f"{card.name}: {card.description}" in algorithm.shortHelpString()) == (card not in coarse)


def test_a_model_folder_overrides_the_model_name(processing, mosaic, tmp_path):  # noqa: F811
    """A folder outside the model roots (a copy of identity) wins over MODEL=guided: refined equals coarse."""
    import shutil

    import numpy as np
    import rasterio

    tif, gpkg = mosaic
    folder = shutil.copytree(REPO / "resources" / "models" / "identity", tmp_path / "my-model")
    out = processing.run("idgbr:refine", {"IMAGE": str(tif), "COARSE": str(gpkg), "MODEL": "guided",
                                          "MODEL_FOLDER": str(folder), "OUTPUT": str(tmp_path / "out")})
    with rasterio.open(out["REFINED"]) as refined, rasterio.open(tmp_path / "out" / "coarse.tif") as coarse:
        assert np.array_equal(refined.read(1), coarse.read(1))


def enable_plugin(profile: Path) -> str:
    """What `make install` runs after linking the plugin; returns the profile's QGIS3.ini afterwards."""
    subprocess.run([sys.executable, str(REPO / "resources" / "enable_plugin.py"), str(profile)], check=True,
                   capture_output=True)
    return (profile / "QGIS" / "QGIS3.ini").read_text()


def test_enabling_the_plugin_keeps_the_profile_settings_and_is_idempotent(tmp_path):
    from qgis.PyQt.QtCore import QSettings

    ini = tmp_path / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir()
    ini.write_text("[PythonPlugins]\nprocessing=true\nqgis_idgbr=false\nother=false\n\n"
                   "[qgis]\ngeometry=@ByteArray(\\x1\\xd9)\nscale=\"1:1000, 1:5000\"\n")
    kept = {"PythonPlugins/processing": "true", "PythonPlugins/other": "false",
            "qgis/geometry": b"\x01\xd9", "qgis/scale": "1:1000, 1:5000"}
    once = enable_plugin(tmp_path)
    assert enable_plugin(tmp_path) == once
    settings = QSettings(str(ini), QSettings.IniFormat)
    assert {key: settings.value(key) for key in kept} == kept
    assert settings.value("PythonPlugins/qgis_idgbr") == "true"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["QGIS", "QGIS3.ini"]


def _qgis_process(tmp_path: Path):
    """qgis_process in a fresh profile set up as `make install` does (plugin linked, then enabled)."""
    profile = tmp_path / "config" / "profiles" / "default"
    (profile / "python" / "plugins").mkdir(parents=True)
    (profile / "python" / "plugins" / "qgis_idgbr").symlink_to(REPO / "qgis_idgbr", target_is_directory=True)
    enable_plugin(profile)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "QGIS_"))}
    env.update(QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "config"))

    def qgis_process(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([QGIS_PROCESS, *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done
    return qgis_process


def test_refine_through_qgis_process(mosaic, tmp_path):  # noqa: F811
    """The algorithms are listed, and the README's invocation runs twice into the same OUTPUT."""
    tif, gpkg = mosaic
    qgis_process = _qgis_process(tmp_path)
    listed = qgis_process("list").stdout
    assert "idgbr:refine" in listed and "idgbr:vectorize" in listed
    for _ in range(2):
        done = qgis_process("--json", "run", "idgbr:refine", "--", f"IMAGE={tif}", f"COARSE={gpkg}",
                            "MODEL=identity", f"OUTPUT={tmp_path / 'out'}")
        results = json.loads(done.stdout[done.stdout.index("{"):])["results"]
        assert Path(results["REFINED"]).is_file() and results["POLYGONS"].endswith("|layername=refined")
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_refine_on_a_local_dask_cluster_through_qgis_process(mosaic, tmp_path):  # noqa: F811
    """SCHEDULER=local:1 from QGIS, whose executable is not Python: the worker process starts and
    the classes are those of the in-process engine."""
    import idgbr

    tif, gpkg = mosaic
    done = _qgis_process(tmp_path)("--json", "run", "idgbr:refine", "--", f"IMAGE={tif}", f"COARSE={gpkg}",
                                   "MODEL=guided", "SCHEDULER=local:1", "BLOCK_SIZE=512", f"OUTPUT={tmp_path / 'out'}")
    results = json.loads(done.stdout[done.stdout.index("{"):])["results"]
    reference = idgbr.refine(tif, gpkg, "guided", tmp_path / "reference")
    with rasterio.open(results["REFINED"]) as a, rasterio.open(reference.refined) as b:
        assert np.array_equal(a.read(1), b.read(1))
