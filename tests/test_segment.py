"""The coarse segmentor stage on real tiles: a tiny SegFormer learns, k-fold folds are sound,
k-fold predictions and the training-data builder write what their manifests say, and the
pipeline makes its own coarse layer when it is given none."""
from __future__ import annotations

import json
import shutil
from itertools import product
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

import idgbr
from idgbr import InputError
from idgbr.cli import main
from idgbr.datasets import load_dataset
from idgbr.models import ModelCard, resources_dir
from idgbr.segment import CoarseConfig, load_segmentor
from idgbr.segment.build import build_training_data
from idgbr.segment.data import subset
from idgbr.segment.kfold import assign_folds, cross_predict
from idgbr.segment.model import build_network, load_network
from idgbr.segment.train import train_coarse
from idgbr.xyz import build_xyz_mosaic, complete_z19_parents

TINY = {"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1], "num_attention_heads": [1, 1, 2, 4],
        "decoder_hidden_size": 32}


def tiny_config(out: Path, **train) -> CoarseConfig:
    return CoarseConfig.from_dict({
        "name": "tiny", "out": str(out), "data": {"dataset": "buildings"},
        "model": {"arch": "segformer", "overrides": TINY},
        "train": {"crop": 128, "batch_size": 4, "lr": 3e-3, "warmup_steps": 2, "threads": 1, "device": "cpu",
                  "tile_size": 256, **train}})


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny SegFormer trained a few steps on 8 real building tiles (128² crops)."""
    out = tmp_path_factory.mktemp("seg") / "tiny"
    train = load_dataset("buildings", "train")
    # tiles with buildings in them, so the loss has something to learn
    with_buildings = [i for i in range(0, len(train), 40) if train[i][1].mean() > 0.1][:8]
    result = train_coarse(tiny_config(out, steps=24, log_every=8), subset(train, with_buildings), None)
    result.out.joinpath("losses.json").write_text(json.dumps(result.losses))
    return result.out


def test_tiny_segformer_learns_on_real_tiles_and_saves_a_model_folder(tiny_model: Path) -> None:
    losses = json.loads((tiny_model / "losses.json").read_text())
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0], losses
    card = ModelCard.load(tiny_model)
    assert card.refiner == "segformer" and card.task == "coarse-segmentation"
    assert [c.name for c in card.classes] == ["background", "building"] and card.building_classes == [1]
    assert card.training["steps"] == 24 and card.training["train_tiles"] == 8
    assert {p.name for p in tiny_model.iterdir()} >= {"model_card.json", "config.json", "model.safetensors"}
    seg = load_segmentor(tiny_model, "cpu")
    probs = seg.predict(np.random.default_rng(0).random((2, 3, 96, 128), dtype=np.float32))
    assert probs.shape == (2, 2, 96, 128) and np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_kfold_folds_are_disjoint_cover_the_set_and_keep_places_whole() -> None:
    train = load_dataset("buildings", "train")
    groups = [t.group for t in train.tiles]
    folds = assign_folds(groups, 5, seed=0)
    assert len(folds) == len(train) and set(folds) == set(range(5))  # every tile in exactly one fold
    fold_of_group: dict[str, set[int]] = {}
    for g, f in zip(groups, folds):
        fold_of_group.setdefault(g, set()).add(f)
    assert all(len(f) == 1 for f in fold_of_group.values())  # a z19 place never straddles folds
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= max(groups.count(g) for g in set(groups))
    assert folds == assign_folds(groups, 5, seed=0) and folds != assign_folds(groups, 5, seed=1)
    with pytest.raises(InputError):
        assign_folds(["a", "a", "b"], 3)


@pytest.fixture(scope="module")
def mini_root(shared_data: Path, tmp_path_factory) -> Path:
    """A small copy of buildings_hot_oam (z21 tiles only): one complete z19 scene of area2
    (val: the held-out city), and of area1 two scenes of one row (train) and one of the row
    south of it (val: the southernmost row of an area)."""
    root = tmp_path_factory.mktemp("data")
    for area in ("area1", "area2"):
        src = shared_data / "buildings_hot_oam" / area
        parents = complete_z19_parents(src)
        rows = sorted({y for _, y in parents})
        pick = parents[:1] if area == "area2" else ([p for p in parents if p[1] == rows[0]][:2]
                                                    + [p for p in parents if p[1] == rows[1]][:1])
        for sub in ("images", "masks", "labels_geojson"):
            (root / "buildings_hot_oam" / area / sub).mkdir(parents=True)
        for x19, y19 in pick:
            for sub, r, c in product(("images", "masks", "labels_geojson"), range(4), range(4)):
                name = f"OAM-{4 * x19 + c}-{4 * y19 + r}-21.{'geojson' if sub == 'labels_geojson' else 'png'}"
                (root / "buildings_hot_oam" / area / sub / name).symlink_to(src / sub / name)
    return root


def test_kfold_prediction_and_data_build_write_what_the_manifests_say(mini_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "unused", steps=1, log_every=1)
    cfg.data.root = str(mini_root)
    kfold = tmp_path / "kfold"
    manifest = cross_predict(cfg, 2, kfold, report=lambda m: None)
    train, val = load_dataset("buildings", "train", mini_root), load_dataset("buildings", "val", mini_root)
    assert len(train) == 32 and len(val) == 32
    assert sorted(manifest["folds"]) == sorted(train.tile_ids)
    assert [m["predicted_tiles"] for m in manifest["models"]] == [16, 16]  # one z19 scene per fold
    for split, ds in (("train", train), ("val", val)):
        assert all((kfold / split / f"{t}.png").is_file() for t in ds.tile_ids)
    assert set(manifest["scores"]) == {"train", "val"}

    out = tmp_path / "built"
    built = build_training_data("buildings", out, kfold_dir=kfold, recipes=["blocky"], root=mini_root,
                                mosaics=True, report=lambda m: None)
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["splits"].keys() == {"train", "val"} and on_disk == json.loads(json.dumps(built))
    tile = on_disk["splits"]["train"]["tiles"][0]
    assert set(tile["coarse"]) == {"blocky", "kfold"}
    for rel in [tile["image"], tile["label"], *tile["coarse"].values()]:
        assert (out / rel).is_file()
    with Image.open(out / tile["label"]) as im:
        assert set(np.unique(np.asarray(im))) <= {0, 1}
    assert sorted(m["split"] for m in on_disk["mosaics"]) == ["train", "train", "val", "val"]
    scene = out / on_disk["mosaics"][0]["folder"]
    with rasterio.open(scene / "image.tif") as img, rasterio.open(scene / "coarse-kfold.tif") as crs:
        assert crs.transform == img.transform and crs.crs == img.crs and crs.shape == (1024, 1024)
    with pytest.raises(InputError):
        build_training_data("buildings", out, root=mini_root)  # never writes over a build


def test_pipeline_without_coarse_runs_the_coarse_model_then_the_refiner(tiny_model: Path, shared_data: Path,
                                                                        tmp_path: Path) -> None:
    area = shared_data / "buildings_hot_oam" / "area2"
    image = build_xyz_mosaic(area, *complete_z19_parents(area)[0], tmp_path / "ortho.tif")
    with rasterio.open(image) as ds:
        l, b, r, t = ds.bounds
    aoi = (l, t - (t - b) * 0.5, l + (r - l) * 0.5, t)  # the north-west quarter: 512²
    result = idgbr.refine(image, None, "identity", tmp_path / "out", coarse_model=tiny_model, aoi=aoi,
                          tile_size=256, overlap=0.25, device="cpu")
    with rasterio.open(result.coarse) as c, rasterio.open(result.refined) as f:
        coarse, refined = c.read(1), f.read(1)
        assert c.shape == (512, 512) and c.crs.to_epsg() == 3857
    assert set(np.unique(coarse)) <= {0, 1} and coarse.size == 512 * 512
    assert np.array_equal(refined, coarse)  # the identity refiner keeps the coarse model's map
    assert [c.name for c in result.classes] == ["background", "building"]  # classes from the coarse model

    # A refiner card naming its coarse model needs neither --coarse nor --coarse-model.
    refiner = tmp_path / "identity-with-coarse"
    shutil.copytree(resources_dir() / "models" / "identity", refiner)
    card = json.loads((refiner / "model_card.json").read_text())
    (refiner / "model_card.json").write_text(json.dumps({**card, "coarse_model": str(tiny_model)}))
    assert main(["refine", str(image), "--model", str(refiner), "--out", str(tmp_path / "cli"), "--aoi",
                 ",".join(map(str, aoi)), "--tile-size", "256", "--device", "cpu"]) == 0
    with rasterio.open(tmp_path / "cli" / "coarse.tif") as c:
        assert np.array_equal(c.read(1), coarse)

    with pytest.raises(InputError, match="coarse model"):
        idgbr.refine(image, None, "identity", tmp_path / "none", aoi=aoi)


def test_dinov2_linear_head_builds_from_a_local_backbone_and_round_trips(tmp_path: Path) -> None:
    from transformers import Dinov2Config, Dinov2Model

    backbone = tmp_path / "dinov2-tiny"
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             image_size=56, patch_size=14)).save_pretrained(backbone)
    net = build_network("dinov2-linear", 3, pretrained=str(backbone)).eval()
    x = np.random.default_rng(0).random((1, 3, 60, 70), dtype=np.float32)
    with torch.no_grad():
        logits = net(torch.from_numpy(x))
    assert logits.shape == (1, 3, 60, 70)
    saved = tmp_path / "saved"
    saved.mkdir()
    net.save(saved)
    with torch.no_grad():
        again = load_network(saved, "dinov2-linear", 3)(torch.from_numpy(x))
    assert torch.allclose(logits, again, atol=1e-5)
    with pytest.raises(InputError, match="pretrained DINOv2"):
        build_network("dinov2-linear", 3)


def test_train_coarse_cli_on_image_and_label_folders_png_and_geotiff(shared_data: Path, tmp_path: Path) -> None:
    train = load_dataset("buildings", "train")
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for n, t in enumerate(train.tiles[:4]):
        if n == 0:  # one pair as GeoTIFF: image RGB, label 0/255
            image, label, _ = train[0]
            profile = dict(driver="GTiff", width=image.shape[1], height=image.shape[0], dtype="uint8",
                           crs="EPSG:3857", transform=rasterio.transform.from_origin(0, 0, 0.1, 0.1))
            with rasterio.open(images / "t0.tif", "w", count=3, **profile) as ds:
                ds.write(image.transpose(2, 0, 1))
            with rasterio.open(labels / "t0.tif", "w", count=1, **profile) as ds:
                ds.write(label * 255, 1)
        else:
            shutil.copy(t.image, images / f"t{n}.png")
            shutil.copy(t.label, labels / f"t{n}.png")
    config = tmp_path / "coarse.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "name": "folders", "out": str(tmp_path / "model"),
        "data": {"images": str(images), "labels": str(labels), "val_images": str(images),
                 "val_labels": str(labels), "binary_255": True},
        "model": {"overrides": TINY},
        "train": {"crop": 64, "batch_size": 2, "steps": 2, "log_every": 1, "val_every": 2, "device": "cpu"}}))
    assert main(["train", "coarse", "--config", str(config)]) == 0
    card = ModelCard.load(tmp_path / "model")
    assert card.training["train_tiles"] == 4 and card.metrics["val"]["tiles"] == 4
    assert 0.0 <= card.metrics["val"]["miou"] <= 1.0 and card.classes[1].name == "class 1"
    assert main(["train", "coarse", "--config", str(config), "--resume", "--steps", "3"]) == 0
    assert json.loads((tmp_path / "model.work" / "log.jsonl").read_text().splitlines()[-1])["step"] == 3
    assert main(["train", "coarse", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_crops_only_augmentation_is_an_exact_window_of_the_tile(shared_data: Path) -> None:
    """The no-augmentation baseline of comparisons: pixels are a crop of the tile, unchanged."""
    from idgbr.segment.augment import Augment

    image, label, _ = load_dataset("landcover", "train", shared_data)[0]
    img, lbl = Augment.crops_only(128)(image, label, np.random.default_rng(3))
    pixels = np.rint(img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    windows = [(y, x) for y in range(label.shape[0] - 127) for x in range(label.shape[1] - 127)
               if np.array_equal(label[y:y + 128, x:x + 128], lbl.numpy())]
    assert any(np.array_equal(image[y:y + 128, x:x + 128], pixels) for y, x in windows)
