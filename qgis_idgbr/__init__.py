"""QGIS entry point of the IDGBR plugin.

The engine is looked for in classFactory rather than at package import, so importing
qgis_idgbr.engine_env (tests, other tools) changes nothing in sys.path.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qgis.gui import QgisInterface

    from .plugin import IdgbrPlugin


def classFactory(iface: QgisInterface) -> IdgbrPlugin:  # noqa: N802 (QGIS plugin API)
    """Called by QGIS: find the engine, then build the plugin around what was found."""
    from .engine_env import probe_engine
    from .plugin import IdgbrPlugin

    return IdgbrPlugin(iface, probe_engine())
