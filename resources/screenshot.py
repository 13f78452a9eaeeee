"""`make screenshot`: run inside the real QGIS (qgis --code, under Xvfb) with the plugin enabled.

Loads the bundled sample, opens the IDGBR dock, refines the sample with the task (run() then
finished(), synchronously, so the picture never shows a half-done run) and saves the main window
to the path in $IDGBR_SCREENSHOT at 1:5000, then a close-up at 1:1000 beside it (…_1000.png).
QGIS then exits whatever happened: a --code script that fails leaves QGIS waiting on a dialog.
"""
import os
import traceback
from pathlib import Path

import qgis.utils
from qgis.core import (QgsFillSymbol, QgsProject, QgsRasterLayer, QgsSingleSymbolRenderer,
                       QgsVectorLayer)
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QDockWidget
from qgis.utils import iface

SAMPLE = Path(os.environ["IDGBR_SAMPLE"])
OUT = Path(os.environ["IDGBR_SCREENSHOT"])
CLOSE_UP = OUT.with_name(f"{OUT.stem}_1000.png")


def refine() -> None:
    try:
        image = QgsRasterLayer(str(SAMPLE / "image.tif"), "image")
        coarse = QgsVectorLayer(str(SAMPLE / "coarse.gpkg"), "coarse fields", "ogr")
        # The parcel layer as an analyst styles it; the refined parcels come back in this style.
        coarse.setRenderer(QgsSingleSymbolRenderer(QgsFillSymbol.createSimple(
            {"color": "0,230,118,40", "outline_color": "0,230,118,255", "outline_width": "2",
             "outline_width_unit": "Pixel"})))
        QgsProject.instance().addMapLayers([image, coarse])
        iface.mainWindow().showMaximized()
        plugin = qgis.utils.plugins["qgis_idgbr"]
        plugin.dock_action.trigger()
        dock = plugin.dock
        dock.image_combo.setLayer(image)
        dock.coarse_combo.setLayer(coarse)
        dock.field_combo.setField("class_id")
        dock.apply_preset("Farmland cleanup")
        dock.output_widget.setFilePath(os.environ["IDGBR_SCREENSHOT_RUNS"])
        task = dock.make_task(*dock.build_request())
        if not task.run():
            raise RuntimeError(task.error or "cancelled")
        task.finished(True)
        # The group draws the coarse layer's outline itself; the input layer stays in the project.
        root = QgsProject.instance().layerTreeRoot()
        root.findLayer(coarse.id()).setItemVisibilityChecked(False)
        iface.layerTreeView().expandAll()  # the result group's legend: classes, statuses, styles
        root.findLayer(image.id()).setExpanded(False)
        for dock_name in ("Browser", "Browser2"):  # room for the legend
            panel = iface.mainWindow().findChild(QDockWidget, dock_name)
            if panel is not None:
                panel.hide()
        iface.mapCanvas().setExtent(image.extent())
        QTimer.singleShot(3000, lambda: at_scale(5000, OUT, lambda: at_scale(1000, CLOSE_UP, lambda: os._exit(0))))
    except Exception:
        traceback.print_exc()
        os._exit(1)


def at_scale(scale: float, path: Path, then) -> None:
    """Zoom (once the window has its size) to `scale` around the view's centre, then save."""
    try:
        canvas = iface.mapCanvas()
        canvas.zoomScale(scale)
        canvas.refreshAllLayers()
        QTimer.singleShot(4000, lambda: save(path, then))
    except Exception:
        traceback.print_exc()
        os._exit(1)


def save(path: Path, then) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    iface.mainWindow().grab().save(str(path))
    then()


QTimer.singleShot(3000, refine)
