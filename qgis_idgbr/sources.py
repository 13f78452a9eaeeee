"""Turn QGIS layers into what the engine reads: file paths.

The engine opens files with GDAL itself (in the task's thread), so it must be given a path, never
a QgsMapLayer. Layers served by other providers (WMS, XYZ, PostGIS, memory…) have no such path and
are refused with a message that tells the user what to do instead.
"""
from __future__ import annotations

from pathlib import Path

from qgis.core import QgsMapLayer, QgsProviderRegistry

FILE_PROVIDERS = ("gdal", "ogr")


class SourceError(ValueError):
    """A layer the engine cannot read; the message is meant for the user."""


def layer_path(layer: QgsMapLayer) -> str:
    """`path`, or `path|layername=NAME` for one layer of a multi-layer file such as a GeoPackage."""
    provider = layer.providerType()
    if provider not in FILE_PROVIDERS:
        raise SourceError(f"layer '{layer.name()}' comes from the '{provider}' provider, not from a file: "
                          "save it to a GeoTIFF or GeoPackage first (right click › Export › Save As…)")
    parts = QgsProviderRegistry.instance().decodeUri(provider, layer.source())
    path = parts.get("path") or ""
    if not Path(path).is_file():
        raise SourceError(f"layer '{layer.name()}' is not a local file ({layer.source()}): "
                          "save it to a GeoTIFF or GeoPackage first")
    layer_name = parts.get("layerName")
    return f"{path}|layername={layer_name}" if layer_name else path
