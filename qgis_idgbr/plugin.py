"""The plugin: the IDGBR dock (toggled from the Plugins menu and a toolbar button), the Processing
provider, and an action that tells whether the IDGBR engine can be used. Without the engine only
the latter is added: the dock and the algorithms import it.

Qt comes from qgis.PyQt, which QGIS's Python always has; qtpy lives in the engine's venv and is
only importable once engine_env has added it, so the plugin cannot rely on it.
"""
from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsMessageLog
from qgis.gui import QgisInterface
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QMessageBox

from .engine_env import EngineStatus

MENU = "&IDGBR"
ACTION_TEXT = "IDGBR: about / engine status"
DOCK_ACTION_TEXT = "IDGBR: refine boundaries"
LOG_TAG = "IDGBR"
ICON = Path(__file__).with_name("icon.png")


class IdgbrPlugin:
    """Holds the engine status found at load time and shows it on demand."""

    def __init__(self, iface: QgisInterface, status: EngineStatus) -> None:
        self.iface = iface
        self.status = status
        self.action: QAction | None = None
        self.dock_action: QAction | None = None
        self.dock = None
        self.provider = None

    def initProcessing(self) -> None:  # noqa: N802 (QGIS plugin API; qgis_process calls only this)
        """Register the "idgbr" Processing provider when the engine is there."""
        if self.status.ok and self.provider is None:
            from .processing.provider import IdgbrProvider

            self.provider = IdgbrProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 (QGIS plugin API)
        """Add the menu actions and the provider; warn in the message bar when the engine is unusable."""
        self.initProcessing()
        self.action = QAction(QIcon(str(ICON)), ACTION_TEXT, self.iface.mainWindow())
        self.action.triggered.connect(self.show_status)
        self.iface.addPluginToMenu(MENU, self.action)
        if self.status.ok:
            self.dock_action = QAction(QIcon(str(ICON)), DOCK_ACTION_TEXT, self.iface.mainWindow())
            self.dock_action.setCheckable(True)
            self.dock_action.triggered.connect(self.toggle_dock)
            self.iface.addPluginToMenu(MENU, self.dock_action)
            self.iface.addToolBarIcon(self.dock_action)
        level = Qgis.Info if self.status.ok else Qgis.Warning
        QgsMessageLog.logMessage(self.status.summary(), LOG_TAG, level)
        if not self.status.ok:
            self.iface.messageBar().pushWarning(LOG_TAG, self.status.summary())

    def unload(self) -> None:
        """Remove everything initGui added, so QGIS can reload the plugin."""
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        if self.dock is not None:
            self.dock.detach()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.dock_action is not None:
            self.iface.removePluginMenu(MENU, self.dock_action)
            self.iface.removeToolBarIcon(self.dock_action)
            self.dock_action.deleteLater()
            self.dock_action = None
        if self.action is not None:
            self.iface.removePluginMenu(MENU, self.action)
            self.action.deleteLater()
            self.action = None

    def toggle_dock(self, checked: bool) -> None:
        """Show or hide the dock, building it the first time."""
        if self.dock is None:
            from .dock import IdgbrDock

            self.dock = IdgbrDock(self.iface, self.iface.mainWindow())
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
            self.dock.visibilityChanged.connect(self.dock_action.setChecked)
        self.dock.setVisible(checked)

    def show_status(self) -> None:
        """The about box: what this is and whether the engine is ready."""
        text = ("<b>IDGBR Boundary Refinement</b> <br>Refines the boundaries of a coarse "
                "land-cover map over an orthophoto.<br><br>" + self.status.summary())
        box = QMessageBox.information if self.status.ok else QMessageBox.warning
        box(self.iface.mainWindow(), "IDGBR", text)
