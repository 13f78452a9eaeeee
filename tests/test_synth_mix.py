"""Synthetic pairs mixed into training data, and their statistics against real tiles, on real
landcover tiles: mixing counts and repeats, validation and k-fold never see a synthetic pair,
bad folders are refused, a tiny coarse training run draws synthetic samples, the refiner's
sampler gives them recipe coarse maps, and the stats and grids say sane things."""
from __future__ import annotations

import argparse
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from idgbr import InputError
from idgbr.cli import main
from idgbr.datasets import TileDataset, load_dataset
from idgbr.diffusion.config import DataConfig as RefinerData
from idgbr.diffusion.data import BatchSampler
from idgbr.models import ModelCard
from idgbr.segment import CoarseConfig
from idgbr.segment.data import folder_dataset, subset
from idgbr.segment.kfold import cross_predict
from idgbr.synth import stats
from idgbr.synth.mix import SYNTH_PREFIX, MixedDataset, is_synthetic

TINY = {"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1], "num_attention_heads": [1, 1, 2, 4],
        "decoder_hidden_size": 32}
SIZE = 128
LANDCOVER = "landcover_dronedeploy"
MINI_CHIPS = {"1d4fbe33f3_F1BE1D4184INSPIRE": (0, 6, 7), "ec09336a6f_06BA0AF311OPENPIPELINE": (0, 36, 37)}
"""Per scene one val chip (the first strip) and two train chips: 4 train tiles in 2 places, 2 val."""


def write_pairs(folder: Path, pairs: list[tuple[np.ndarray, np.ndarray]], classes: list[str]) -> Path:
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True)
    for n, (image, label) in enumerate(pairs):
        Image.fromarray(image).save(folder / "images" / f"synth_{n:05d}.png")
        Image.fromarray(label, mode="L").save(folder / "labels" / f"synth_{n:05d}.png")
    (folder / "synth_info.json").write_text(json.dumps({"classes": classes, "pairs": len(pairs)}))
    return folder


@pytest.fixture(scope="module")
def landcover() -> TileDataset:
    return load_dataset("landcover", "train")


@pytest.fixture(scope="module")
def synth_dir(landcover: TileDataset, tmp_path_factory) -> Path:
    """12 real landcover pairs cropped to 128² (two corners of 6 train chips) in the layout
    `idgbr synth sample --out` writes: what a generator's output looks like on disk, without
    depending on a generator."""
    pairs = []
    for i in np.linspace(20, len(landcover) - 1, 6).round().astype(int):
        image, label, _ = landcover[int(i)]
        pairs += [(image[:SIZE, :SIZE], label[:SIZE, :SIZE]), (image[-SIZE:, -SIZE:], label[-SIZE:, -SIZE:])]
    return write_pairs(tmp_path_factory.mktemp("synth") / "out", pairs, [c.name for c in landcover.classes])


