"""The dock and the refine task in real QGIS 3.22 (headless): layers in, styled layer group out.

The task is driven as QGIS would, minus the thread: run() (the engine only), then finished().
"""
from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
from qgis.core import (Qgis, QgsFeature, QgsGeometry, QgsLayerTreeGroup, QgsPalettedRasterRenderer, QgsProject,
                       QgsRasterLayer, QgsRectangle, QgsRuleBasedRenderer, QgsSettings,
                       QgsSingleBandPseudoColorRenderer, QgsSingleSymbolRenderer, QgsUnitTypes, QgsVectorLayer)
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import QPushButton

from tests.qgis_helpers import mosaic, plugin_package  # noqa: F401 (fixtures)


@pytest.fixture()
def project(mosaic, qgis_iface, plugin_package):  # noqa: F811
    """The image and the building polygons in a fresh project; the tree cleared afterwards."""
    tif, gpkg = mosaic
    image = QgsRasterLayer(str(tif), "ortho")
    buildings = QgsVectorLayer(f"{gpkg}|layername=buildings", "buildings", "ogr")
    assert image.isValid() and buildings.isValid()
    project = QgsProject.instance()
    project.addMapLayers([image, buildings])
    qgis_iface.messageBar().clear_messages()
    yield image, buildings
    project.clear()


@pytest.fixture()
def dock(project, qgis_iface, tmp_path):
    from qgis_idgbr.dock import IdgbrDock

    dock = IdgbrDock(qgis_iface)
    image, buildings = project
    dock.image_combo.setLayer(image)
    dock.coarse_combo.setLayer(buildings)
    dock.model_combo.setCurrentText("identity")
    dock.output_widget.setFilePath(str(tmp_path / "results"))
    yield dock
    dock.detach()
    dock.deleteLater()


def _groups() -> list[QgsLayerTreeGroup]:
    return QgsProject.instance().layerTreeRoot().findGroups()


def test_dock_lists_the_project_layers_and_builds_a_request(dock, project, mosaic, tmp_path):
    image, buildings = project
    images = [dock.image_combo.layer(i) for i in range(dock.image_combo.count())]
    coarse = [dock.coarse_combo.layer(i) for i in range(dock.coarse_combo.count())]
    assert images == [image] and buildings in coarse and image in coarse
    assert "identity" in [dock.model_combo.itemText(i) for i in range(dock.model_combo.count())]
    assert "coarse-buildings" not in dock.cards  # segmentors are not refiners
    assert "class_id" in [dock.field_combo.itemText(i) for i in range(dock.field_combo.count())]

    name, args, _ = dock.build_request()
    assert name == "ortho" and args["image"] == str(mosaic[0])
    assert args["coarse"] == f"{mosaic[1]}|layername=buildings"
    assert Path(args["out_dir"]).parent == tmp_path / "results" and args["refiner_options"] is None


def test_presets_pick_a_model_and_vectorization_settings(dock):
    dock.regularize.setChecked(False)
    dock.apply_preset("Buildings cleanup")
    from idgbr.models.defaults import default_model

    # The engine's default for building layers, as `idgbr refine --model auto` picks it.
    assert dock.model_combo.currentText() == default_model("buildings")[0].name
    assert dock.regularize.isChecked()
    dock.apply_preset("Farmland cleanup")
    assert dock.min_area.value() == 200.0 and not dock.regularize.isChecked()
    dock.apply_preset("Land cover cleanup")
    assert dock.model_combo.currentText() == default_model("landcover")[0].name == "landcover"


