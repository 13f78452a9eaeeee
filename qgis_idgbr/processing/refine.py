"""Processing algorithm "Refine classification boundaries": `idgbr.refine` with the dock's parameters.

MODEL is an enum of the installed refiners whose values are their names (static strings), so saved
models and qgis_process calls that pass MODEL=guided keep working when models are added or removed;
a model folder goes into MODEL_FOLDER, which overrides MODEL. OVERWRITE is on by default: Processing
replaces its outputs, so re-running into the same OUTPUT folder works.
"""
from __future__ import annotations

from typing import Any

from qgis.core import (QgsProcessing, QgsProcessingAlgorithm, QgsProcessingContext, QgsProcessingFeedback,
                       QgsProcessingOutputRasterLayer, QgsProcessingOutputVectorLayer, QgsProcessingParameterBoolean,
                       QgsProcessingParameterDefinition, QgsProcessingParameterEnum, QgsProcessingParameterExtent,
                       QgsProcessingParameterField, QgsProcessingParameterFile,
                       QgsProcessingParameterFolderDestination,
                       QgsProcessingParameterMapLayer, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterString, QgsVectorLayer)

from ..presets import refiner_cards
from ..sources import layer_path
from .common import bridge, engine_errors

DEVICES = ("auto", "cpu", "cuda")
# MODEL starts on "auto": the engine picks the installed default for the coarse layer's kind
# (idgbr.models.defaults), as the command line and the dock do.
AUTO = "auto"
DEFAULT_MODEL = AUTO
Int, Double = QgsProcessingParameterNumber.Integer, QgsProcessingParameterNumber.Double