@pytest.fixture(scope="module")
def mini_root(shared_data: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for sub in ("images", "labels"):
        (root / LANDCOVER / sub).mkdir(parents=True)
        for scene, chips in MINI_CHIPS.items():
            for chip in chips:
                name = f"{scene}-{chip:06d}.png"
                (root / LANDCOVER / sub / name).symlink_to(shared_data / LANDCOVER / sub / name)
    return root


def test_mixing_uses_every_synthetic_pair_and_repeats_real_tiles_to_the_ratio(landcover: TileDataset,
                                                                               synth_dir: Path) -> None:
    real = subset(landcover, [0, 50, 100])
    for ratio, real_count in ((1.0, 12), (3.0, 4)):
        ds = MixedDataset(real, synth_dir, ratio)
        assert len(ds) == real_count + 12 and ds.real_count == real_count and ds.classes == landcover.classes
        ids = [t.tile_id for t in ds.tiles]
        assert sum(map(is_synthetic, ids)) == 12 and len({i for i in ids if is_synthetic(i)}) == 12
        repeats = Counter(i for i in ids if not is_synthetic(i))
        assert set(repeats) == set(real.tile_ids) and max(repeats.values()) - min(repeats.values()) <= 1
        assert ds.describe()["effective_ratio"] == round(12 / real_count, 4)
    image, label, tile_id = ds[-1]  # the last synthetic pair, read as class ids
    assert tile_id == f"{SYNTH_PREFIX}synth_00011" and image.shape == (SIZE, SIZE, 3) and label.shape == (SIZE, SIZE)
    with Image.open(synth_dir / "labels" / "synth_00011.png") as im:
        assert np.array_equal(label, np.asarray(im))
    assert ds[0][2] == real.tile_ids[0] and np.array_equal(ds[0][1], real[0][1])
    with pytest.warns(UserWarning, match="effective ratio of 4"):
        short = MixedDataset(real, synth_dir, 6.0)  # 12 pairs < 6 × 3: all used, real tiles not dropped
    assert len(short) == 3 + 12


def test_pairs_at_another_gsd_are_resampled_to_the_real_one(landcover: TileDataset, synth_dir: Path,
                                                            tmp_path: Path) -> None:
    """Base-stage pairs (no SR) are at twice the real GSD: they are read back at the real one."""
    coarse_dir = tmp_path / "base"
    shutil.copytree(synth_dir, coarse_dir)
    info = json.loads((coarse_dir / "synth_info.json").read_text())
    (coarse_dir / "synth_info.json").write_text(json.dumps({**info, "gsd_m": 2 * landcover.tiles[0].gsd_m}))
    real = subset(landcover, [0, 50])
    same, doubled = MixedDataset(real, synth_dir), MixedDataset(real, coarse_dir)
    assert same.scale == 1.0 and doubled.scale == pytest.approx(2.0) and doubled.describe()["resampled_by"] == 2.0
    image, label, _ = doubled[len(doubled) - 1]
    _, original, _ = same[len(same) - 1]
    assert image.shape == (2 * SIZE, 2 * SIZE, 3) and label.shape == (2 * SIZE, 2 * SIZE)
    assert np.array_equal(label[::2, ::2], original)  # nearest: every label pixel kept, class ids only
    assert stats.compare(real, coarse_dir, crops=2, limit=2)["tile_size"] == [2 * SIZE, 2 * SIZE]  # as training sees them


def test_real_and_synthetic_labels_keep_their_own_decoding(tmp_path: Path) -> None:
    buildings = load_dataset("buildings", "train")
    real = subset(buildings, [next(i for i in range(0, len(buildings), 40) if buildings[i][1][:SIZE, :SIZE].any())])
    with Image.open(real.tiles[0].label) as im:
        assert np.asarray(im).max() == 255  # a 0/255 mask on disk
    image, label, _ = real[0]
    folder = write_pairs(tmp_path / "b", [(image[:SIZE, :SIZE], label[:SIZE, :SIZE])], ["background", "building"])
    ds = MixedDataset(real, folder)
    assert set(np.unique(ds[0][1])) <= {0, 1} and np.array_equal(ds[1][1], label[:SIZE, :SIZE])


def test_bad_synthetic_folders_and_ratios_are_refused(landcover: TileDataset, synth_dir: Path,
                                                      tmp_path: Path) -> None:
    real = subset(landcover, [0])
    with pytest.raises(InputError, match="does not exist"):
        MixedDataset(real, tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    with pytest.raises(InputError, match="images/ and labels/"):
        MixedDataset(real, tmp_path / "flat")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "labels").mkdir()
    with pytest.raises(InputError, match="no image tile"):
        MixedDataset(real, tmp_path / "empty")
    for ratio in (0.0, -1.0):
        with pytest.raises(InputError, match="ratio"):
            MixedDataset(real, synth_dir, ratio)
    with pytest.raises(InputError, match="6 classes"):  # synth_info.json: landcover's 6, buildings has 2
        MixedDataset(load_dataset("buildings", "val"), synth_dir)
    bad = shutil.copytree(synth_dir, tmp_path / "bad")
    (bad / "synth_info.json").unlink()
    Image.fromarray(np.full((SIZE, SIZE), 6, np.uint8), mode="L").save(bad / "labels" / "synth_00003.png")
    with pytest.raises(InputError, match=r"synth_00003\.png has class id 6"):
        MixedDataset(real, bad)


def test_kfold_folds_and_predicts_real_tiles_only_and_trains_every_fold_with_the_synthetic_pairs(
        mini_root: Path, synth_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "unused", mini_root, steps=1, log_every=1)
    cfg.data.synthetic = str(synth_dir)
    manifest = cross_predict(cfg, 2, tmp_path / "kfold", report=lambda m: None)
    real = load_dataset("landcover", "train", mini_root)
    assert sorted(manifest["folds"]) == sorted(real.tile_ids) and sorted(manifest["folds"].values()) == [0, 0, 1, 1]
    predicted = sorted(p.stem for p in (tmp_path / "kfold").rglob("*.png"))
    assert predicted == sorted(real.tile_ids + load_dataset("landcover", "val", mini_root).tile_ids)
    for m in manifest["models"]:
        training = ModelCard.load(m["folder"]).training
        assert training["synthetic"]["pairs"] == 12 and training["train_tiles"] == 12 + 12  # 2 real tiles × 6
    mixed = MixedDataset(real, synth_dir)
    real_groups = {t.group for t in real.tiles}
    synth_groups = [t.group for t in mixed.tiles if is_synthetic(t.tile_id)]
    assert len(set(synth_groups)) == 12 and not real_groups & set(synth_groups)


def tiny_config(out: Path, root: Path, **train) -> CoarseConfig:
    return CoarseConfig.from_dict({
        "name": "tiny-synth", "out": str(out), "data": {"dataset": "landcover", "root": str(root)},
        "model": {"arch": "segformer", "overrides": TINY},
        "train": {"crop": 64, "batch_size": 2, "lr": 3e-3, "warmup_steps": 2, "threads": 1, "device": "cpu",
                  "val_max_tiles": 2, **train}})


def test_train_coarse_cli_draws_synthetic_samples_and_validates_on_real_tiles(mini_root: Path, synth_dir: Path,
                                                                              tmp_path: Path) -> None:
    config = tmp_path / "coarse.yaml"
    cfg = tiny_config(tmp_path / "model", mini_root, steps=30, log_every=10, val_every=30).to_dict()
    config.write_text(json.dumps(cfg))  # JSON is YAML
    assert main(["train", "coarse", "--config", str(config), "--synthetic", str(synth_dir), "--ratio", "3"]) == 0
    card = ModelCard.load(tmp_path / "model")
    synthetic = card.training["synthetic"]
    assert synthetic["folder"] == str(synth_dir.resolve()) and synthetic["ratio"] == 3.0
    assert (synthetic["pairs"], synthetic["real_tiles"], synthetic["real_draws"]) == (12, 4, 4)
    # 60 samples over shuffled epochs of 16 (12 synthetic): 3 whole epochs, then 12 more
    assert 36 + 8 <= synthetic["samples_drawn"] <= 36 + 12
    assert card.training["train_tiles"] == 16 and card.metrics["val"]["tiles"] == 2  # val: the 2 real val chips
    assert main(["train", "coarse", "--config", str(config), "--synthetic", str(tmp_path / "none")]) == 2


def test_refiner_sampler_gives_synthetic_pairs_recipe_coarse_maps(mini_root: Path, synth_dir: Path,
                                                                  tmp_path: Path) -> None:
    real = load_dataset("landcover", "train", mini_root)
    coarse = tmp_path / "coarse"
    coarse.mkdir()
    for t in real.tiles:  # a coarse folder with an entry for every real tile only
        shutil.copy(t.label, coarse / f"{t.tile_id}.png")
    mixed = MixedDataset(real, synth_dir, 1.0)
    sampler = BatchSampler(mixed, RefinerData(coarse=str(coarse), recipes=["landcover"], crop=64), 6)
    drawn = [mixed[int(np.random.default_rng([0, 0, s, j]).integers(len(mixed)))][2]
             for s in range(8) for j in range(2)]
    assert any(map(is_synthetic, drawn))  # the batches below do draw synthetic pairs
    b = sampler.batch(0, 2)
    for s in range(1, 8):
        sampler.batch(s, 2)  # a folder source for a synthetic pair would raise "no coarse map"
    assert b["labels"].shape == (2, 64, 64) and int(b["coarse"].max()) < 6
    with pytest.raises(InputError, match="recipes"):
        BatchSampler(mixed, RefinerData(coarse=str(coarse), recipes=[]), 6)
    from idgbr.cli import build_parser

    args = build_parser().parse_args(["train", "refiner", "--config", "c.yaml", "--synthetic", "D", "--ratio", "2"])
    assert (args.synthetic, args.ratio) == ("D", 2.0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "vae", "--config", "c.yaml", "--synthetic", "D"])


