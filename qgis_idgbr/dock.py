"""The IDGBR dock: pick an image, a coarse classification and a model, run, get layers back.

Built in code from qgis.gui widgets (layer and field pickers that follow the project). The dock
only gathers settings and starts a RefineTask; the task does the work and loads the results.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from qgis.core import (QgsApplication, QgsCoordinateTransform, QgsCsException, QgsFieldProxyModel,
                       QgsMapLayerProxyModel, QgsProject, QgsRasterLayer, QgsRectangle, QgsSettings, QgsUnitTypes,
                       QgsVectorFileWriter, QgsVectorLayer)
from qgis.gui import QgsCollapsibleGroupBox, QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (QCheckBox, QComboBox, QDockWidget, QDoubleSpinBox, QFileDialog, QFormLayout,
                                 QHBoxLayout, QLabel, QProgressBar, QPushButton, QSizePolicy, QSpinBox, QVBoxLayout,
                                 QWidget)

from .apply import apply_to_input
from .export import FILE_FILTER, export_polygons
from .presets import COARSE_TASK, PRESETS, card_summary, coarse_choices, preset_model, refiner_cards
from .results import POLYGONS_NAME
from .sources import RasterExport, SourceError, is_web_raster, layer_path
from .task import RefineTask, bar_and_log

SETTINGS = "idgbr/dock/"
EXTENTS = ("whole layer", "current map canvas extent", "selected features of a polygon layer")
DEVICES = ("auto", "cuda", "cpu")
PROJECT_SCOPE = "idgbr"
RUN_COARSE = "none: run the coarse model "
AUTO_MODEL = "auto"  # the engine's default for the coarse layer's kind, as on the command line
DEFAULTS: dict[str, Any] = {"model": AUTO_MODEL, "device": "auto", "extent": 0, "steps": 0, "guidance": 0.0,
                            "samples": 1, "tile_size": 0, "overlap": -0.05, "batch_size": 4, "simplify": 1.0,
                            "min_area": -5.0, "regularize": True, "output": ""}


def torch_devices() -> str:
    """What torch found, for the device picker's label."""
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 — the label says it, the run will fail loudly
        return f"torch unavailable ({exc})"
    if torch.cuda.is_available():
        return f"CUDA: {torch.cuda.get_device_name(0)}"
    return f"no CUDA GPU (torch {torch.__version__}): auto = CPU"


def default_output_root(project: QgsProject) -> Path:
    """Next to the project file, or a temporary folder while the project is unsaved."""
    home = project.absolutePath()
    return Path(home) / "idgbr_results" if home else Path(tempfile.gettempdir()) / "idgbr_results"


