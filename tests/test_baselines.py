"""The classical baseline refiners (crf, guided, morph) on a real building tile with a coarse
map made by `idgbr.coarsen`: proper probabilities, NO_COARSE kept unknown, invalid pixels
isolated, changes only near the coarse boundaries, and runs through the whole pipeline."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from scipy import ndimage

import idgbr
from idgbr.coarsen import agreement_iou, coarsen
from idgbr.errors import InputError
from idgbr.models import NO_COARSE, TileBatch, load_refiner

BASELINES = ("crf", "guided", "morph")
TILE = "buildings_hot_oam/area1/{}/OAM-1277175-1083844-21.png"


@pytest.fixture(scope="module")
def tile(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """(image (3, H, W) float32 in [0, 1], GT class ids) of a real tile with several buildings."""
    image = np.asarray(Image.open(shared_data / TILE.format("images")).convert("RGB"))
    gt = (np.asarray(Image.open(shared_data / TILE.format("masks"))) > 127).astype(np.uint8)
    assert 0.1 < gt.mean() < 0.8
    return image.transpose(2, 0, 1).astype(np.float32) / 255, gt


@pytest.fixture(scope="module")
def batch(tile) -> TileBatch:
    """Two coarse versions (blocky, OSM-style) of the tile; the second has an unknown band
    and a strip of image NoData."""
    image, gt = tile
    coarse = np.stack([coarsen(gt, "blocky", 1), coarsen(gt, "buildings-osm", 2)])
    valid = np.ones(coarse.shape, bool)
    coarse[1, 100:130] = NO_COARSE
    valid[1, :, -40:] = False
    return TileBatch(np.stack([image, image]), coarse, valid)


def _refiner(name: str, **options):
    ref = load_refiner(name, **options)
    ref.bind_classes(2)
    return ref


@pytest.mark.parametrize("name", BASELINES)
def test_probabilities_keep_unknown_and_stay_close_to_the_coarse(name, batch):
    probs = _refiner(name).predict(batch)
    assert probs.shape == (2, 2) + batch.coarse.shape[1:] and probs.dtype == np.float32
    assert probs.min() >= 0 and np.allclose(probs.sum(1), 1, atol=1e-5)
    unknown = batch.coarse == NO_COARSE
    np.testing.assert_allclose(probs.transpose(1, 0, 2, 3)[:, unknown], 0.5)
    for i in range(2):
        known = ~unknown[i] & batch.valid[i]
        assert agreement_iou(batch.coarse[i][known], probs[i].argmax(0)[known], 2) > 0.85


@pytest.mark.parametrize("name", BASELINES)
def test_invalid_pixels_do_not_leak(name, batch):
    ref = _refiner(name)
    before = ref.predict(batch)
    image, coarse = batch.image.copy(), batch.coarse.copy()
    invalid = ~batch.valid
    image.transpose(1, 0, 2, 3)[:, invalid] = 1.0
    coarse[invalid] = 1 - np.minimum(coarse[invalid], 1)
    after = ref.predict(TileBatch(image, coarse, batch.valid))
    np.testing.assert_allclose(after.transpose(1, 0, 2, 3)[:, batch.valid],
                               before.transpose(1, 0, 2, 3)[:, batch.valid], atol=1e-4)


def _distance_to_edges(labels: np.ndarray) -> np.ndarray:
    edge = np.zeros(labels.shape, bool)
    for axis in (0, 1):
        step = np.diff(labels, axis=axis) != 0
        edge[(slice(None, -1), slice(None))[::1 - 2 * axis]] |= step
        edge[(slice(1, None), slice(None))[::1 - 2 * axis]] |= step
    return ndimage.distance_transform_edt(~edge)


@pytest.mark.parametrize("name,reach", [("guided", 23), ("morph", 9), ("crf", None)])
def test_changes_only_near_coarse_boundaries(name, reach, batch):
    """guided (radius 8: output depends on 2·8 px square windows) and morph (radius 3, 2
    passes) cannot change a pixel whose windows hold one class; the CRF has no hard reach,
    but it changes almost nothing far from the boundaries."""
    coarse = batch.coarse[0]
    refined = _refiner(name).predict(batch)[0].argmax(0)
    dist = _distance_to_edges(coarse)
    changed = refined != coarse
    assert changed[dist <= 8].any()
    if reach is None:
        assert changed[dist > 24].mean() < 0.01
    else:
        assert not changed[dist > reach].any()


def test_guided_rgb_and_grey_guides_differ(batch):
    rgb = _refiner("guided").predict(batch)
    grey = _refiner("guided", guide="grey").predict(batch)
    assert not np.allclose(rgb, grey)


def test_parameters_come_from_config_and_options():
    assert load_refiner("crf").params["confidence"] == 0.8
    assert load_refiner("crf", confidence=0.6, seed=3).params["confidence"] == 0.6
    with pytest.raises(InputError, match="unknown parameters"):
        load_refiner("morph", radiuss=3)
    with pytest.raises(InputError, match="radius"):
        load_refiner("guided", radius=0)
    with pytest.raises(InputError, match="must be int"):
        load_refiner("morph", radius="wide")


@pytest.mark.parametrize("name", BASELINES)
def test_runs_through_the_pipeline(name, tmp_path):
    """`idgbr refine --model NAME` on the bundled farmland sample, over a 300 m box."""
    sample = Path(idgbr.__file__).resolve().parents[2] / "resources" / "sample"
    with rasterio.open(sample / "image.tif") as ds:
        left, top = ds.bounds.left, ds.bounds.top
    aoi = (left + 300, top - 600, left + 600, top - 300)
    result = idgbr.refine(sample / "image.tif", sample / "coarse.gpkg", name, tmp_path / name, aoi=aoi, tile_size=256)
    with rasterio.open(result.refined) as ref, rasterio.open(result.coarse) as co:
        refined, coarse = ref.read(1), co.read(1)
    known = coarse != 255
    assert set(np.unique(refined[known])) <= {0, 1}
    assert agreement_iou(coarse[known], refined[known], 2) > 0.85