def test_stats_of_identical_data_agree_and_real_crops_give_sane_numbers(landcover: TileDataset,
                                                                        synth_dir: Path) -> None:
    same = folder_dataset(synth_dir / "images", synth_dir / "labels", [c.name for c in landcover.classes])
    result = stats.compare(same, synth_dir)
    assert result["real"] == result["generated"]  # 128² crops of 128² tiles, each tile once
    assert abs(sum(result["generated"]["class_frequency"]) - 1) < 1e-5
    vs_real = stats.compare(landcover, synth_dir, crops=24, seed=1)
    assert vs_real["tile_size"] == [SIZE, SIZE] and vs_real["real"]["pairs"] == 24
    for side in ("real", "generated"):
        s = vs_real[side]
        assert abs(sum(s["class_frequency"]) - 1) < 1e-5 and len(s["class_frequency"]) == 6
        for name, obj in s["objects"].items():
            assert sum(obj["histogram"]) == obj["count"] and len(obj["histogram"]) == 14  # 1 … 2^14 px
            if obj["count"]:
                assert 1 <= obj["q25"] <= obj["median"] <= obj["q75"] <= SIZE * SIZE
        assert all(0 < m < 255 for m in s["image"]["mean"]) and all(s > 0 for s in s["image"]["std"])
    assert vs_real["real"] != vs_real["generated"] and stats.compare(landcover, synth_dir, crops=24, seed=1) == vs_real
    table = stats.format_table(vs_real)
    assert all(c.name in table for c in landcover.classes) and table.count("\n") == 15