def test_auto_model_and_model_default_min_area_reach_the_engine(dock):
    """The dock's defaults are the command line's: `model="auto"` (the card-driven choice, shown
    with its card) and the model card's minimum area (None)."""
    from idgbr.models.defaults import default_model, layer_kind

    from qgis_idgbr.dock import DEFAULTS

    dock.model_combo.setCurrentText(DEFAULTS["model"])
    dock.min_area.setValue(DEFAULTS["min_area"])
    assert dock.min_area.text() == "model default"
    _, args, _ = dock.build_request()
    assert args["model"] == "auto" and args["min_area_m2"] is None and args["kind"] is None
    expected = default_model(layer_kind(args["coarse"]))[0].name
    assert dock.card_label.text().startswith(f"auto → <b>{expected}</b>")
    dock.apply_preset("Farmland cleanup")
    assert dock.build_request()[1]["min_area_m2"] == 200.0


def test_task_adds_a_styled_layer_group_matching_the_image(dock, project, qgis_iface, tmp_path):
    from qgis_idgbr.export import export_polygons

    image, buildings = project
    buildings.renderer().symbol().setColor(QColor("#123456"))  # the analyst's own style
    dock.field_combo.setField("class_id")
    task = dock.make_task(*dock.build_request())
    messages: list[str] = []
    task.message.connect(messages.append)
    assert task.run(), task.error
    task.finished(True)
    assert any(m.startswith("tile ") for m in messages) and task.progress() == 100

    (group,) = _groups()
    assert group.name().startswith("IDGBR — ortho — ")
    layers = {node.layer().name(): node.layer() for node in group.findLayers()}
    assert list(layers) == ["refine status", "coarse outline", "refined polygons", "new (no input feature)",
                            "changes", "refined classes", "confidence"]
    for name in ("refined classes", "confidence", "changes"):
        assert layers[name].isValid() and layers[name].crs() == image.crs(), name
    for name in ("refine status", "refined polygons", "new (no input feature)", "coarse outline"):
        assert layers[name].isValid() and layers[name].crs() == buildings.crs(), name  # the input's CRS
    polygons = layers["refined polygons"]
    # The input's features, each with its fid and attributes, in the input layer's own style.
    assert polygons.featureCount() == buildings.featureCount()
    assert {f.id() for f in polygons.getFeatures()} == {f.id() for f in buildings.getFeatures()}
    assert polygons.renderer().symbol().color().name() == "#123456"
    assert isinstance(layers["refine status"].renderer(), QgsRuleBasedRenderer)
    outline = layers["coarse outline"].renderer().symbol().symbolLayer(0)
    assert outline.strokeStyle() == Qt.DashLine and outline.brushStyle() == Qt.NoBrush
    renderer = layers["refined classes"].renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    assert [c.label for c in renderer.classes()] == ["background", "class 1"]
    confidence = layers["confidence"].renderer()  # the shipped QML
    assert isinstance(confidence, QgsSingleBandPseudoColorRenderer)
    assert (confidence.classificationMin(), confidence.classificationMax()) == (0.0, 1.0)
    assert isinstance(layers["changes"].renderer(), QgsSingleSymbolRenderer)
    assert layers["changes"].renderer().symbol().color().name() == "#ff00ff"
    # Success, naming the model that ran, with the output folder behind a button rather than a
    # path cut off in the bar.
    (item,) = qgis_iface.messageBar().items()
    (button,) = item.findChildren(QPushButton)
    assert item.level() == Qgis.Success and button.text() == "Open folder"
    assert "refined with identity on" in item.text()
    assert button.toolTip() == str(task.result.out_dir)

    assert dock.export_button.isEnabled() and dock.apply_button.isEnabled()
    for suffix in (".gpkg", ".shp", ".geojson"):
        renamed = export_polygons(polygons, tmp_path / f"export{suffix}")
        written = QgsVectorLayer(str(tmp_path / f"export{suffix}"), "x", "ogr")
        assert written.featureCount() == polygons.featureCount()
        assert len(written.fields()) == len(polygons.fields())  # every attribute goes along
        if suffix == ".shp":  # 10-character field names: each rename is reported
            assert renamed["refine_status"] == "refine_sta" and renamed["area_change_m2"] == "area_chang"
            assert set(renamed.values()) <= set(written.fields().names())
        else:
            assert renamed == {}