class IdgbrDock(QDockWidget):
    """Settings form + Run/Cancel/Export; remembers its settings with QgsSettings."""

    def __init__(self, iface: Any, parent: QWidget | None = None) -> None:
        super().__init__("IDGBR boundary refinement", parent)
        self.setObjectName("IdgbrDock")
        self.iface = iface
        self.task: RefineTask | None = None
        self.last_group = None
        self.last_input: QgsVectorLayer | None = None  # the polygon layer the last run refined
        from idgbr.models import list_models

        installed = list_models()
        self.cards = {c.name: c for c in refiner_cards(installed)}
        self.coarse_cards = {c.name: c for c in installed if c.task == COARSE_TASK}
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addLayout(self._inputs_form())
        layout.addWidget(self._advanced_box())
        layout.addLayout(self._run_row())
        layout.addStretch(1)
        self.setWidget(body)
        self.restore_settings()
        QgsProject.instance().readProject.connect(self.restore_project_settings)

    # --- building the form ---------------------------------------------------------------------

    def _inputs_form(self) -> QFormLayout:
        form = QFormLayout()
        self.image_combo = QgsMapLayerComboBox()
        self.image_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.coarse_combo = QgsMapLayerComboBox()
        self.coarse_combo.setFilters(QgsMapLayerProxyModel.RasterLayer | QgsMapLayerProxyModel.PolygonLayer)
        self.coarse_combo.setAllowEmptyLayer(True)
        self.coarse_combo.setToolTip(f"'{RUN_COARSE}…': no coarse layer, the coarse model makes one first")
        self.field_combo = QgsFieldComboBox()
        self.field_combo.setFilters(QgsFieldProxyModel.Int | QgsFieldProxyModel.LongLong)
        self.field_combo.setAllowEmptyFieldName(True)
        self.field_combo.setToolTip("integer class field; empty: every polygon is class 1")
        self.coarse_combo.layerChanged.connect(self._coarse_changed)
        self._coarse_changed(self.coarse_combo.currentLayer())
        self.preset_combo = QComboBox()
        self.preset_combo.addItem("(custom)")
        for preset in PRESETS:
            if preset_model(preset, list(self.cards.values())):
                self.preset_combo.addItem(preset.name)
        self.preset_combo.activated.connect(lambda: self.apply_preset(self.preset_combo.currentText()))
        self.model_combo = QComboBox()
        self.model_combo.addItems([AUTO_MODEL, *self.cards])
        self.model_combo.setToolTip("auto: the installed default for the coarse layer's kind (or the preset's)")
        self.card_label = QLabel()
        self.card_label.setWordWrap(True)
        self.model_combo.currentTextChanged.connect(self._model_changed)
        self.coarse_combo.layerChanged.connect(lambda _: self._model_changed(self.model_combo.currentText()))
        self._model_changed(self.model_combo.currentText())
        self.extent_combo = QComboBox()
        self.extent_combo.addItems(EXTENTS)
        self.aoi_combo = QgsMapLayerComboBox()
        self.aoi_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.extent_combo.currentIndexChanged.connect(lambda i: self.aoi_combo.setEnabled(i == 2))
        self.aoi_combo.setEnabled(False)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.output_widget = QgsFileWidget()
        self.output_widget.setStorageMode(QgsFileWidget.GetDirectory)
        self.output_widget.setToolTip("each run writes a new sub-folder here (refined.tif, refined.gpkg, …)")
        for label, widget in (("Image", self.image_combo), ("Coarse classes", self.coarse_combo),
                              ("Class field", self.field_combo), ("Preset", self.preset_combo),
                              ("Model", self.model_combo), ("", self.card_label), ("Extent", self.extent_combo),
                              ("Polygons", self.aoi_combo), ("Device", self.device_combo),
                              ("", QLabel(torch_devices())), ("Output folder", self.output_widget)):
            form.addRow(label, widget)
        return form

    def _advanced_box(self) -> QgsCollapsibleGroupBox:
        box = QgsCollapsibleGroupBox("Advanced")
        box.setCollapsed(True)
        form = QFormLayout(box)
        self.steps = _spin(QSpinBox(), 0, 1000, "model default")
        self.guidance = _spin(QDoubleSpinBox(), 0.0, 20.0, "model default", step=0.5)
        self.samples = _spin(QSpinBox(), 1, 32, "")
        self.samples.setToolTip("more than 1: several samples per tile and an uncertainty raster (diffusion models)")
        self.tile_size = _spin(QSpinBox(), 0, 4096, "model default", step=64)
        self.overlap = _spin(QDoubleSpinBox(), -0.05, 0.9, "model default", step=0.05)
        self.batch_size = _spin(QSpinBox(), 1, 256, "")
        self.simplify = _spin(QDoubleSpinBox(), 0.0, 100.0, "", step=0.5)
        self.simplify.setSuffix(" px")
        self.min_area = _spin(QDoubleSpinBox(), -5.0, 1e7, "model default", step=5.0)
        self.min_area.setSuffix(" m²")
        self.regularize = QCheckBox("right angles for building classes")
        for label, widget in (("Sampling steps", self.steps), ("Guidance", self.guidance),
                              ("Samples", self.samples), ("Tile size", self.tile_size),
                              ("Overlap", self.overlap), ("Batch size", self.batch_size),
                              ("Simplify", self.simplify), ("Minimum area", self.min_area),
                              ("Regularize", self.regularize)):
            form.addRow(label, widget)
        return box

    def _run_row(self) -> QVBoxLayout:
        column = QVBoxLayout()
        row = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.export_button = QPushButton("Export polygons…")
        self.apply_button = QPushButton("Apply to the input layer")
        self.apply_button.setToolTip("put the refined geometries of the selected (or all) features into the input "
                                     "layer's edit buffer; review, then save or roll back the edits")
        self.cancel_button.setEnabled(False)
        self.export_button.setEnabled(False)
        self.apply_button.setEnabled(False)
        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.export_button.clicked.connect(self.export)
        self.apply_button.clicked.connect(self.apply_to_input)
        for button in (self.run_button, self.cancel_button, self.export_button):
            row.addWidget(button)
        self.progress = QProgressBar()
        self.progress_label = QLabel()
        # A long error wraps instead of widening the dock (and squeezing the other panels).
        self.progress_label.setWordWrap(True)
        self.progress_label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.progress_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        column.addLayout(row)
        column.addWidget(self.apply_button)
        column.addWidget(self.progress)
        column.addWidget(self.progress_label)
        return column

    def _coarse_changed(self, layer: Any) -> None:
        self.field_combo.setLayer(layer if isinstance(layer, QgsVectorLayer) else None)
        self.field_combo.setEnabled(isinstance(layer, QgsVectorLayer))

    def _model_changed(self, name: str) -> None:
        card = self._card()
        summary = card_summary(card) if card else "no model installed"
        self.card_label.setText(f"auto → {summary}" if card and name == AUTO_MODEL else summary)
        self.coarse_combo.setAdditionalItems([RUN_COARSE + n for n in coarse_choices(card, self.coarse_cards)])

    def apply_preset(self, name: str) -> None:
        """Model and vectorization settings of a preset, in one click."""
        preset = next((p for p in PRESETS if p.name == name), None)
        model = preset and preset_model(preset, list(self.cards.values()))
        if preset is None or model is None:
            return
        self.preset_combo.setCurrentText(name)
        self.model_combo.setCurrentText(model)
        self.simplify.setValue(preset.simplify_px)
        self.min_area.setValue(preset.min_area_m2)
        self.regularize.setChecked(preset.regularize)

    # --- settings ------------------------------------------------------------------------------

    def _values(self) -> dict[str, Any]:
        return {"model": self.model_combo.currentText(), "device": self.device_combo.currentText(),
                "extent": self.extent_combo.currentIndex(), "steps": self.steps.value(),
                "guidance": self.guidance.value(), "samples": self.samples.value(),
                "tile_size": self.tile_size.value(), "overlap": self.overlap.value(),
                "batch_size": self.batch_size.value(), "simplify": self.simplify.value(),
                "min_area": self.min_area.value(), "regularize": self.regularize.isChecked(),
                "output": self.output_widget.filePath()}

    def _apply(self, values: dict[str, Any]) -> None:
        """Show saved values (a subset of _values()'s keys) in the form."""
        setters = {"model": self.model_combo.setCurrentText, "device": self.device_combo.setCurrentText,
                   "extent": self.extent_combo.setCurrentIndex, "steps": self.steps.setValue,
                   "guidance": self.guidance.setValue, "samples": self.samples.setValue,
                   "tile_size": self.tile_size.setValue, "overlap": self.overlap.setValue,
                   "batch_size": self.batch_size.setValue, "simplify": self.simplify.setValue,
                   "min_area": self.min_area.setValue, "regularize": self.regularize.setChecked,
                   "output": self.output_widget.setFilePath}
        for key, value in values.items():
            setters[key](value)

    def save_settings(self) -> None:
        """The last run's settings, for the next QGIS session and in the project (saved with it)."""
        settings, project = QgsSettings(), QgsProject.instance()
        for key, value in self._values().items():
            settings.setValue(SETTINGS + key, value)
            project.writeEntry(PROJECT_SCOPE, key, _to_entry(value))

    def restore_settings(self) -> None:
        """QgsSettings first (the last session), then the current project's own entries on top."""
        s = QgsSettings()
        self._apply({key: s.value(SETTINGS + key, default, type=type(default))
                     for key, default in DEFAULTS.items()})
        self.restore_project_settings()

    def restore_project_settings(self, *_: Any) -> None:
        """The entries the project file holds (scope "idgbr"); connected to QgsProject.readProject."""
        project, values = QgsProject.instance(), {}
        for key, current in self._values().items():
            text, found = project.readEntry(PROJECT_SCOPE, key, "")
            if found:
                values[key] = _from_entry(text, type(current))
        self._apply(values)

    def detach(self) -> None:
        """Stop following the project (the plugin unloads, the dock goes away)."""
        QgsProject.instance().readProject.disconnect(self.restore_project_settings)

    # --- running -------------------------------------------------------------------------------

    def build_request(self) -> tuple[str, dict[str, Any], RasterExport | None]:
        """The image's name, `idgbr.refine`'s arguments and, for a web map, how to save it as the
        run's image first; SourceError says what is wrong."""
        image = self.image_combo.currentLayer()
        if not isinstance(image, QgsRasterLayer):
            raise SourceError("choose an image raster layer")
        coarse = self.coarse_combo.currentLayer()
        card = self._card()
        if card is None:
            raise SourceError("no model installed: see `idgbr models list`")
        coarse_model = self._coarse_model() if coarse is None else None
        root = Path(self.output_widget.filePath() or default_output_root(QgsProject.instance()))
        out_dir = root / f"{_safe(image.name())}_{time.strftime('%Y%m%d-%H%M%S')}"
        aoi, source = self._aoi(image, out_dir), None
        if is_web_raster(image):
            source = RasterExport.plan(image, self._web_extent(image, aoi), self._web_resolution(image, card),
                                       out_dir.with_name(f"{out_dir.name}_image.tif"))
        args: dict[str, Any] = {
            "image": str(source.path) if source else layer_path(image),
            "coarse": layer_path(coarse) if coarse else None,
            "model": AUTO_MODEL if self.model_combo.currentText() == AUTO_MODEL else str(card.path or card.name),
            "kind": self._kind(), "out_dir": str(out_dir), "coarse_model": coarse_model,
            "class_field": (self.field_combo.currentField() or None) if isinstance(coarse, QgsVectorLayer) else None,
            "aoi": aoi, "tile_size": self.tile_size.value() or None,
            "overlap": None if self.overlap.value() < 0 else self.overlap.value(),
            "batch_size": self.batch_size.value(), "device": self.device_combo.currentText(),
            "simplify": self.simplify.value(),
            "min_area_m2": None if self.min_area.value() < 0 else self.min_area.value(),
            "regularize_classes": None if self.regularize.isChecked() else (),
            "refiner_options": self._refiner_options(card)}
        return image.name(), args, source

    def _web_extent(self, image: QgsRasterLayer, aoi: str | tuple[float, ...] | None) -> QgsRectangle:
        """The part of a web map to save, in its CRS: the canvas box or the selected polygons'
        bounds (empty for the whole layer, which RasterExport refuses: it is the whole world)."""
        if isinstance(aoi, tuple):
            return QgsRectangle(*aoi)
        if aoi is None:
            return QgsRectangle()
        layer = self.aoi_combo.currentLayer()
        to_image = QgsCoordinateTransform(layer.crs(), image.crs(), QgsProject.instance())
        return to_image.transformBoundingBox(layer.boundingBoxOfSelected())

    def _web_resolution(self, image: QgsRasterLayer, card: Any) -> float:
        """Map units per pixel for a web map: the model's GSD when it has one and the map is in
        metres, otherwise what the canvas shows now."""
        if card.gsd_m and image.crs().mapUnits() == QgsUnitTypes.DistanceMeters:
            return float(card.gsd_m)
        canvas = self.iface.mapCanvas()
        settings = canvas.mapSettings()
        to_image = QgsCoordinateTransform(settings.destinationCrs(), image.crs(), QgsProject.instance())
        return to_image.transformBoundingBox(canvas.extent()).width() / max(settings.outputSize().width(), 1)

    def _kind(self) -> str | None:
        """The kind of coarse layer the chosen preset is for (None: the engine guesses it)."""
        preset = next((p for p in PRESETS if p.name == self.preset_combo.currentText()), None)
        return preset.kind if preset else None

    def _card(self) -> Any:
        """The chosen refiner's card; for "auto", the one the engine will pick for this layer."""
        name = self.model_combo.currentText()
        if name != AUTO_MODEL:
            return self.cards.get(name)
        from idgbr import InputError
        from idgbr.models.defaults import default_model, layer_kind

        coarse = self.coarse_combo.currentLayer()
        try:
            return default_model(self._kind() or layer_kind(layer_path(coarse) if coarse else None),
                                 list(self.cards.values()))[0]
        except (InputError, SourceError):
            return None

    def _coarse_model(self) -> str | None:
        """The coarse model picked in the coarse layer list ("none: run …"), as a path."""
        text = self.coarse_combo.currentText()
        if not text.startswith(RUN_COARSE):
            return None
        card = self.coarse_cards.get(text[len(RUN_COARSE):])
        return str(card.path or card.name) if card else text[len(RUN_COARSE):]

    def _refiner_options(self, card: Any) -> dict[str, Any] | None:
        """Sampling options only for the diffusion refiner; the others take none."""
        if card.refiner != "idgbr":
            return None
        options = {"steps": self.steps.value() or None, "guidance": self.guidance.value() or None}
        if self.samples.value() > 1:
            options["samples"] = self.samples.value()
        return {k: v for k, v in options.items() if v is not None} or None

    def _aoi(self, image: QgsRasterLayer, out_dir: Path) -> str | tuple[float, ...] | None:
        """None (whole layer), the canvas extent in the image CRS, or the selected polygons saved
        to a file beside the run (the engine reads files, in its own thread)."""
        choice = self.extent_combo.currentIndex()
        if choice == 1:
            canvas = self.iface.mapCanvas()
            to_image = QgsCoordinateTransform(canvas.mapSettings().destinationCrs(), image.crs(),
                                              QgsProject.instance())
            r = to_image.transformBoundingBox(canvas.extent())
            return (r.xMinimum(), r.yMinimum(), r.xMaximum(), r.yMaximum())
        if choice == 2:
            layer = self.aoi_combo.currentLayer()
            if layer is None or not layer.selectedFeatureCount():
                raise SourceError("select some polygons of the extent layer first")
            path = Path(tempfile.mkdtemp(prefix="idgbr-aoi-")) / "aoi.gpkg"
            options = QgsVectorFileWriter.SaveVectorOptions()
            options.driverName, options.onlySelectedFeatures = "GPKG", True
            error, message, *_ = QgsVectorFileWriter.writeAsVectorFormatV3(
                layer, str(path), QgsProject.instance().transformContext(), options)
            if error != QgsVectorFileWriter.NoError:
                raise SourceError(f"cannot save the selected polygons: {message}")
            return str(path)
        return None

    def start(self) -> RefineTask | None:
        """Run: check the inputs here (main thread), then hand the work to the task manager."""
        try:
            name, args, source = self.build_request()
        except SourceError as exc:
            self.iface.messageBar().pushWarning("IDGBR", str(exc))
            return None
        self.save_settings()
        self.task = self.make_task(name, args, source)
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def make_task(self, name: str, args: dict[str, Any], source: RasterExport | None = None) -> RefineTask:
        """A task wired to this dock's progress bar, buttons and export."""
        coarse = self.coarse_combo.currentLayer()
        self.last_input = coarse if isinstance(coarse, QgsVectorLayer) else None
        task = RefineTask(name, args, notify=bar_and_log(self.iface), source=source, coarse_layer=self.last_input,
                          class_names=self._class_names())
        task.progressChanged.connect(lambda value: self.progress.setValue(int(value)))
        task.message.connect(self.progress_label.setText)
        task.ended.connect(lambda: self._ended(task))
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        return task

    def _class_names(self) -> dict[int, str] | None:
        """Legend names from the active preset ("field", "building") when the model names no classes."""
        card = self.cards.get(self.model_combo.currentText())
        preset = next((p for p in PRESETS if p.name == self.preset_combo.currentText()), None)
        if card is None or card.classes or preset is None:
            return None
        return {1: preset.class_name}

    def _ended(self, task: RefineTask) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if task.group is not None:
            self.last_group = task.group
            self.export_button.setEnabled(True)
            self.apply_button.setEnabled(task.result.features is not None and self.last_input is not None)
            self.progress_label.setText(f"done: {task.result.out_dir}")
            self._show(task.group)
        elif task.cancelled:
            self.progress.setValue(0)
            self.progress_label.setText("cancelled; nothing was written")
        else:
            self.progress_label.setText(f"failed: {task.error}")

    def _show(self, group: Any) -> None:
        """Zoom to the result when none of it is in view."""
        canvas = self.iface.mapCanvas()
        crs = canvas.mapSettings().destinationCrs()
        extent = QgsRectangle()
        for node in group.findLayers():
            layer = node.layer()
            if layer.extent().isEmpty():  # an empty layer (no new polygons): no extent to show
                continue
            to_canvas = QgsCoordinateTransform(layer.crs(), crs, QgsProject.instance())
            try:
                extent.combineExtentWith(to_canvas.transformBoundingBox(layer.extent()))
            except QgsCsException:  # not expressible in the canvas CRS: leave the view alone
                return
        if not extent.isEmpty() and not canvas.extent().intersects(extent):
            canvas.setExtent(extent.buffered(0.05 * max(extent.width(), extent.height())))
            canvas.refresh()

    def cancel(self) -> None:
        if self.task is not None:
            self.progress_label.setText("cancelling…")
            self.task.cancel()

    def apply_to_input(self) -> int:
        """The refined features of the last run into the input layer's edit buffer (selected ones
        when some are selected); the user saves or rolls back."""
        refined = self._refined_polygons()
        if refined is None or self.last_input is None:
            return 0
        try:
            changed = apply_to_input(refined, self.last_input)
        except ValueError as exc:
            self.iface.messageBar().pushWarning("IDGBR", str(exc))
            return 0
        self.iface.messageBar().pushInfo("IDGBR", f"{changed} refined geometries are in the edit buffer of "
                                                  f"'{self.last_input.name()}': review, then save or roll back")
        return changed

    def _refined_polygons(self) -> QgsVectorLayer | None:
        layers = [n.layer() for n in self.last_group.findLayers()] if self.last_group else []
        return next((layer for layer in layers if layer.name() == POLYGONS_NAME), None)

    def export(self) -> None:
        """Save the last run's refined polygons as GeoPackage, Shapefile or GeoJSON."""
        polygons = self._refined_polygons()
        if polygons is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export refined polygons", "", FILE_FILTER)
        if not path:
            return
        try:
            renamed = export_polygons(polygons, path)
        except ValueError as exc:
            self.iface.messageBar().pushWarning("IDGBR", str(exc))
            return
        self.iface.messageBar().pushSuccess("IDGBR", f"refined polygons saved to {path}")
        if renamed:
            self.iface.messageBar().pushWarning("IDGBR", "Shapefile field names are at most 10 characters: " +
                                                ", ".join(f"{a} → {b}" for a, b in renamed.items()))


def _spin(box: Any, low: float, high: float, special: str, step: float = 1) -> Any:
    """A spin box whose lowest value may mean "use the model's default"."""
    box.setRange(low, high)
    box.setSingleStep(step)
    if special:
        box.setSpecialValueText(special)
    box.setAlignment(Qt.AlignRight)
    return box


def _to_entry(value: Any) -> str:
    """Project entries are kept as text: one writeEntry overload, no bool/int ambiguity."""
    return ("1" if value else "0") if isinstance(value, bool) else str(value)


def _from_entry(text: str, kind: type) -> Any:
    return text == "1" if kind is bool else kind(text)


def _safe(name: str) -> str:
    """A layer name as a folder name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:60] or "image"