class RefineAlgorithm(QgsProcessingAlgorithm):
    IMAGE, COARSE, CLASS_FIELD, MODEL, MODEL_FOLDER = "IMAGE", "COARSE", "CLASS_FIELD", "MODEL", "MODEL_FOLDER"
    AOI, DEVICE, OVERWRITE = "AOI", "DEVICE", "OVERWRITE"
    STEPS, GUIDANCE, SAMPLES, TILE_SIZE, OVERLAP, BATCH_SIZE = ("STEPS", "GUIDANCE", "SAMPLES", "TILE_SIZE",
                                                                 "OVERLAP", "BATCH_SIZE")
    SIMPLIFY, MIN_AREA, REGULARIZE, SEED, OUTPUT = "SIMPLIFY", "MIN_AREA", "REGULARIZE", "SEED", "OUTPUT"
    SCHEDULER, BLOCK_SIZE, REACH = "SCHEDULER", "BLOCK_SIZE", "REACH"

    def name(self) -> str:
        return "refine"

    def displayName(self) -> str:  # noqa: N802
        return "Refine classification boundaries"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Refines a coarse classification (integer raster, or polygons with an integer class field; no "
                "field: every polygon is class 1) over an orthophoto. Writes refined.tif, confidence.tif, "
                "coarse.tif and refined.gpkg (layers 'refined' and 'changes') to the output folder, replacing "
                "the results of an earlier run there unless 'Overwrite existing results' is off.\n"
                + models_help(installed_refiners()))

    def createInstance(self) -> "RefineAlgorithm":  # noqa: N802
        return RefineAlgorithm()

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.IMAGE, "Image"))
        self.addParameter(QgsProcessingParameterMapLayer(
            self.COARSE, "Coarse classification (raster or polygons)", optional=True,
            types=[QgsProcessing.TypeRaster, QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(self.CLASS_FIELD, "Class field (integer)",
                                                      parentLayerParameterName=self.COARSE, optional=True,
                                                      type=QgsProcessingParameterField.Numeric))
        cards = installed_refiners()
        names = [AUTO] + [card.name for card in cards]
        default = DEFAULT_MODEL if DEFAULT_MODEL in names else next(iter(names), None)
        model = QgsProcessingParameterEnum(self.MODEL, "Model", names, defaultValue=default, optional=not names,
                                           usesStaticStrings=True)
        model.setHelp("An installed refiner, given by name (MODEL=guided), or auto: the installed default for the "
                      "coarse layer's kind; the algorithm's help describes each.")
        self.addParameter(model)
        folder = QgsProcessingParameterFile(self.MODEL_FOLDER, "Model folder (overrides Model)",
                                            behavior=QgsProcessingParameterFile.Folder, optional=True)
        folder.setHelp("A model folder (with model_card.json) that is not installed, or the owner/name of a "
                       "model already in the local huggingface cache; when given, Model is ignored.")
        self.addParameter(folder)
        self.addParameter(QgsProcessingParameterExtent(self.AOI, "Extent (default: the whole image)",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", list(DEVICES), defaultValue=0))
        advanced = [
            QgsProcessingParameterNumber(self.STEPS, "Sampling steps (0: model default)", Int, 0, minValue=0),
            QgsProcessingParameterNumber(self.GUIDANCE, "Guidance weight (0: model default)", Double, 0.0,
                                         minValue=0),
            QgsProcessingParameterNumber(self.SAMPLES, "Samples per tile (>1: uncertainty raster)", Int, 1,
                                         minValue=1),
            QgsProcessingParameterNumber(self.REACH, "Reach: how far a boundary may move, px at the model's resolution "
                                                    "(0: model default; 2-4 for layers already close)", Int, 0,
                                         minValue=0),
            QgsProcessingParameterNumber(self.TILE_SIZE, "Tile size (0: model default)", Int, 0, minValue=0,
                                         maxValue=4096),
            QgsProcessingParameterNumber(self.OVERLAP, "Tile overlap (-1: model default)", Double, -1.0,
                                         minValue=-1, maxValue=0.9),
            QgsProcessingParameterNumber(self.BATCH_SIZE, "Batch size", Int, 4, minValue=1),
            QgsProcessingParameterNumber(self.SIMPLIFY, "Simplification tolerance (pixels)", Double, 1.0,
                                         minValue=0),
            QgsProcessingParameterNumber(self.MIN_AREA, "Minimum polygon area (m²; -1: the model card's)", Double,
                                         -1.0, minValue=-1),
            QgsProcessingParameterBoolean(self.REGULARIZE, "Right angles for the model's building classes", True),
            QgsProcessingParameterNumber(self.SEED, "Random seed (-1: none)", Int, -1, minValue=-1),
            QgsProcessingParameterString(self.SCHEDULER, "Dask scheduler (empty: in QGIS; local:N; tcp://host:8786)",
                                         "", optional=True),
            QgsProcessingParameterNumber(self.BLOCK_SIZE, "Block size with a Dask scheduler (pixels, a multiple "
                                         "of 256)", Int, 4096, minValue=256),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "Output folder"))
        overwrite = QgsProcessingParameterBoolean(self.OVERWRITE, "Overwrite existing results", True)
        overwrite.setHelp("Replace the results of an earlier run in the output folder; off: such a folder is "
                          "refused and nothing in it changes.")
        self.addParameter(overwrite)
        self.addOutput(QgsProcessingOutputRasterLayer("REFINED", "Refined classes"))
        self.addOutput(QgsProcessingOutputRasterLayer("CONFIDENCE", "Confidence"))
        self.addOutput(QgsProcessingOutputVectorLayer("POLYGONS", "Refined polygons (a polygon coarse layer: its "
                                                      "features, fids and attributes kept)",
                                                      QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputVectorLayer("NEW", "New polygons (refined regions of no input feature)",
                                                      QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputVectorLayer("REMOVED", "Removed input features",
                                                      QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputVectorLayer("CHANGES", "Changes", QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict:
        import idgbr

        progress, cancel = bridge(feedback)

        def run() -> dict:
            image = self.parameterAsRasterLayer(parameters, self.IMAGE, context)
            coarse = self.parameterAsLayer(parameters, self.COARSE, context)
            number = lambda key: self.parameterAsDouble(parameters, key, context)  # noqa: E731
            count = lambda key: self.parameterAsInt(parameters, key, context)  # noqa: E731
            aoi = None
            if parameters.get(self.AOI):
                r = self.parameterAsExtent(parameters, self.AOI, context, image.crs())
                aoi = (r.xMinimum(), r.yMinimum(), r.xMaximum(), r.yMaximum())
            options = {k: v for k, v in (("steps", count(self.STEPS)), ("guidance", number(self.GUIDANCE)),
                                         ("samples", count(self.SAMPLES) if count(self.SAMPLES) > 1 else 0),
                                         ("reach", count(self.REACH))) if v}
            result = idgbr.refine(
                layer_path(image), layer_path(coarse) if coarse else None,
                self.parameterAsString(parameters, self.MODEL_FOLDER, context)
                or self.parameterAsEnumString(parameters, self.MODEL, context),
                self.parameterAsString(parameters, self.OUTPUT, context),
                class_field=(self.parameterAsString(parameters, self.CLASS_FIELD, context) or None)
                if isinstance(coarse, QgsVectorLayer) else None,
                aoi=aoi, tile_size=count(self.TILE_SIZE) or None,
                overlap=None if number(self.OVERLAP) < 0 else number(self.OVERLAP),
                batch_size=count(self.BATCH_SIZE), seed=None if count(self.SEED) < 0 else count(self.SEED),
                device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
                simplify=number(self.SIMPLIFY),
                min_area_m2=None if number(self.MIN_AREA) < 0 else number(self.MIN_AREA),
                regularize_classes=None if self.parameterAsBool(parameters, self.REGULARIZE, context) else (),
                overwrite=self.parameterAsBool(parameters, self.OVERWRITE, context),
                refiner_options=options or None,
                scheduler=self.parameterAsString(parameters, self.SCHEDULER, context) or None,
                block_size=count(self.BLOCK_SIZE), progress=progress, cancel=cancel)
            for line in result.summary:
                feedback.pushInfo(line)
            feedback.pushInfo(f"{result.tiles} tiles on {result.device}; area per class (m²): "
                              f"{result.class_areas_m2}")
            return {self.OUTPUT: str(result.out_dir), "REFINED": str(result.refined),
                    "CONFIDENCE": str(result.confidence), "POLYGONS": f"{result.vectors}|layername=refined",
                    "CHANGES": f"{result.vectors}|layername=changes",
                    **({"NEW": f"{result.vectors}|layername=new", "REMOVED": f"{result.vectors}|layername=removed"}
                       if result.features is not None else {})}

        return engine_errors(run)


def installed_refiners() -> list[Any]:
    """The installed models that refine (coarse segmentors only make the coarse map)."""
    from idgbr.models import list_models

    return refiner_cards(list_models())


def models_help(cards: list[Any]) -> str:
    """What each installed refiner does, from its card, for the algorithm's help."""
    lines = [f"{card.name}: {card.description or card.task or 'no description'}" for card in cards]
    return ("Models (MODEL=name):\n" + "\n".join(lines) if lines
            else "No refiner is installed: give a model folder (MODEL_FOLDER).")