def test_class_polygons_are_named_outlines(dock, project, tmp_path):
    """A raster coarse layer: class polygons as 2 px outlines over a 20 % fill, named by the preset,
    without a legend entry for the background (which has no polygons)."""
    import idgbr

    image, buildings = project
    first = idgbr.refine(image.source(), f"{buildings.source()}", "identity", tmp_path / "coarse",
                         class_field="class_id")
    coarse = QgsRasterLayer(str(first.coarse), "coarse raster")
    QgsProject.instance().addMapLayer(coarse)
    dock.coarse_combo.setLayer(coarse)
    dock.apply_preset("Buildings cleanup")
    dock.model_combo.setCurrentText("identity")
    _run(dock)
    layers = {n.layer().name(): n.layer() for n in _groups()[0].findLayers()}
    assert "refine status" not in layers and not dock.apply_button.isEnabled()
    categories = layers["refined polygons"].renderer().categories()
    assert [c.label() for c in categories] == ["building"]
    fill = categories[0].symbol().symbolLayer(0)
    assert fill.strokeWidth() == 2 and fill.strokeWidthUnit() == QgsUnitTypes.RenderPixels
    assert fill.color().alpha() == 51 and fill.strokeColor().alpha() == 255
    assert [c.label for c in layers["refined classes"].renderer().classes()] == ["background", "building"]


def test_apply_puts_refined_geometries_in_the_edit_buffer(dock, project, qgis_iface):
    image, buildings = project
    before = {f.id(): (f.geometry().asWkt(), f.attributes()) for f in buildings.getFeatures()}
    dock.field_combo.setField("class_id")
    dock.model_combo.setCurrentText("guided")
    _run(dock)
    changed = dock.apply_to_input()
    assert buildings.isEditable() and changed > 0
    edited = buildings.editBuffer().changedGeometries()
    assert len(edited) == changed and not buildings.editBuffer().changedAttributeValues()
    after = {f.id(): (f.geometry().asWkt(), f.attributes()) for f in buildings.getFeatures()}
    assert set(after) == set(before)
    assert all(after[fid][1] == before[fid][1] for fid in before)  # attributes untouched
    assert sum(after[fid][0] != before[fid][0] for fid in before) == changed
    assert "edit buffer" in qgis_iface.messageBar().get_messages(Qgis.Info)[-1]
    assert buildings.rollBack()
    assert {f.id(): f.geometry().asWkt() for f in buildings.getFeatures()} == {k: v[0] for k, v in before.items()}


def test_apply_only_to_the_selected_features(dock, project):
    image, buildings = project
    dock.field_combo.setField("class_id")
    dock.model_combo.setCurrentText("guided")
    _run(dock)
    chosen = sorted(f.id() for f in buildings.getFeatures())[:3]
    buildings.selectByIds(chosen)
    assert dock.apply_to_input() == 3
    assert sorted(buildings.editBuffer().changedGeometries()) == chosen
    buildings.rollBack()


def test_cancelling_mid_run_leaves_no_files_and_no_layers(dock, qgis_iface):
    name, args, _ = dock.build_request()
    task = dock.make_task(name, args)
    task.message.connect(lambda text: text.startswith("tile ") and task.cancel())
    assert not task.run() and task.error is None  # the engine's Cancelled, not a failure
    task.finished(False)
    out = Path(args["out_dir"])
    assert not out.exists() or not any(out.rglob("*"))
    assert not _groups()
    assert qgis_iface.messageBar().get_messages(Qgis.Info)
    assert task.cancelled and dock.progress_label.text() == "cancelled; nothing was written"


def test_a_long_error_wraps_in_the_dock(dock, qgis_iface):
    width = dock.sizeHint().width()
    name, args, _ = dock.build_request()
    task = dock.make_task(name, {**args, "class_field": "a_field_that_does_not_exist_" * 40})
    assert not task.run()
    task.finished(False)
    assert dock.progress_label.text().startswith("failed: ") and len(dock.progress_label.text()) > 1000
    assert dock.progress_label.wordWrap() and dock.sizeHint().width() <= width + 10
    assert not task.cancelled


