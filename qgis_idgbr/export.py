"""Save the refined polygons in the format the user asks for, picked from the file extension."""
from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProject, QgsVectorFileWriter, QgsVectorLayer

DRIVERS = {".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON", ".json": "GeoJSON"}
FILE_FILTER = "GeoPackage (*.gpkg);;ESRI Shapefile (*.shp);;GeoJSON (*.geojson)"


def export_polygons(layer: QgsVectorLayer, path: str | Path) -> Path:
    """Write every feature of `layer` to `path`; raises ValueError with QGIS's message on failure."""
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
    return path
