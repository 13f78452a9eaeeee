"""Load a finished run's outputs into the project as one styled layer group.

Runs on the main thread only (QgsTask.finished): layers and the layer tree belong to it.
Fixed styles (changes, confidence, uncertainty) are QML files shipped in resources/styles. The
class colours depend on the model, so the class styles are built here from its card, and the
polygons' style is also saved into the GeoPackage as its default: it follows the file anywhere.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from qgis.core import (QgsCategorizedSymbolRenderer, QgsLayerTreeGroup, QgsPalettedRasterRenderer,
                       QgsProject, QgsRasterLayer, QgsRendererCategory, QgsSymbol, QgsVectorLayer)
from qgis.PyQt.QtGui import QColor

REFINED_LAYER, CHANGES_LAYER = "refined", "changes"
STYLES = Path(__file__).resolve().parent / "styles"  # a link to resources/styles; `make package` copies it


def group_name(image_name: str, when: float | None = None) -> str:
    """The group's name tells runs apart: which image, and when."""
    return f"IDGBR — {image_name} — {time.strftime('%H:%M:%S', time.localtime(when))}"


def load_results(result: Any, image_name: str, project: QgsProject | None = None) -> QgsLayerTreeGroup:
    """Add the refined raster, polygons, changes and confidence (+ uncertainty) of an
    `idgbr.RefineResult` as a group at the top of the layer tree; returns the group."""
    project = project or QgsProject.instance()
    layers = [_paletted(QgsRasterLayer(str(result.refined), "refined classes"), result.classes),
              _by_class(_gpkg_layer(result.vectors, REFINED_LAYER, "refined polygons"), result.classes),
              _styled(_gpkg_layer(result.vectors, CHANGES_LAYER, "changes"), "changes"),
              _styled(QgsRasterLayer(str(result.confidence), "confidence"), "confidence")]
    if result.uncertainty is not None:
        layers.append(_styled(QgsRasterLayer(str(result.uncertainty), "uncertainty"), "uncertainty"))
    bad = [layer.name() for layer in layers if not layer.isValid()]
    if bad:
        raise RuntimeError(f"QGIS cannot open the outputs {', '.join(bad)} in {result.out_dir}")
    group = project.layerTreeRoot().insertGroup(0, group_name(image_name))
    for layer in layers:
        project.addMapLayer(layer, False)
        group.addLayer(layer)
    # Below the polygons, the rasters would hide the image: only the polygons are shown at first.
    for node in group.findLayers():
        node.setItemVisibilityChecked(node.layer().type() == node.layer().VectorLayer)
    return group


def _gpkg_layer(path: Path, layer: str, name: str) -> QgsVectorLayer:
    return QgsVectorLayer(f"{path}|layername={layer}", name, "ogr")


def _paletted(layer: QgsRasterLayer, classes: list) -> QgsRasterLayer:
    """Colours from the file's colour table (written from the model card), names from the card."""
    if not layer.isValid():
        return layer
    names = {c.id: c.name for c in classes}
    data = QgsPalettedRasterRenderer.colorTableToClassData(layer.dataProvider().colorTable(1))
    data = [QgsPalettedRasterRenderer.Class(d.value, d.color, names.get(int(d.value), d.label))
            for d in data if int(d.value) in names] or \
        [QgsPalettedRasterRenderer.Class(c.id, QColor(c.color), c.name) for c in classes]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, data))
    return layer


def _by_class(layer: QgsVectorLayer, classes: list) -> QgsVectorLayer:
    """Categorized on class_id with the class colours, half transparent over the image."""
    if not layer.isValid():
        return layer
    categories = []
    for c in classes:
        symbol = QgsSymbol.defaultSymbol(layer.geometryType())
        symbol.setColor(QColor(c.color))
        symbol.setOpacity(0.6)
        categories.append(QgsRendererCategory(c.id, symbol, c.name))
    layer.setRenderer(QgsCategorizedSymbolRenderer("class_id", categories))
    # Default style inside the GeoPackage: opening or exporting the file elsewhere keeps the colours.
    error = layer.saveStyleToDatabase("idgbr classes", "IDGBR refined classes", True, "")
    if error:
        raise RuntimeError(f"cannot save the polygons' style into {layer.source()}: {error}")
    return layer


def _styled(layer: Any, style: str) -> Any:
    """Apply a shipped QML style (resources/styles/<style>.qml)."""
    if layer.isValid():
        message, ok = layer.loadNamedStyle(str(STYLES / f"{style}.qml"))
        if not ok:
            raise RuntimeError(f"cannot apply the style {style}.qml: {message}")
    return layer
