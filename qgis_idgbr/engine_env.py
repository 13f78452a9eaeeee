"""Make the IDGBR engine importable from QGIS's Python, or say exactly why it is not.

QGIS runs Debian's /usr/bin/python3; the engine and its dependencies live in the repository's
virtual environment (.venv, made with --system-site-packages). `make install` writes that
environment's site-packages folder into engine_path.json next to this file. Adding the folder
*after* QGIS's own paths lets QGIS keep its numpy, GDAL bindings and PyQt while the engine
finds rasterio, shapely and torch in the venv.

This module imports no Qt, so it can be tested without QGIS.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import json
import shlex
import site
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PATH_FILE = "engine_path.json"
ENGINE_MODULE = "idgbr"
# The folder QGIS loaded the plugin from (maybe a symlink in the QGIS profile): engine_path.json
# is looked up there. The repository is found through the resolved source file instead.
PLUGIN_DIR = Path(__file__).parent
REPO_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class EngineStatus:
    """The outcome of looking for the engine, in terms a user can act on."""

    ok: bool
    install_command: str
    site_packages: Path | None = None
    version: str | None = None
    module: str | None = None  # the module whose import failed
    error: str | None = None

    def summary(self) -> str:
        """One line for the message bar and the log."""
        if self.ok:
            return f"IDGBR engine {self.version} ready ({self.site_packages or 'on sys.path'})."
        what = f"module '{self.module}' cannot be imported" if self.module else "import failed"
        return (f"IDGBR engine unavailable: {what} ({self.error}). "
                f"Install it with: {self.install_command}")


def install_command(repo_dir: Path = REPO_DIR) -> str:
    """The shell command that installs the engine for this copy of the plugin."""
    if (repo_dir / "Makefile").is_file():
        return f"make -C {shlex.quote(str(repo_dir))} install"
    return "make install (in a clone of the IDGBR for QGIS repository)"


def read_site_packages(plugin_dir: Path = PLUGIN_DIR) -> tuple[Path | None, str | None]:
    """The venv's site-packages recorded at install time, or why there is none."""
    path_file = plugin_dir / PATH_FILE
    try:
        site_packages = Path(json.loads(path_file.read_text())["site_packages"])
    except FileNotFoundError:
        return None, f"{path_file} is missing: the engine was never installed"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"{path_file} is unreadable: {exc}"
    if not site_packages.is_dir():
        return None, f"{site_packages} (from {path_file}) does not exist"
    return site_packages, None


# Pure-Python packages torch imports whose Debian copies are too old for it (Debian's sympy lacks
# what torch 2.13 imports): found in the venv although its folder comes after Debian's.
VENV_FIRST = ("mpmath", "sympy")


class VenvFirst(importlib.abc.MetaPathFinder):
    """Finds the top-level packages of VENV_FIRST in the venv only, when first imported (torch
    imports sympy lazily: nothing is loaded at QGIS start-up); their submodules follow the
    package's own path."""

    def __init__(self, site_packages: Path) -> None:
        self.site_packages = str(site_packages)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in VENV_FIRST:
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [self.site_packages])


def add_site_packages(site_packages: Path) -> None:
    """Append the venv's site-packages to sys.path, once, and find VENV_FIRST there.

    site.addsitedir also runs the folder's .pth files, which the editable install of the
    engine needs; skipping a folder already on sys.path keeps plugin reloads from running
    them twice.
    """
    if str(site_packages) not in sys.path:
        site.addsitedir(str(site_packages))
    if not any(isinstance(f, VenvFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, VenvFirst(site_packages))


def describe_failure(exc: BaseException) -> tuple[str | None, str]:
    """The module that failed to import and the root cause, in one line.

    A missing module names itself (ImportError.name). Otherwise the module is the one whose
    code raised, and the message is the first exception of the chain: pandas, for example,
    hides "Please upgrade numpy" behind "C extension: None not built".
    """
    module = exc.name if isinstance(exc, ImportError) else None
    if module is None:
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        module = tb.tb_frame.f_globals.get("__name__") if tb is not None else None
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    return module, " ".join(f"{type(root).__name__}: {root}".split())


def probe_engine(plugin_dir: Path = PLUGIN_DIR, repo_dir: Path = REPO_DIR) -> EngineStatus:
    """Add the engine's environment to sys.path and try `import idgbr`."""
    command = install_command(repo_dir)
    site_packages, problem = read_site_packages(plugin_dir)
    if site_packages is not None:
        add_site_packages(site_packages)
    try:
        engine = importlib.import_module(ENGINE_MODULE)
    # Any failure, not only ImportError: a broken engine must not stop QGIS loading the plugin.
    except Exception as exc:  # noqa: BLE001
        module, error = describe_failure(exc)
        return EngineStatus(ok=False, install_command=command, site_packages=site_packages,
                            module=module, error=error + (f"; {problem}" if problem else ""))
    return EngineStatus(ok=True, install_command=command, site_packages=site_packages,
                        version=getattr(engine, "__version__", "?"))