def test_the_view_moves_to_a_result_outside_it(dock, project, qgis_canvas):
    image = project[0]
    qgis_canvas.setDestinationCrs(image.crs())
    e = image.extent()
    qgis_canvas.setExtent(QgsRectangle(e.xMinimum() + 1e5, e.yMinimum(), e.xMaximum() + 1e5, e.yMaximum()))
    refined = _run(dock)
    assert qgis_canvas.extent().intersects(refined.extent())


def test_bad_input_shows_the_engine_message_and_adds_nothing(dock, qgis_iface):
    name, args, _ = dock.build_request()
    task = dock.make_task(name, {**args, "class_field": "no_such_field"})
    assert not task.run()
    task.finished(False)
    (message,) = qgis_iface.messageBar().get_messages(Qgis.Critical)
    assert "no_such_field" in message and not _groups()


def test_layers_without_a_file_are_refused(dock, qgis_iface):
    memory = QgsVectorLayer("Polygon?crs=EPSG:3857", "scratch", "memory")
    QgsProject.instance().addMapLayer(memory)
    dock.coarse_combo.setLayer(memory)
    assert dock.start() is None
    (message,) = qgis_iface.messageBar().get_messages(Qgis.Warning)
    assert "'memory' provider" in message and not _groups()


def test_settings_are_kept_per_project(dock, tmp_path):
    dock.model_combo.setCurrentText("morph")
    dock.samples.setValue(3)
    dock.overlap.setValue(0.4)
    dock.regularize.setChecked(False)
    dock.save_settings()  # what a run does
    project = QgsProject.instance()
    assert project.write(str(tmp_path / "p.qgz"))
    dock.model_combo.setCurrentText("identity")
    dock.samples.setValue(1)
    dock.regularize.setChecked(True)
    dock.output_widget.setFilePath("elsewhere")

    assert project.read(str(tmp_path / "p.qgz"))
    assert dock.model_combo.currentText() == "morph" and dock.samples.value() == 3
    assert dock.overlap.value() == 0.4 and not dock.regularize.isChecked()
    assert dock.output_widget.filePath() == str(tmp_path / "results")
    QgsSettings().remove("idgbr/dock")  # the next session starts from the defaults again


def _sub_rectangle(image: QgsRasterLayer, first: int, size: int, height: int | None = None) -> QgsRectangle:
    """`size` × `height` (default `size`) pixels of the image, `first` pixels in from its lower-left corner."""
    e, px = image.extent(), image.rasterUnitsPerPixelX()
    x, y = e.xMinimum() + first * px, e.yMinimum() + first * px
    return QgsRectangle(x, y, x + size * px, y + (height or size) * px)


def _run(dock) -> QgsRasterLayer:
    """Run the dock's request as the task manager would; the refined raster layer."""
    task = dock.make_task(*dock.build_request())
    assert task.run(), task.error
    task.finished(True)
    return next(n.layer() for n in _groups()[0].findLayers() if n.layer().name() == "refined classes")


def test_the_coarse_model_runs_over_the_canvas_extent(dock, project, qgis_canvas):
    image = project[0]
    qgis_canvas.setDestinationCrs(image.crs())
    screen = qgis_canvas.mapSettings().outputSize()  # a 256-pixel wide view, the canvas' shape
    view = _sub_rectangle(image, 384, 256, round(256 * screen.height() / screen.width()))
    qgis_canvas.setExtent(view)
    dock.extent_combo.setCurrentIndex(1)
    choices = [dock.coarse_combo.itemText(i) for i in range(dock.coarse_combo.count())]
    assert "none: run the coarse model coarse-buildings" in choices
    dock.coarse_combo.setCurrentText("none: run the coarse model coarse-buildings")

    name, args, _ = dock.build_request()
    assert args["coarse"] is None and args["coarse_model"].endswith("coarse-buildings")
    refined = _run(dock)
    assert refined.crs() == image.crs()
    assert qgis_canvas.extent().buffered(image.rasterUnitsPerPixelX()).contains(refined.extent())
    assert refined.width() <= 258 and refined.height() < image.height()


