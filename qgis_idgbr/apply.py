"""Put refined geometries into the input layer's edit buffer: the analyst reviews them with
QGIS's own tools and commits (or rolls back); nothing reaches the file before that."""
from __future__ import annotations

from qgis.core import (QgsCoordinateTransform, QgsFeatureRequest, QgsGeometry, QgsProject, QgsVectorLayer,
                       QgsWkbTypes)

INPUT_FID = "input_fid"  # the refined layer's link to the input when its fids could not be kept


def apply_to_input(refined: QgsVectorLayer, target: QgsVectorLayer, selected_only: bool | None = None) -> int:
    """Change the geometry of each `target` feature that `refined` holds (same fid), in the
    target's edit buffer; only the selected features when `selected_only` (default: when some
    are selected). Returns how many geometries changed. A split feature going into a
    single-part layer keeps its largest part."""
    if not target.isEditable() and not target.startEditing():
        raise ValueError(f"layer {target.name()} cannot be edited")
    if selected_only is None:
        selected_only = target.selectedFeatureCount() > 0
    wanted = set(target.selectedFeatureIds()) if selected_only else None
    to_target = QgsCoordinateTransform(refined.crs(), target.crs(), QgsProject.instance())
    link = refined.fields().indexOf(INPUT_FID)
    single = not QgsWkbTypes.isMultiType(target.wkbType())
    changed = 0
    target.beginEditCommand("IDGBR: refined geometries")
    for feature in refined.getFeatures(QgsFeatureRequest()):
        fid = int(feature[link]) if link >= 0 else feature.id()
        if wanted is not None and fid not in wanted:
            continue
        geometry = QgsGeometry(feature.geometry())
        geometry.transform(to_target)
        if single:
            parts = geometry.asGeometryCollection()
            geometry = max(parts, key=lambda g: g.area()) if parts else geometry
        if target.changeGeometry(fid, geometry):
            changed += 1
    target.endEditCommand()
    return changed
