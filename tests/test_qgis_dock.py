"""The dock and the refine task in real QGIS 3.22 (headless): layers in, styled layer group out.

The task is driven as QGIS would, minus the thread: run() (the engine only), then finished().
"""
from __future__ import annotations

from pathlib import Path

import pytest
from qgis.core import (Qgis, QgsCategorizedSymbolRenderer, QgsLayerTreeGroup, QgsPalettedRasterRenderer,
                       QgsProject, QgsRasterLayer, QgsVectorLayer)

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

    name, args = dock.build_request()
    assert name == "ortho" and args["image"] == str(mosaic[0])
    assert args["coarse"] == f"{mosaic[1]}|layername=buildings"
    assert Path(args["out_dir"]).parent == tmp_path / "results" and args["refiner_options"] is None


def test_presets_pick_a_model_and_vectorization_settings(dock):
    dock.regularize.setChecked(False)
    dock.apply_preset("Buildings cleanup")
    assert dock.model_combo.currentText() == "guided" and dock.regularize.isChecked()
    dock.apply_preset("Farmland cleanup")
    assert dock.min_area.value() == 200.0 and not dock.regularize.isChecked()


def test_task_adds_a_styled_layer_group_matching_the_image(dock, project, qgis_iface, tmp_path):
    from qgis_idgbr.export import export_polygons

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
    assert list(layers) == ["refined classes", "refined polygons", "changes", "confidence"]
    image = project[0]
    for layer in layers.values():
        assert layer.isValid() and layer.crs() == image.crs(), layer.name()
    renderer = layers["refined classes"].renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    assert [c.label for c in renderer.classes()] == ["background", "class 1"]
    polygons = layers["refined polygons"]
    assert isinstance(polygons.renderer(), QgsCategorizedSymbolRenderer) and polygons.featureCount() > 0
    assert qgis_iface.messageBar().get_messages(Qgis.Success)

    assert dock.export_button.isEnabled()  # the dock noticed (taskCompleted is emitted by finished)
    for suffix in (".gpkg", ".shp", ".geojson"):
        out = export_polygons(polygons, tmp_path / f"export{suffix}")
        assert QgsVectorLayer(str(out), "x", "ogr").featureCount() == polygons.featureCount()


def test_cancelling_mid_run_leaves_no_files_and_no_layers(dock, qgis_iface):
    name, args = dock.build_request()
    task = dock.make_task(name, args)
    task.message.connect(lambda text: text.startswith("tile ") and task.cancel())
    assert not task.run() and task.error is None  # the engine's Cancelled, not a failure
    task.finished(False)
    out = Path(args["out_dir"])
    assert not out.exists() or not any(out.rglob("*"))
    assert not _groups()
    assert qgis_iface.messageBar().get_messages(Qgis.Info)


def test_bad_input_shows_the_engine_message_and_adds_nothing(dock, qgis_iface):
    name, args = dock.build_request()
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
