"""The stub plugin: one Plugins-menu action that tells whether the IDGBR engine can be used.

Qt comes from qgis.PyQt, which QGIS's Python always has; qtpy lives in the engine's venv and is
only importable once engine_env has added it, so the plugin cannot rely on it.
"""
from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsMessageLog
from qgis.gui import QgisInterface
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QMessageBox

from .engine_env import EngineStatus

MENU = "&IDGBR"
ACTION_TEXT = "IDGBR: about / engine status"
LOG_TAG = "IDGBR"
ICON = Path(__file__).with_name("icon.png")


class IdgbrPlugin:
    """Holds the engine status found at load time and shows it on demand."""

    def __init__(self, iface: QgisInterface, status: EngineStatus) -> None:
        self.iface = iface
        self.status = status
        self.action: QAction | None = None

    def initGui(self) -> None:  # noqa: N802 (QGIS plugin API)
        """Add the menu action; warn in the message bar when the engine is unusable."""
        self.action = QAction(QIcon(str(ICON)), ACTION_TEXT, self.iface.mainWindow())
        self.action.triggered.connect(self.show_status)
        self.iface.addPluginToMenu(MENU, self.action)
        level = Qgis.Info if self.status.ok else Qgis.Warning
        QgsMessageLog.logMessage(self.status.summary(), LOG_TAG, level)
        if not self.status.ok:
            self.iface.messageBar().pushWarning(LOG_TAG, self.status.summary())

    def unload(self) -> None:
        """Remove everything initGui added, so QGIS can reload the plugin."""
        if self.action is not None:
            self.iface.removePluginMenu(MENU, self.action)
            self.action.deleteLater()
            self.action = None

    def show_status(self) -> None:
        """The about box: what this is and whether the engine is ready."""
        text = ("<b>IDGBR Boundary Refinement</b> (stub)<br>Refines the boundaries of a coarse "
                "land-cover map over an orthophoto.<br><br>" + self.status.summary())
        box = QMessageBox.information if self.status.ok else QMessageBox.warning
        box(self.iface.mainWindow(), "IDGBR", text)
