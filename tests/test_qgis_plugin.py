"""The QGIS plugin against real QGIS 3.22 (Debian), headless.

In-process tests run in the venv's interpreter under pytest-qgis, where `import idgbr` works
anyway; what QGIS really does (Debian's /usr/bin/python3 with only the plugin's path injection)
is checked in subprocesses, including the "one GDAL in one process" guarantee.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest
import qgis.utils
from qgis.core import Qgis
from qgis.PyQt.QtCore import QCoreApplication, QEvent
from qgis.PyQt.QtWidgets import QMessageBox
from qgis.PyQt import sip

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SRC = REPO / "qgis_idgbr"
PLUGIN = "qgis_idgbr"
SYSTEM_PYTHON = "/usr/bin/python3"  # the interpreter QGIS embeds
INSTALL_COMMAND = f"make -C {REPO} install"


def _forget_plugin_modules() -> None:
    for name in [m for m in sys.modules if m == PLUGIN or m.startswith(PLUGIN + ".")]:
        del sys.modules[name]


@pytest.fixture()
def engine_env(monkeypatch: pytest.MonkeyPatch):
    """qgis_idgbr.engine_env imported from the repository, sys.path restored afterwards."""
    monkeypatch.setattr(sys, "path", [str(REPO), *sys.path])
    _forget_plugin_modules()
    from qgis_idgbr import engine_env

    yield engine_env
    _forget_plugin_modules()


@pytest.fixture()
def plugins_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A QGIS plugins folder linking the repository's plugin, as `make install` does."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / PLUGIN).symlink_to(PLUGIN_SRC, target_is_directory=True)
    for name in ("plugin_paths", "available_plugins", "plugins_metadata_parser"):
        monkeypatch.setattr(qgis.utils, name, getattr(qgis.utils, name))
    qgis.utils.plugin_paths = [str(plugins)]
    monkeypatch.setattr(sys, "path", [str(plugins), *sys.path])
    _forget_plugin_modules()
    qgis.utils.updateAvailablePlugins()
    yield plugins
    _forget_plugin_modules()


def _linked_plugin_copy(root: Path, site_packages: Path) -> Path:
    """A plugins folder whose qgis_idgbr links each source file but has its own engine_path.json.

    The install command still points to this repository (found through the resolved files).
    """
    plugin = root / "plugins" / PLUGIN
    plugin.mkdir(parents=True)
    for src in PLUGIN_SRC.iterdir():
        if src.name not in ("engine_path.json", "__pycache__"):
            (plugin / src.name).symlink_to(src.resolve())
    (plugin / "engine_path.json").write_text(json.dumps({"site_packages": str(site_packages)}))
    return plugin.parent


def _clean_env() -> dict[str, str]:
    """The environment minus what points Python at the venv or QGIS at pytest-qgis' settings."""
    own = ("VIRTUAL_ENV", "PYTHON", "QGIS_CUSTOM_CONFIG_PATH", "QGIS_OPTIONS_PATH")
    return {k: v for k, v in os.environ.items() if not k.startswith(own)}


