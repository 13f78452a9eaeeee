"""Metrics on hand-made cases with known values, invariances, and agreement with independently
computed references (PySODMetrics and the IDGBR authors' cv2-based bands, see the fixture)."""
from __future__ import annotations

import base64
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage

from idgbr.metrics import (
    BoundaryMetrics, ConfusionMatrix, RepairPreservation, WFmBand, boundary_band, boundary_fscore,
    boundary_iou, mask_boundary, weighted_fmeasure,
)

REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "wfm_reference.json").read_text())
BUILDINGS = "buildings_hot_oam/area1/masks"


def square(n: int = 20, size: int = 64, grow: int = 0) -> np.ndarray:
    """An n×n square at (20, 20), grown by `grow` px on every side (= `grow` 3×3 dilations)."""
    m = np.zeros((size, size), dtype=bool)
    m[20 - grow:20 + n + grow, 20 - grow:20 + n + grow] = True
    return m


def shift(m: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate with zero fill (the fixture's recipe)."""
    h, w = m.shape
    src = m[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    out = np.zeros_like(m)
    out[max(dy, 0):max(dy, 0) + src.shape[0], max(dx, 0):max(dx, 0) + src.shape[1]] = src
    return out


def unbits(b64: str, shape: list[int]) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(b64), np.uint8))
    return bits[: shape[0] * shape[1]].reshape(shape).astype(bool)


def unu8(b64: str, shape: list[int]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), np.uint8).reshape(shape)


def building(shared_data: Path, stem: str) -> np.ndarray:
    return np.asarray(Image.open(shared_data / BUILDINGS / f"{stem}.png")) > 127


# --- confusion matrix -------------------------------------------------------------------------

def test_confusion_hand_computed():
    cm = ConfusionMatrix(3)
    cm.update(np.array([[0, 1], [2, 2]]), np.array([[0, 1], [1, 2]]))  # pred, gt
    s = cm.scores()
    np.testing.assert_allclose(s.iou, [1, 0.5, 0.5])
    np.testing.assert_allclose(s.f1, [1, 2 / 3, 2 / 3])
    assert s.miou == pytest.approx(2 / 3) and s.mf1 == pytest.approx(7 / 9)
    assert s.oa == pytest.approx(0.75)
    assert s.kappa == pytest.approx((12 / 16 - 5 / 16) / (11 / 16))  # po 3/4, pe 5/16
    assert s.fwiou == pytest.approx(0.25 * 1 + 0.5 * 0.5 + 0.25 * 0.5)


def test_confusion_absent_class_is_nan_and_left_out_of_means():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 1, 1]), np.array([0, 0, 1, 1]))
    s = cm.scores()
    assert math.isnan(s.iou[2]) and math.isnan(s.f1[2])
    assert s.miou == pytest.approx((0.5 + 2 / 3) / 2)


def test_confusion_accumulates_counts_and_ignores():
    rng = np.random.default_rng(0)
    preds, gts = rng.integers(0, 3, (4, 8, 8)), rng.integers(0, 4, (4, 8, 8))
    gts[gts == 3] = 255
    cm = ConfusionMatrix(3, ignore_index=255)
    for p, g in zip(preds, gts):
        cm.update(p, g)
    whole = ConfusionMatrix(3)
    keep = gts != 255
    whole.update(preds[keep], gts[keep])
    np.testing.assert_array_equal(cm.matrix, whole.matrix)


def test_confusion_edge_cases():
    one = ConfusionMatrix(2)
    one.update(np.zeros((3, 3), int), np.zeros((3, 3), int))
    assert one.scores().kappa == 1.0 and one.scores().miou == 1.0  # class 1 absent: NaN, left out
    assert math.isnan(ConfusionMatrix(2).scores().oa)
    with pytest.raises(ValueError, match="class id 2"):
        one.update(np.array([2]), np.array([0]))


# --- weighted F-measure ------------------------------------------------------------------------

@pytest.mark.parametrize("case", REFERENCE["wfm"], ids=lambda c: c["name"])
def test_weighted_fmeasure_matches_pysodmetrics(case, shared_data):
    shape = case["shape"]
    if "gt_bits" in case:
        gt = unbits(case["gt_bits"], shape)
        pred = unbits(case["pred_bits"], shape) if "pred_bits" in case else unu8(case["pred_u8"], shape) / 255.0
    elif case["name"] == "building_shift_2_3":
        gt = building(shared_data, "OAM-319293-270961-19")
        pred = shift(gt, 2, 3)
    else:
        gt = building(shared_data, "OAM-1277196-1083840-21")
        pred = ndimage.binary_erosion(gt, iterations=2)
    assert weighted_fmeasure(pred, gt) == pytest.approx(case["value"], abs=1e-6)


