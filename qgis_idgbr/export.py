"""Save the refined polygons in the format the user asks for, picked from the file extension.
Every attribute goes along; a Shapefile shortens field names to 10 characters (GDAL's
laundering), and the renames are returned so the user is told which field became which."""
from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProject, QgsVectorFileWriter, QgsVectorLayer

DRIVERS = {".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON", ".json": "GeoJSON"}
FILE_FILTER = "GeoPackage (*.gpkg);;ESRI Shapefile (*.shp);;GeoJSON (*.geojson)"


def export_polygons(layer: QgsVectorLayer, path: str | Path) -> dict[str, str]:
    """Write every feature of `layer` to `path`; returns the fields GDAL renamed (old → new).
    Raises ValueError with QGIS's message on failure."""
    path = Path(path)
    driver = DRIVERS.get(path.suffix.lower())
    if driver is None:
        raise ValueError(f"unknown format '{path.suffix}': use one of {', '.join(DRIVERS)}")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = driver
    options.layerName = path.stem
    options.fileEncoding = "UTF-8"
    error, message, *_ = QgsVectorFileWriter.writeAsVectorFormatV3(
        layer, str(path), QgsProject.instance().transformContext(), options)
    if error != QgsVectorFileWriter.NoError:
        raise ValueError(f"cannot write {path}: {message}")
    before, after = layer.fields().names(), QgsVectorLayer(str(path), "written", "ogr").fields().names()
    if len(before) != len(after):  # a field the format could not take
        return {name: "(not written)" for name in before if name not in after}
    return {old: new for old, new in zip(before, after) if old != new}
