"""`make screenshot`: run inside the real QGIS (qgis --code, under Xvfb) with the plugin enabled.

Loads the bundled sample, opens the IDGBR dock, refines the sample with the task (run() then
finished(), synchronously, so the picture never shows a half-done run) and saves the main window
to the path in $IDGBR_SCREENSHOT. QGIS then exits whatever happened: a --code script that fails
leaves QGIS waiting on a dialog.
"""
import os
import traceback
from pathlib import Path

import qgis.utils
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface

SAMPLE = Path(os.environ["IDGBR_SAMPLE"])
OUT = Path(os.environ["IDGBR_SCREENSHOT"])


def refine() -> None:
    try:
        image = QgsRasterLayer(str(SAMPLE / "image.tif"), "image")
        coarse = QgsVectorLayer(str(SAMPLE / "coarse.gpkg"), "coarse fields", "ogr")
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
        coarse.setOpacity(0.0)
        iface.mapCanvas().setExtent(image.extent())
        iface.mapCanvas().refreshAllLayers()
        QTimer.singleShot(4000, save)
    except Exception:
        traceback.print_exc()
        os._exit(1)


def save() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    iface.mainWindow().grab().save(str(OUT))
    os._exit(0)


QTimer.singleShot(3000, refine)
