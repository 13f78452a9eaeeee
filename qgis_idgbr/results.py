"""Load a finished run's outputs into the project as one styled layer group.

Runs on the main thread only (QgsTask.finished): layers and the layer tree belong to it.
Fixed styles (changes, confidence, uncertainty, coarse outline, new, removed, refine status)
are QML files shipped in resources/styles. The class colours depend on the model, so the class
styles are built here from its card, and the polygons' style is also saved into the GeoPackage as
its default: it follows the file anywhere.

Read over imagery, the result must not hide what it is judged against: refined polygons are
class-coloured 2 px outlines over a 20 % fill, the coarse layer a dashed outline in another
colour, changes a hatch. When the coarse layer was a polygon layer, its features come back
(layer `refined`) in the input layer's own style, with the refine status drawn over them.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from qgis.core import (QgsCategorizedSymbolRenderer, QgsFillSymbol, QgsLayerTreeGroup, QgsMapLayer,
                       QgsPalettedRasterRenderer, QgsProject, QgsRasterLayer, QgsReadWriteContext,
                       QgsRendererCategory, QgsVectorLayer)
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtXml import QDomDocument

REFINED_LAYER, CHANGES_LAYER, NEW_LAYER, REMOVED_LAYER = "refined", "changes", "new", "removed"
POLYGONS_NAME = "refined polygons"  # the refined polygons' layer name in the group (export, apply)
STYLES = Path(__file__).resolve().parent / "styles"  # a link to resources/styles; `make package` copies it
OUTLINE_PX, FILL_ALPHA = 2, 51  # 20 % of 255


def group_name(image_name: str, when: float | None = None) -> str:
    """The group's name tells runs apart: which image, and when."""
    return f"IDGBR — {image_name} — {time.strftime('%H:%M:%S', time.localtime(when))}"


def load_results(result: Any, image_name: str, project: QgsProject | None = None, *,
                 coarse_layer: QgsVectorLayer | None = None,
                 class_names: dict[int, str] | None = None) -> QgsLayerTreeGroup:
    """Add the outputs of an `idgbr.RefineResult` as a group at the top of the layer tree; returns
    the group. `coarse_layer`: the polygon layer that was refined (its style is copied onto the
    refined features, its outline drawn dashed); `class_names`: names for classes the model card
    leaves unnamed ("field" rather than "class 1")."""
    project = project or QgsProject.instance()
    present = {c.id for c in result.classes if result.class_areas_m2.get(c.name, 0) > 0}
    classes = _named(result.classes, class_names or {})
    # The coarse outline goes over the refined outlines: its dashes show where they coincide.
    outline = [_styled(QgsVectorLayer(coarse_layer.source(), "coarse outline", coarse_layer.providerType()),
                       "coarse_outline")] if coarse_layer is not None and coarse_layer.isValid() else []
    layers: list[QgsMapLayer] = []
    if result.features is not None:
        features = _gpkg_layer(result.vectors, REFINED_LAYER, POLYGONS_NAME)
        if coarse_layer is not None and coarse_layer.isValid():
            _copy_style(coarse_layer, features)
        else:
            _class_outlines(features, classes, present)
        layers += [_styled(_gpkg_layer(result.vectors, REFINED_LAYER, "refine status"), "refine_status"), *outline,
                   features, _styled(_gpkg_layer(result.vectors, NEW_LAYER, "new (no input feature)"), "new")]
        removed = _gpkg_layer(result.vectors, REMOVED_LAYER, "removed features")
        if removed.isValid() and removed.featureCount() > 0:
            layers.append(_styled(removed, "removed"))
    else:
        polygons = _gpkg_layer(result.vectors, REFINED_LAYER, POLYGONS_NAME)
        layers += [*outline, _class_outlines(polygons, classes, present)]
    layers += [_styled(_gpkg_layer(result.vectors, CHANGES_LAYER, "changes"), "changes"),
               _paletted(QgsRasterLayer(str(result.refined), "refined classes"), classes),
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
    # Rasters would hide the image: only the vector layers are shown at first.
    for node in group.findLayers():
        node.setItemVisibilityChecked(node.layer().type() == QgsMapLayer.VectorLayer)
    return group


def _named(classes: list, names: dict[int, str]) -> list:
    """The classes with the given display names (ClassInfo is frozen: replaced, not mutated)."""
    return [replace(c, name=names[c.id]) if c.id in names else c for c in classes]


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


def outline_symbol(color: str) -> QgsFillSymbol:
    """A class colour as a 2 px outline over a 20 % fill: the image stays visible through it."""
    fill = QColor(color)
    fill.setAlpha(FILL_ALPHA)
    return QgsFillSymbol.createSimple({"color": ",".join(str(v) for v in fill.getRgb()), "outline_color": color,
                                       "outline_width": str(OUTLINE_PX), "outline_width_unit": "Pixel",
                                       "joinstyle": "miter"})


def _class_outlines(layer: QgsVectorLayer, classes: list, present: set[int]) -> QgsVectorLayer:
    """Categorized on class_id, one legend entry per class that has polygons, named."""
    if not layer.isValid():
        return layer
    categories = [QgsRendererCategory(c.id, outline_symbol(c.color), c.name) for c in classes
                  if c.id in present]
    layer.setRenderer(QgsCategorizedSymbolRenderer("class_id", categories))
    # Default style inside the GeoPackage: opening or exporting the file elsewhere keeps the colours.
    error = layer.saveStyleToDatabase("idgbr classes", "IDGBR refined classes", True, "")
    if error:
        raise RuntimeError(f"cannot save the polygons' style into {layer.source()}: {error}")
    return layer


def _copy_style(source: QgsVectorLayer, target: QgsVectorLayer) -> None:
    """The input layer's symbology, labels and forms on the refined features (same fields)."""
    document, context = QDomDocument(), QgsReadWriteContext()
    error = source.exportNamedStyle(document, context)
    if error:
        raise RuntimeError(f"cannot copy the style of {source.name()}: {error}")
    ok, error = target.importNamedStyle(document)
    if not ok:
        raise RuntimeError(f"cannot copy the style of {source.name()}: {error}")


def _styled(layer: Any, style: str) -> Any:
    """Apply a shipped QML style (resources/styles/<style>.qml)."""
    if layer.isValid():
        message, ok = layer.loadNamedStyle(str(STYLES / f"{style}.qml"))
        if not ok:
            raise RuntimeError(f"cannot apply the style {style}.qml: {message}")
    return layer