def _run_system_python(script: str, *args: str) -> dict:
    """Run a script with Debian's python3 (QGIS's), headless; it prints one JSON line last."""
    env = {**_clean_env(), "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([SYSTEM_PYTHON, "-c", textwrap.dedent(script), *args], env=env,
                          cwd="/", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- engine_env alone (no QGIS) ---------------------------------------------------------------

def test_missing_path_file_names_the_install_command(engine_env, tmp_path, monkeypatch):
    monkeypatch.setattr(engine_env, "ENGINE_MODULE", "idgbr_not_installed")
    status = engine_env.probe_engine(plugin_dir=tmp_path)
    assert not status.ok and status.module == "idgbr_not_installed"
    assert "engine_path.json is missing" in status.error
    assert status.summary().endswith(f"Install it with: {INSTALL_COMMAND}")
    assert "clone of the IDGBR" in engine_env.install_command(tmp_path)  # plugin outside a repo


BROKEN_DEPENDENCIES = {  # what the fake engine's dependency does -> module and cause reported
    "missing": ("import fake_missing_dependency\n", "fake_missing_dependency", "No module named"),
    "too old numpy": ("try:\n    raise ImportError('upgrade numpy')\nexcept ImportError as e:\n"
                      "    raise ImportError('C extension not built') from e\n",
                      "fake_engine", "ImportError: upgrade numpy"),
}


@pytest.mark.parametrize("case", BROKEN_DEPENDENCIES)
def test_site_packages_appended_and_failing_module_named(engine_env, tmp_path, monkeypatch, case):
    """The venv folder goes last on sys.path, its .pth files run (editable installs need
    them), and a failing dependency of the engine is named with its root cause."""
    code, module, cause = BROKEN_DEPENDENCIES[case]
    site_dir, src = tmp_path / "site-packages", tmp_path / "src"
    (src / "fake_engine").mkdir(parents=True)
    (src / "fake_engine" / "__init__.py").write_text(code)
    site_dir.mkdir()
    (site_dir / "__editable__.fake_engine.pth").write_text(f"{src}\n")
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    (plugin_dir / "engine_path.json").write_text(json.dumps({"site_packages": str(site_dir)}))
    monkeypatch.setattr(engine_env, "ENGINE_MODULE", "fake_engine")

    status = engine_env.probe_engine(plugin_dir=plugin_dir)

    assert sys.path[-2:] == [str(site_dir), str(src)]
    assert not status.ok and status.site_packages == site_dir
    assert status.module == module
    assert cause in status.error and "not built" not in status.error
    engine_env.probe_engine(plugin_dir=plugin_dir)
    assert sys.path.count(str(site_dir)) == 1  # a reload does not add it again


# --- the plugin inside QGIS -------------------------------------------------------------------

def test_plugin_loads_adds_and_removes_its_action(qgis_iface, plugins_dir):
    qgis_iface.messageBar().clear_messages()
    with mock.patch.object(qgis_iface, "addPluginToMenu") as add, \
            mock.patch.object(qgis_iface, "removePluginMenu") as remove:
        assert qgis.utils.loadPlugin(PLUGIN)
        assert qgis.utils.startPlugin(PLUGIN)
        plugin = qgis.utils.plugins[PLUGIN]
        assert plugin.status.ok, plugin.status.summary()
        ((menu, action), (_, dock_action)) = [c.args for c in add.call_args_list]
        assert (menu, action.text()) == ("&IDGBR", "IDGBR: about / engine status")
        assert dock_action.text() == "IDGBR: refine boundaries"
        from qgis.core import QgsApplication

        assert QgsApplication.processingRegistry().providerById("idgbr") is not None
        assert action.parent() is qgis_iface.mainWindow()
        assert not qgis_iface.messageBar().get_messages(Qgis.Warning)

        with mock.patch.object(QMessageBox, "information") as box:
            action.trigger()
        assert "ready" in box.call_args.args[2]

        import idgbr

        assert plugin.status.version == idgbr.__version__
        assert qgis.utils.unloadPlugin(PLUGIN)
    assert [c.args for c in remove.call_args_list] == [("&IDGBR", dock_action), ("&IDGBR", action)]
    assert QgsApplication.processingRegistry().providerById("idgbr") is None
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    assert sip.isdeleted(action)
    assert PLUGIN not in sys.modules


def test_plugin_without_engine_still_loads_and_says_what_is_missing(tmp_path):
    """Debian's python3 (QGIS's) cannot import idgbr; engine_path.json names an empty folder."""
    empty = tmp_path / "empty-site-packages"
    empty.mkdir()
    plugins = _linked_plugin_copy(tmp_path, empty)
    result = _run_system_python("""
        import json, sys
        from unittest import mock
        from qgis.core import QgsApplication
        from qgis.gui import QgisInterface
        from qgis.PyQt.QtWidgets import QMainWindow
        import qgis.utils

        app = QgsApplication([], True)
        app.initQgis()
        iface = mock.Mock(spec=QgisInterface)
        window = QMainWindow()
        iface.mainWindow.return_value = window
        qgis.utils.iface = iface
        qgis.utils.plugin_paths = [sys.argv[1]]
        sys.path.insert(0, sys.argv[1])
        qgis.utils.updateAvailablePlugins()
        started = qgis.utils.loadPlugin("qgis_idgbr") and qgis.utils.startPlugin("qgis_idgbr")
        status = qgis.utils.plugins["qgis_idgbr"].status
        print(json.dumps({
            "started": started,
            "actions": [c.args[1].text() for c in iface.addPluginToMenu.call_args_list],
            "warnings": [list(c.args) for c in iface.messageBar().pushWarning.call_args_list],
            "module": status.module,
            "unloaded": qgis.utils.unloadPlugin("qgis_idgbr"),
        }))
        app.exitQgis()
        """, str(plugins))
    assert result["started"] and result["unloaded"]
    assert result["actions"] == ["IDGBR: about / engine status"]
    assert result["module"] == "idgbr"
    ((title, message),) = result["warnings"]
    assert title == "IDGBR"
    assert "module 'idgbr' cannot be imported" in message
    assert message.endswith(f"Install it with: {INSTALL_COMMAND}")


def test_one_gdal_in_qgis_python_with_the_engine(tmp_path):
    """What QGIS's Python sees after the plugin's path injection: the engine and its native
    dependencies import next to QGIS, on the GDAL QGIS itself uses (one libgdal mapped)."""
    path_file = PLUGIN_SRC / "engine_path.json"
    assert path_file.is_file(), f"{path_file} is written by `make install`"
    result = _run_system_python("""
        import json, re, sys
        from qgis.core import QgsApplication
        app = QgsApplication([], False)
        app.initQgis()
        sys.path.insert(0, sys.argv[1])
        from qgis_idgbr.engine_env import probe_engine
        status = probe_engine()
        import numpy, rasterio, pyogrio, shapely, torch, idgbr
        from osgeo import gdal
        from rasterio.io import MemoryFile
        from shapely.geometry import box

        with MemoryFile() as mem, mem.open(driver="GTiff", width=4, height=4, count=1,
                                           dtype="uint8") as ds:
            ds.write(numpy.ones((1, 4, 4), dtype="uint8"))
            raster_sum = int(ds.read().sum())
        from idgbr.models import TileBatch, load_refiner
        coarse = numpy.zeros((1, 64, 64), "uint8")
        coarse[:, 20:40, 20:44] = 1
        probs = load_refiner("buildings", device="cpu").predict(  # a shipped torch refiner runs in QGIS
            TileBatch(numpy.full((1, 3, 64, 64), 0.5, "float32"), coarse, numpy.ones((1, 64, 64), bool)))
        import sympy
        maps = open("/proc/self/maps").read()
        libs = sorted({l.split()[-1] for l in maps.splitlines() if re.search(r"/libgdal\\.so", l)})
        print(json.dumps({
            "ok": status.ok, "summary": status.summary(),
            "osgeo": gdal.__version__, "rasterio": rasterio.__gdal_version__,
            "pyogrio": pyogrio.__gdal_version_string__, "libgdal": libs,
            "raster_sum": raster_sum, "area": box(0, 0, 2, 3).area,
            "torch": float(torch.ones(3).sum()),
            "idgbr": idgbr.__file__, "numpy": numpy.__file__,
            "anchored": list(probs.shape), "sympy": sympy.__file__,
        }))
        app.exitQgis()
        """, str(REPO))
    assert result["ok"], result["summary"]
    assert result["osgeo"].startswith("3.6.")
    assert result["rasterio"] == result["pyogrio"] == result["osgeo"]
    assert len(result["libgdal"]) == 1, result["libgdal"]
    assert (result["raster_sum"], result["area"], result["torch"]) == (16, 6.0, 3.0)
    assert result["idgbr"].startswith(str(REPO / "engine"))
    assert result["numpy"].startswith("/usr/lib/python3/dist-packages")  # QGIS's numpy wins
    # ... but torch needs a newer sympy than Debian's: the venv's (engine_env.VENV_FIRST)
    assert result["anchored"] == [1, 2, 64, 64] and ".venv" in result["sympy"], result["sympy"]


QGIS_PROBE = """
import json, os, re, traceback
out = {}
try:
    import qgis.utils
    from qgis.utils import iface
    out["active"] = qgis.utils.active_plugins
    out["menu"] = [a.text() for m in iface.pluginMenu().actions() if m.menu()
                   for a in m.menu().actions()]
    out["status"] = qgis.utils.plugins["qgis_idgbr"].status.summary()
    import geopandas, shapely
    from shapely.geometry import box
    frame = geopandas.GeoDataFrame(geometry=[box(0, 0, 2, 3)], crs="EPSG:2056")
    frame.to_file(os.environ["PROBE_GPKG"])  # shapely -> WKB -> pyogrio -> GDAL
    out["area"] = float(geopandas.read_file(os.environ["PROBE_GPKG"]).area.sum())
    out["libs"] = sorted({l.split()[-1] for l in open("/proc/self/maps")
                          if re.search(r"/lib(gdal|geos_c|proj)[-.]", l)})
except Exception:
    out["error"] = traceback.format_exc()
finally:
    with open(os.environ["PROBE_OUT"], "w") as f:
        json.dump(out, f)
    os._exit(0)  # QGIS waits on a dialog when a --code script fails: never let it
"""


def test_plugin_and_engine_in_the_real_qgis_application(tmp_path):
    """The qgis binary itself (under Xvfb), plugin enabled in a fresh profile linked as by
    `make install`. Unlike a python3 subprocess, QGIS holds its own GDAL, GEOS and PROJ in the
    global symbol scope, so a wheel's bundled copy would be shadowed by them here."""
    assert shutil.which("xvfb-run"), "xvfb-run comes with `make install`"
    plugins = tmp_path / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / PLUGIN).symlink_to(PLUGIN_SRC, target_is_directory=True)
    settings = tmp_path / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    settings.parent.mkdir()
    settings.write_text(f"[PythonPlugins]\n{PLUGIN}=true\n")
    probe, out = tmp_path / "probe.py", tmp_path / "out.json"
    probe.write_text(QGIS_PROBE)
    env = {**_clean_env(), "PROBE_OUT": str(out), "PROBE_GPKG": str(tmp_path / "probe.gpkg")}
    env.pop("QT_QPA_PLATFORM", None)  # the QGIS application segfaults on "offscreen": Xvfb it is
    done = subprocess.run(["xvfb-run", "-a", "qgis", "--nologo", "--profiles-path", str(tmp_path),
                           "--code", str(probe)], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=180)
    assert out.is_file(), f"QGIS exited {done.returncode}: {done.stderr[-4000:]}"
    result = json.loads(out.read_text())
    assert "error" not in result, result["error"]
    assert PLUGIN in result["active"]
    assert "IDGBR: about / engine status" in result["menu"]
    assert "ready" in result["status"], result["status"]
    assert result["area"] == 6.0
    names = [Path(lib).name.split(".so")[0] for lib in result["libs"]]
    assert sorted(names) == ["libgdal", "libgeos_c", "libproj"], result["libs"]
