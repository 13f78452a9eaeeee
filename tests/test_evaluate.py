"""`idgbr evaluate` and `evaluate_pairs` on real ground truth (buildings, area4) and on bad input."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from idgbr.cli import main
from idgbr.errors import InputError
from idgbr.evaluate import evaluate_pairs, evaluate_paths

MASKS = "buildings_hot_oam/area4/masks"
KEYS = {"num_tiles", "num_classes", "ignore_index", "miou", "mf1", "oa", "kappa", "fwiou", "wfm_band3",
        "wfm_band3_strict", "boundary_f", "boundary_iou", "per_class"}


def shifted(mask: np.ndarray, d: int = 2) -> np.ndarray:
    out = np.zeros_like(mask)
    out[d:, d:] = mask[:-d, :-d]
    return out


@pytest.fixture(scope="module")
def tiles(shared_data: Path, tmp_path_factory) -> dict[str, Path]:
    """gt: five real 0/255 masks (four with buildings, one without); pred: them shifted by 2 px;
    same: copies of gt; coarse: the shifted maps with one building tile left intact."""
    root = tmp_path_factory.mktemp("eval")
    files = sorted((shared_data / MASKS).glob("*.png"))
    chosen = [f for f in files if np.asarray(Image.open(f)).any()][:4]
    chosen += [f for f in files if not np.asarray(Image.open(f)).any()][:1]
    dirs = {k: root / k for k in ("gt", "pred", "same", "coarse")}
    for d in dirs.values():
        d.mkdir()
    for i, f in enumerate(chosen):
        m = np.asarray(Image.open(f))
        Image.fromarray(m).save(dirs["gt"] / f.name)
        Image.fromarray(m).save(dirs["same"] / f.name)
        Image.fromarray(shifted(m)).save(dirs["pred"] / f.name)
        Image.fromarray(m if i == 0 else shifted(m, 4)).save(dirs["coarse"] / f.name)
    return dirs


def run_cli(*args: str) -> int:
    return main(["evaluate", *map(str, args)])


def test_identity_scores_one_and_shift_scores_lower(tiles, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    assert run_cli("--pred", tiles["same"], "--gt", tiles["gt"], "--json", tmp_path / "same.json") == 0
    assert "255 → class 1" in caplog.text  # the 0/255 masks were detected and said so
    same = json.loads((tmp_path / "same.json").read_text())
    assert KEYS <= set(same) and "repair_iou" not in same
    assert same["num_tiles"] == 5 and same["num_classes"] == 2
    assert set(same["boundary_f"]) == {"1", "2", "3", "5"} and set(same["boundary_iou"]) == {"1", "3", "5"}
    assert [c["class_id"] for c in same["per_class"]] == [0, 1]
    scores = [same[k] for k in ("miou", "mf1", "oa", "kappa", "wfm_band3", "wfm_band3_strict")]
    scores += list(same["boundary_f"].values()) + list(same["boundary_iou"].values())
    scores += [c[k] for c in same["per_class"] for k in ("iou", "f1", "boundary_f3")]
    assert scores == pytest.approx([1.0] * len(scores))

    assert run_cli("--pred", tiles["pred"], "--gt", tiles["gt"], "--coarse", tiles["coarse"],
                   "--json", tmp_path / "shift.json") == 0
    table = capsys.readouterr().out
    assert "mIoU" in table and "WFm(3px B)" in table and "repair IoU" in table
    shift = json.loads((tmp_path / "shift.json").read_text())
    for key in ("miou", "mf1", "kappa", "wfm_band3", "wfm_band3_strict"):
        assert 0 < shift[key] < 1, key
    bf = shift["boundary_f"]
    assert bf["1"] < bf["2"] <= bf["3"] <= bf["5"]
    assert shift["boundary_iou"]["1"] < shift["boundary_iou"]["5"]
    assert 0 < shift["repair_iou"] < 1 and 0 < shift["preserve_iou"] <= 1


def test_evaluate_pairs_in_memory_matches_files(tiles):
    def binary(path: Path) -> np.ndarray:
        return (np.asarray(Image.open(path)) > 0).astype(np.uint8)

    pairs = [(binary(p), binary(tiles["gt"] / p.name)) for p in sorted(tiles["pred"].iterdir())]
    assert evaluate_pairs(pairs, num_classes=2) == evaluate_paths(tiles["pred"], tiles["gt"], num_classes=2)


def test_single_geotiffs_are_scored_in_windows(tmp_path):
    rng = np.random.default_rng(0)
    gt = np.kron(rng.integers(0, 3, (20, 15)), np.ones((30, 40), np.uint8)).astype(np.uint8)  # 600×600
    paths = {}
    for name, a in (("gt", gt), ("pred", np.roll(gt, 1, axis=0))):
        paths[name] = tmp_path / f"{name}.tif"
        with rasterio.open(paths[name], "w", driver="GTiff", width=600, height=600, count=1, dtype="uint8",
                           crs="EPSG:32631", transform=from_origin(500000, 4000000, 0.5, 0.5)) as ds:
            ds.write(a, 1)
    r = evaluate_paths(paths["pred"], paths["gt"], num_classes=3)
    assert r["num_tiles"] == 4 and 0.9 < r["oa"] < 1


def test_nan_becomes_null(tiles):
    r = evaluate_paths(tiles["same"], tiles["gt"], num_classes=3)
    assert r["per_class"][2]["iou"] is None and math.isfinite(r["miou"])
    json.dumps(r, allow_nan=False)


@pytest.mark.parametrize("problem", ["missing", "unmatched", "shape", "class_id", "not_tiles", "mixed"])
def test_errors_name_the_problem(problem, tiles, tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    gt_files = sorted(tiles["gt"].iterdir())
    for f in gt_files:
        Image.fromarray((np.asarray(Image.open(f)) > 0).astype(np.uint8)).save(pred / f.name)
    gt = tiles["gt"]
    extra: list[str] = []
    if problem == "missing":
        gt, expected = tmp_path / "nowhere", "nowhere does not exist"
    elif problem == "unmatched":
        (pred / gt_files[0].name).rename(pred / "renamed.png")
        expected = f"1 tiles have no prediction (matched by file name): {gt_files[0].stem}"
    elif problem == "shape":
        Image.fromarray(np.zeros((100, 100), np.uint8)).save(pred / gt_files[1].name)
        expected = f"{gt_files[1].stem}: prediction is 100×100 but ground truth is 256×256"
    elif problem == "class_id":
        Image.fromarray(np.full((256, 256), 7, np.uint8)).save(pred / gt_files[2].name)
        extra, expected = ["--num-classes", "2"], f"{gt_files[2].stem}: prediction has class id 7"
    elif problem == "not_tiles":
        gt, expected = gt_files[0], "must be a folder of tiles or a GeoTIFF"
    else:
        gt, expected = tmp_path / "gt.tif", "or single GeoTIFFs for all"
        gt.write_bytes(b"")
    assert run_cli("--pred", pred, "--gt", gt, *extra) == 2
    assert expected in capsys.readouterr().err


def test_binary_255_off_keeps_raw_values(tiles):
    with pytest.raises(InputError, match="class id 255"):
        evaluate_paths(tiles["same"], tiles["gt"], num_classes=2, binary_255="off")


def test_ignored_pixels_count_for_nothing():
    gt = np.zeros((64, 64), np.uint8)
    gt[10:30, 10:40] = 1
    pred = gt.copy()
    gt[:, 48:] = 255
    pred[:, 48:] = np.random.default_rng(0).integers(0, 2, (64, 16))  # garbage under the ignored strip
    r = evaluate_pairs([(pred, gt)], num_classes=2, ignore_index=255)
    values = [r["miou"], r["kappa"], r["wfm_band3"], r["wfm_band3_strict"], *r["boundary_f"].values(),
              *r["boundary_iou"].values()]
    assert values == pytest.approx([1.0] * len(values))