def test_selected_features_bound_the_run(dock, project, tmp_path):
    image = project[0]
    aoi = QgsVectorLayer(f"Polygon?crs={image.crs().authid()}", "aoi", "memory")
    inside, elsewhere = QgsFeature(), QgsFeature()
    inside.setGeometry(QgsGeometry.fromRect(_sub_rectangle(image, 100, 200)))
    elsewhere.setGeometry(QgsGeometry.fromRect(_sub_rectangle(image, 700, 200)))
    aoi.dataProvider().addFeatures([inside, elsewhere])
    QgsProject.instance().addMapLayer(aoi)
    aoi.selectByIds([next(aoi.getFeatures()).id()])
    dock.extent_combo.setCurrentIndex(2)
    dock.aoi_combo.setLayer(aoi)

    refined = _run(dock)
    assert _sub_rectangle(image, 99, 202).contains(refined.extent())
    assert refined.width() <= 201 and refined.height() <= 201


@pytest.fixture(scope="module")
def xyz_tiles(shared_data, tmp_path_factory) -> Path:
    """The real z21 OAM tiles of ../shared/data in the {z}/{x}/{y}.png layout of a tile server."""
    root = tmp_path_factory.mktemp("xyz")
    for png in (shared_data / "buildings_hot_oam" / "area2" / "images").glob("OAM-*-*-*.png"):
        _, x, y, z = png.stem.split("-")
        (root / z / x).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, root / z / x / f"{y}.png")
    return root


def test_a_web_map_is_saved_for_the_extent_then_refined(dock, project, qgis_canvas, xyz_tiles, tmp_path):
    url = quote(f"file://{xyz_tiles}/{{z}}/{{x}}/{{y}}.png", safe=":/")
    web = QgsRasterLayer(f"type=xyz&url={url}&zmin=21&zmax=21", "oam tiles", "wms")
    assert web.isValid() and web.crs().authid() == "EPSG:3857"
    QgsProject.instance().addMapLayer(web)
    dock.image_combo.setLayer(web)
    dock.extent_combo.setCurrentIndex(0)
    assert dock.start() is None  # the whole layer of a web map is the whole world
    (message,) = dock.iface.messageBar().get_messages(Qgis.Warning)
    assert "whole world" in message

    image = project[0]
    qgis_canvas.setDestinationCrs(image.crs())
    screen = qgis_canvas.mapSettings().outputSize()
    qgis_canvas.setExtent(_sub_rectangle(image, 300, 256, round(256 * screen.height() / screen.width())))
    dock.extent_combo.setCurrentIndex(1)
    name, args, source = dock.build_request()
    assert source is not None and args["image"] == str(source.path) and source.path.parent == tmp_path / "results"
    refined = _run(dock)
    saved = QgsRasterLayer(args["image"], "saved")
    assert saved.isValid() and saved.bandCount() >= 3 and saved.crs() == web.crs()
    assert saved.dataProvider().bandStatistics(1).stdDev > 10  # the tiles' pixels, not a blank canvas
    assert abs(saved.rasterUnitsPerPixelX() - qgis_canvas.mapUnitsPerPixel()) < 1e-3 * saved.rasterUnitsPerPixelX()
    assert refined.crs() == web.crs() and refined.extent().intersects(qgis_canvas.extent())
    assert qgis_canvas.extent().buffered(saved.rasterUnitsPerPixelX()).contains(refined.extent())
    polygons = next(n.layer() for n in _groups()[0].findLayers() if n.layer().name() == "refined polygons")
    assert polygons.featureCount() > 0  # buildings of the coarse layer found on the saved image
