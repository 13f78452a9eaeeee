"""The "idgbr" Processing provider: through processing.run in-process, and through the qgis_process
command line with the plugin found in a temporary QGIS profile.

Debian's /usr/bin/qgis_process wrapper is broken (it passes QGIS_OPTS=--noversioncheck from
/etc/default/qgis as a command), so the binary /usr/bin/qgis_process.bin is called directly.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
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
    assert {"STEPS", "GUIDANCE", "SAMPLES", "TILE_SIZE", "BATCH_SIZE", "MIN_AREA"} <= advanced


def test_refine_reports_engine_errors(processing, mosaic, tmp_path):  # noqa: F811
    tif, gpkg = mosaic
    with pytest.raises(QgsProcessingException, match="unknown model 'nope'"):
        processing.run("idgbr:refine", {"IMAGE": str(tif), "COARSE": str(gpkg), "MODEL": "nope",
                                        "OUTPUT": str(tmp_path / "x")})
    assert not (tmp_path / "x").exists()


def test_refine_through_qgis_process(mosaic, tmp_path):  # noqa: F811
    """A fresh profile with the plugin linked (as `make install` does) and enabled in QGIS3.ini."""
    tif, gpkg = mosaic
    profile = tmp_path / "config" / "profiles" / "default"
    (profile / "python" / "plugins").mkdir(parents=True)
    (profile / "python" / "plugins" / "qgis_idgbr").symlink_to(REPO / "qgis_idgbr", target_is_directory=True)
    (profile / "QGIS").mkdir()
    (profile / "QGIS" / "QGIS3.ini").write_text("[PythonPlugins]\nqgis_idgbr=true\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "QGIS_"))}
    env.update(QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "config"))
    done = subprocess.run([QGIS_PROCESS, "--json", "run", "idgbr:refine", "--", f"IMAGE={tif}",
                           f"COARSE={gpkg}", "MODEL=identity", f"OUTPUT={tmp_path / 'out'}"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads(done.stdout[done.stdout.index("{"):])["results"]
    assert Path(results["REFINED"]).is_file() and results["POLYGONS"].endswith("|layername=refined")
