"""Turn QGIS layers into what the engine reads: file paths.

The engine opens files with GDAL itself (in the task's thread), so it must be given a path, never
a QgsMapLayer. An image from a web map service (WMS, WMTS, XYZ tiles) is first saved as a GeoTIFF
for the run's extent (RasterExport); other layers without a file (PostGIS, memory…) are refused
with a message that tells the user what to do instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransformContext, QgsMapLayer,
                       QgsProviderRegistry, QgsRasterDataProvider, QgsRasterFileWriter,
                       QgsRasterLayer, QgsRasterPipe, QgsRectangle)

FILE_PROVIDERS = ("gdal", "ogr")
WEB_PROVIDERS = ("wms",)  # QGIS serves WMS, WMTS and XYZ tiles through the "wms" provider
MAX_EXPORT_PIXELS = 20000  # per side: beyond, the user surely picked the wrong extent or resolution


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


def is_web_raster(layer: QgsMapLayer) -> bool:
    """An image the engine cannot open, but QGIS can render to a GeoTIFF."""
    return isinstance(layer, QgsRasterLayer) and layer.providerType() in WEB_PROVIDERS


@dataclass
class RasterExport:
    """A web raster to save as a GeoTIFF before the run. Built on the main thread (the provider
    is a clone, so the task's thread never touches the layer); write() runs in the task."""

    provider: QgsRasterDataProvider
    extent: QgsRectangle
    crs: QgsCoordinateReferenceSystem
    width: int
    height: int
    path: Path

    @classmethod
    def plan(cls, layer: QgsRasterLayer, extent: QgsRectangle, resolution: float, path: Path) -> "RasterExport":
        """`extent` (in the layer CRS) at `resolution` map units per pixel; SourceError when unreasonable."""
        if extent.isEmpty() or resolution <= 0:
            raise SourceError(f"layer '{layer.name()}' is a web map: choose the canvas extent or "
                              "selected polygons as the extent, the whole layer is the whole world")
        width, height = math.ceil(extent.width() / resolution), math.ceil(extent.height() / resolution)
        if max(width, height) > MAX_EXPORT_PIXELS:
            raise SourceError(f"saving '{layer.name()}' at {resolution:g} units/pixel over this extent makes "
                              f"{width}×{height} pixels: zoom in or choose a smaller extent")
        return cls(layer.dataProvider().clone(), QgsRectangle(extent), layer.crs(), width, height, path)

    def write(self) -> str:
        """Render the layer into `path` (GeoTIFF); returns the path, or raises RuntimeError."""
        pipe = QgsRasterPipe()
        pipe.set(self.provider)
        writer = QgsRasterFileWriter(str(self.path))
        writer.setOutputFormat("GTiff")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        error = writer.writeRaster(pipe, self.width, self.height, self.extent, self.crs,
                                   QgsCoordinateTransformContext())
        if error != QgsRasterFileWriter.NoError:
            self.path.unlink(missing_ok=True)
            raise RuntimeError(f"cannot save the web map to {self.path} (QgsRasterFileWriter error {error})")
        return str(self.path)