def test_weighted_fmeasure_defined_cases():
    sq = square()
    assert weighted_fmeasure(sq, sq) == pytest.approx(1.0)
    empty = np.zeros_like(sq)
    assert weighted_fmeasure(empty, empty) == 1.0
    assert weighted_fmeasure(sq, empty) == 0.0
    assert weighted_fmeasure(empty, sq) == pytest.approx(0.0, abs=1e-9)
    assert weighted_fmeasure(square(grow=3), sq) < weighted_fmeasure(square(grow=1), sq) < 1
    with pytest.raises(ValueError):
        weighted_fmeasure(sq * 2.0, sq)


# --- WFm (3px B) -------------------------------------------------------------------------------

def band_tiles(shared_data: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The fixture's wfm_band3 tiles as (pred, gt) label maps."""
    b1 = building(shared_data, "OAM-319293-270961-19").astype(np.uint8)
    b2 = building(shared_data, "OAM-1277196-1083840-21").astype(np.uint8)
    tiles = [(shift(b1, 2, 3), b1), (ndimage.binary_erosion(b2, iterations=2).astype(np.uint8), b2)]
    for t in REFERENCE["wfm_band3"]["tiles"][2:]:
        tiles.append((unu8(t["pred_u8"], t["shape"]), unu8(t["gt_u8"], t["shape"])))
    return tiles


def sha(mask: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(mask.ravel()).tobytes()).hexdigest()


def test_boundary_band_equals_cv2_bands(shared_data):
    for (pred, gt), ref in zip(band_tiles(shared_data), REFERENCE["wfm_band3"]["tiles"]):
        assert boundary_band(gt).sum() == ref["gt_band_pixels"]
        assert sha(boundary_band(gt)) == ref["gt_band_sha256"]
        assert sha(boundary_band(pred)) == ref["pred_band_sha256"]


def test_wfm_band_matches_authors_evaluation(shared_data):
    acc = WFmBand()
    for pred, gt in band_tiles(shared_data):
        acc.update(pred, gt)
    r = acc.compute()
    ref = REFERENCE["wfm_band3"]
    assert r["non_band"] == pytest.approx(ref["class_averages"]["0"], abs=1e-6)
    assert r["band"] == pytest.approx(ref["class_averages"]["1"], abs=1e-6)
    assert r["paper"] == pytest.approx(ref["paper"], abs=1e-6)


def test_boundary_band_ignores_tile_edges():
    assert not boundary_band(np.full((16, 16), 3)).any()
    half = np.zeros((16, 16), int)
    half[:, 8:] = 1
    band = boundary_band(half)
    assert band[:, 6:10].all() and not band[:, :6].any() and not band[:, 10:].any()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 5), st.integers(0, 50))
def test_boundary_band_is_unchanged_by_affine_relabelling(seed, scale, offset):
    """Consistent relabelling c -> a·c + b (swapping 0/1 included) leaves the band alone, since
    the Sobel kernels are linear and sum to zero. (An arbitrary permutation of 3+ classes may not:
    the band is computed on raw ids, as in the authors' code.)"""
    labels = np.kron(np.random.default_rng(seed).integers(0, 4, (6, 6)), np.ones((5, 5), int))
    assert np.array_equal(boundary_band(labels), boundary_band(scale * labels + offset))
    assert np.array_equal(boundary_band(labels), boundary_band(-labels))


def test_wfm_band_class_swap_invariance():
    gt = square().astype(np.uint8)
    pred = shift(gt, 2, 1)
    a, b = WFmBand(), WFmBand()
    a.update(pred, gt)
    b.update(1 - pred, 1 - gt)
    assert a.compute() == b.compute()


def test_wfm_band_paper_vs_strict_on_hallucinated_edges():
    flat = np.zeros((48, 48), np.uint8)
    sq = square(10, 48).astype(np.uint8)
    acc = WFmBand()
    acc.update(sq, sq)  # perfect
    r = acc.compute()
    assert r["paper"] == pytest.approx(1.0) and r["strict"] == pytest.approx(1.0)
    acc.update(sq, flat)  # a square where the GT has no boundary
    r = acc.compute()
    assert r["band"] == pytest.approx(1.0)  # the paper's rule never scores the band class there
    assert r["strict"] == pytest.approx(0.5)  # strict: band class = mean(1, 0)
    assert r["paper"] > r["strict"]


# --- class-aware boundary F and Boundary IoU ----------------------------------------------------