def test_grid_png_and_the_stats_command(landcover: TileDataset, synth_dir: Path, tmp_path: Path) -> None:
    pairs = [landcover[i][:2] for i in (0, 40, 80)] + [MixedDataset(subset(landcover, [0]), synth_dir)[-1]]
    grid = stats.grid_png(pairs, landcover.classes, tmp_path / "grid.png", cols=3)
    with Image.open(grid) as im:  # 2 rows of 3 cells of 300 × (300 + 2 + 300), gaps of 6, a legend
        assert im.size == (3 * 602 + 2 * 6, 2 * 300 + 6 + stats.LEGEND_PX) and im.mode == "RGB"
        cell = np.asarray(im)[:300, 302:602]
    assert not np.array_equal(cell, landcover[0][0])  # the overlay panel differs from the image
    parser = argparse.ArgumentParser()
    stats.register(parser.add_subparsers())
    args = parser.parse_args(["stats", "--synthetic", str(synth_dir), "--dataset", "landcover", "--limit", "8",
                              "--json", str(tmp_path / "s.json"), "--grid", str(tmp_path / "g.png"),
                              "--real-grid", str(tmp_path / "r.png")])
    assert args.func(args) == 0
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["generated"]["pairs"] == 8 and saved["real"]["pairs"] == 8
    with Image.open(tmp_path / "g.png") as g, Image.open(tmp_path / "r.png") as r:
        assert g.size == (8 * 258 + 7 * 6, 2 * 128 + 6 + stats.LEGEND_PX)  # 12 pairs: 2 rows of 8
        assert r.size[0] == g.size[0] and r.size[1] == 4 * 128 + 3 * 6 + stats.LEGEND_PX  # 32 crops
