"""Processing algorithm "Vectorize classification": a class raster to polygons (engine's vectorize)."""
from __future__ import annotations

from typing import Any

from qgis.core import (QgsProcessing, QgsProcessingAlgorithm, QgsProcessingContext, QgsProcessingFeedback,
                       QgsProcessingParameterBoolean, QgsProcessingParameterNumber, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterVectorDestination)

from ..sources import SourceError, layer_path
from .common import bridge, engine_errors


class VectorizeAlgorithm(QgsProcessingAlgorithm):
    INPUT, SKIP_ZERO, SIMPLIFY, MIN_AREA, OUTPUT = "INPUT", "SKIP_ZERO", "SIMPLIFY", "MIN_AREA", "OUTPUT"

    def name(self) -> str:
        return "vectorize"

    def displayName(self) -> str:  # noqa: N802
        return "Vectorize classification"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Polygons of an integer class raster, gapless between neighbours, with class_id, class_name, "
                "area_m2 and perimeter_m (ground metres). Written to a GeoPackage.")

    def createInstance(self) -> "VectorizeAlgorithm":  # noqa: N802
        return VectorizeAlgorithm()

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Class raster"))
        self.addParameter(QgsProcessingParameterBoolean(self.SKIP_ZERO, "Leave out class 0 (background)", True))
        self.addParameter(QgsProcessingParameterNumber(self.SIMPLIFY, "Simplification tolerance (pixels)",
                                                       QgsProcessingParameterNumber.Double, 1.0, minValue=0))
        self.addParameter(QgsProcessingParameterNumber(self.MIN_AREA, "Minimum polygon area (m²)",
                                                       QgsProcessingParameterNumber.Double, 0.0, minValue=0))
        self.addParameter(QgsProcessingParameterVectorDestination(self.OUTPUT, "Polygons",
                                                                  QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict:
        from idgbr.vectorize import vectorize

        path = self.parameterAsOutputLayer(parameters, self.OUTPUT, context).split("|")[0]
        progress, cancel = bridge(feedback)

        def run() -> dict:
            if not path.lower().endswith(".gpkg"):
                raise SourceError(f"the polygons are written to a GeoPackage (.gpkg), not {path}")
            raster = layer_path(self.parameterAsRasterLayer(parameters, self.INPUT, context))
            areas = vectorize(raster, path, "polygons",
                              skip_classes=(0,) if self.parameterAsBool(parameters, self.SKIP_ZERO, context) else (),
                              simplify=self.parameterAsDouble(parameters, self.SIMPLIFY, context),
                              min_area_m2=self.parameterAsDouble(parameters, self.MIN_AREA, context),
                              progress=progress, cancel=cancel)
            feedback.pushInfo(f"area per class (m²): {areas}")
            return {self.OUTPUT: f"{path}|layername=polygons"}

        return engine_errors(run)