def test_boundary_f_square_against_itself_and_dilations():
    n, sq = 20, square()
    for d in (1, 2, 3, 5):
        assert boundary_fscore(sq, sq, d) == 1.0
    # 1 px out: the 4 outer corners are √2 away from the GT corners, all GT pixels are matched.
    assert boundary_fscore(square(grow=1), sq, 1) == pytest.approx(2 * n / (2 * n + 1))
    assert boundary_fscore(square(grow=1), sq, 2) == 1.0
    # 3 px out: nothing within 2 px; at 3 px only the n pixels facing each side match.
    grown = square(grow=3)
    assert boundary_fscore(grown, sq, 1) == 0.0 and boundary_fscore(grown, sq, 2) == 0.0
    assert boundary_fscore(grown, sq, 3) == pytest.approx(2 * n / (2 * n + 5))
    assert boundary_fscore(grown, sq, 5) == 1.0


def test_boundary_f_empty_and_single_pixel():
    empty = np.zeros((9, 9), bool)
    dot = empty.copy()
    dot[4, 4] = True
    assert boundary_fscore(empty, empty) == 1.0
    assert boundary_fscore(dot, empty) == 0.0 and boundary_fscore(empty, dot) == 0.0
    assert boundary_fscore(dot, dot, 1) == 1.0
    assert boundary_fscore(shift(dot, 0, 1), dot, 1) == 1.0
    assert boundary_fscore(shift(dot, 2, 2), dot, 2) == 0.0  # √8 ≈ 2.83 px away
    assert boundary_fscore(shift(dot, 2, 2), dot, 3) == 1.0
    full = np.ones((9, 9), bool)
    assert boundary_fscore(full, full) == 1.0  # tile edges are not boundaries


def test_mask_boundary_excludes_tile_edges():
    half = np.zeros((10, 10), bool)
    half[:, :5] = True
    assert np.array_equal(np.flatnonzero(mask_boundary(half).any(axis=0)), [4])
    assert mask_boundary(half).sum() == 10


def test_boundary_iou_square_cases():
    n, sq = 20, square()
    for w in (1, 3, 5):
        assert boundary_iou(sq, sq, w) == 1.0
    assert boundary_iou(square(grow=1), sq, 1) == 0.0  # disjoint 1-px rings
    # Rings by depth inside the GT square: GT band 0..2, prediction band -1..1. Intersection: depths
    # 0..1; union: the prediction band plus GT depth 2.
    inter, union = n**2 - (n - 4) ** 2, (n + 2) ** 2 - (n - 6) ** 2
    assert boundary_iou(square(grow=1), sq, 3) == pytest.approx(inter / union)
    empty = np.zeros_like(sq)
    assert boundary_iou(empty, empty) == 1.0 and boundary_iou(sq, empty) == 0.0
    half = np.zeros((10, 10), bool)
    half[:, :5] = True
    assert boundary_iou(half, half, 1) == 1.0
    assert boundary_iou(half, np.roll(half, 1, axis=1), 1) == 0.0  # only the inner edge is a band


def test_boundary_metrics_sums_counts_over_tiles():
    sq = square(10, 32).astype(np.uint8)
    flat = np.zeros_like(sq)
    acc = BoundaryMetrics(3)
    acc.update(sq, sq)
    acc.update(sq, flat)  # a hallucinated 10×10 square: 36 unmatched boundary pixels of class 1
    r = acc.compute()
    p = 36 / 72
    assert r["f_per_class"][3][1] == pytest.approx(2 * p / (p + 1))
    assert math.isnan(r["f_per_class"][3][2]) and math.isnan(r["iou_per_class"][1][2])  # class 2 never occurs
    assert r["f"][3] == pytest.approx(np.mean(r["f_per_class"][3][:2]))
    assert r["iou_per_class"][1][1] == pytest.approx(36 / 72)


def test_boundary_metrics_ignore_index():
    sq = square(10, 32).astype(np.uint8)
    gt = sq.copy()
    gt[:, 25:] = 255  # an ignored strip: no edges drawn there and nothing counted
    pred = sq.copy()
    pred[:, 25:] = 1 - pred[:, 25:]
    acc = BoundaryMetrics(2, ignore_index=255)
    acc.update(pred, gt)
    assert acc.compute()["f"][1] == 1.0 and acc.compute()["iou"][5] == 1.0
    unaware = BoundaryMetrics(256)  # the same strip scored as a class of its own
    unaware.update(pred, gt)
    assert unaware.compute()["f_per_class"][1][1] < 1.0


# --- repair vs preservation --------------------------------------------------------------------

def test_repair_preservation_hand_computed():
    gt, coarse, refined = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 0]), np.array([0, 0, 1, 0])
    acc = RepairPreservation(2)
    acc.update(refined, gt, coarse)
    r = acc.compute()
    assert r["preserve_iou"] == 1.0  # pixels 0 and 2 kept right
    assert r["repair_iou"] == pytest.approx((0.5 + 0.0) / 2)  # pixel 1 fixed, pixel 3 still wrong
