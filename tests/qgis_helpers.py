"""Inputs shared by the QGIS dock, task and Processing tests: a small real georeferenced image."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mosaic(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 1024×1024 EPSG:3857 orthophoto from ../shared/data and its building polygons (EPSG:4326)."""
    from idgbr.xyz import build_xyz_mosaic, complete_z19_parents

    area = shared_data / "buildings_hot_oam" / "area2"
    folder = tmp_path_factory.mktemp("mosaic")
    tif, gpkg = folder / "ortho.tif", folder / "buildings.gpkg"
    build_xyz_mosaic(area, *complete_z19_parents(area)[0], tif, gpkg)
    return tif, gpkg


@pytest.fixture()
def plugin_package(monkeypatch: pytest.MonkeyPatch):
    """qgis_idgbr importable from the repository, forgotten afterwards."""
    monkeypatch.syspath_prepend(str(REPO))
    yield
    for name in [m for m in sys.modules if m == "qgis_idgbr" or m.startswith("qgis_idgbr.")]:
        del sys.modules[name]
