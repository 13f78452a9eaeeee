"""The coarse-anchored refiner family: identity at initialisation, real training steps, exact
resume, model folders through the refiner protocol, and a tiny train → refine loop on real
building tiles that must beat its coarse input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from idgbr.anchored.net import AnchoredRefinerNet, boundary_distance
from idgbr.anchored.process import sample, step_schedule
from idgbr.anchored.train import AnchoredConfig, Trainer, train
from idgbr.coarsen import coarsen, tile_rng
from idgbr.datasets import load_dataset
from idgbr.errors import InputError
from idgbr.models import TileBatch, load_refiner
from idgbr.models.anchored import CLOSE_PX, close_tiles

MODES = ("diffusion", "discriminative")


def _real_tiles(n: int, split: str = "val"):
    ds = load_dataset("buildings", split)
    picks = np.linspace(0, len(ds) - 1, n).round().astype(int)
    return [ds[int(i)] for i in picks]


def _config(tmp_path, mode: str, **train) -> AnchoredConfig:
    return AnchoredConfig.from_mapping({
        "family": "anchored", "name": f"tiny-{mode}", "out": str(tmp_path / mode),
        "data": {"dataset": "buildings", "recipes": ["buildings-old"], "crop": 64, "variants": 2, "val_tiles": 4},
        "model": {"mode": mode, "widths": [8, 16, 32], "steps": 4, "band_px": 8},
        "train": {"steps": 4, "batch_size": 2, "validate_every": 1000, "log_every": 2, "ema_decay": 0.9, **train},
        "sampling": {"steps": 2},
    }, "test")


def test_boundary_distance_is_the_chessboard_distance_to_class_changes():
    c = torch.zeros(1, 9, 9, dtype=torch.long)
    c[0, :, 5:] = 1
    d = boundary_distance(c, 3)[0]
    # pixels at x = 4 and x = 5 touch the change (both sides are boundary pixels)
    assert d[0, 4] == 0 and d[0, 5] == 0 and d[0, 3] == 1 and d[0, 1] == 3 and d[0, 0] == 4  # capped at limit + 1
    assert d[0, 8] == 3


@pytest.mark.parametrize("mode", MODES)
def test_untrained_net_reproduces_the_coarse_map_exactly(mode):
    torch.manual_seed(0)
    net = AnchoredRefinerNet(num_classes=3, widths=(8, 16, 32), mode=mode, steps=4).eval()
    (image, label, _), = _real_tiles(1)
    coarse = coarsen(label, "buildings-old", 1, 2).astype(np.int64)
    coarse[100:140, 20:90] = 2  # a third class, to exercise K > 2
    coarse[:8, :8] = 255  # no coarse data
    img = torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32) / 255)
    out = sample(net, img, torch.from_numpy(coarse)[None], steps=4, samples=3, generators=[torch.Generator().manual_seed(1)])
    pred = out.probs.argmax(1)[0].numpy()
    known = coarse != 255
    assert (pred[known] == coarse[known]).all()
    prior = torch.softmax(4.0 * torch.nn.functional.one_hot(torch.from_numpy(coarse[known]), 3).float(), 1)
    assert torch.equal(out.probs[0].permute(1, 2, 0)[torch.from_numpy(known)], prior)
    if mode == "diffusion":
        assert out.uncertainty is not None and float(out.uncertainty.abs().max()) == 0.0


def test_step_schedule_spaces_steps_evenly():
    assert step_schedule(8, 4) == [8, 6, 4, 2]
    assert step_schedule(8, 8) == list(range(8, 0, -1))
    assert step_schedule(8, 1) == [8]
    with pytest.raises(ValueError):
        step_schedule(8, 9)


@pytest.mark.parametrize("mode", MODES)
def test_a_real_training_step_lowers_the_loss_on_its_batch(tmp_path, mode):
    from idgbr.anchored.data import CoarseSource, CropSampler
    from idgbr.anchored.process import training_loss
    from idgbr.datasets import TileDataset

    cfg = _config(tmp_path, mode, lr=3e-3, warmup=1)
    ds = load_dataset("buildings", "train")
    busy = [t for i, t in enumerate(ds.tiles[:200]) if 0.15 < ds[i][1].mean() < 0.6][:6]  # tiles with buildings
    sampler = CropSampler(TileDataset(ds.spec, "train", busy), [CoarseSource("buildings-old")], 64, variants=1)
    batch = sampler.batch(0, 4)
    trainer = Trainer(cfg, 2)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    before = float(training_loss(trainer.net, *batch, g(), unroll=0.0).detach())
    for _ in range(5):
        trainer.step = 0  # the same noise every time: a fixed objective
        trainer.train_step(*batch)
    after = float(training_loss(trainer.net, *batch, g(), unroll=0.0).detach())
    assert 0 < before < 10 and after < before


def test_resume_equals_uninterrupted_training(tmp_path):
    straight = train(_config(tmp_path / "a", "diffusion", steps=4, warmup=1), report=lambda s: None)
    cfg = _config(tmp_path / "b", "diffusion", steps=4, warmup=1, stop_at=2)  # stopped half-way, same schedule
    assert train(cfg, report=lambda s: None).step == 2
    cfg.train.stop_at = None
    resumed = train(cfg, resume=True, report=lambda s: None)
    assert straight.step == resumed.step == 4
    a = AnchoredRefinerNet.from_pretrained(straight.out / "checkpoint" / "model")
    b = AnchoredRefinerNet.from_pretrained(resumed.out / "checkpoint" / "model")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    with pytest.raises(Exception, match="--resume"):
        train(cfg, report=lambda s: None)  # a second fresh run into a used folder is refused


def test_tiny_train_then_refine_beats_its_coarse_input(tmp_path):
    """Eight real building tiles with `buildings-old` coarse maps (shifted ~1 m, generalised):
    a few hundred CPU steps, then the model folder refines those tiles through the refiner
    protocol and must beat their coarse maps in boundary F@3 (the whole loop works; held-out
    quality is what `idgbr benchmark quality` measures)."""
    from idgbr.benchmarks.quality import Tile
    from idgbr.evaluate import Evaluator

    cfg = _config(tmp_path, "discriminative", steps=240, batch_size=6, lr=3e-3, warmup=10, validate_every=240)
    cfg.data.limit = 8
    result = train(cfg, report=lambda s: None)
    card = json.loads((result.out / "model_card.json").read_text())
    assert card["refiner"] == "anchored" and card["training"]["steps"] == 240
    refiner = load_refiner(result.out, device="cpu")
    ds = load_dataset("buildings", "train")
    picks = np.unique(np.linspace(0, len(ds) - 1, 8).round().astype(int))
    tiles = []
    for i in picks:
        image, gt, tid = ds[int(i)]
        tiles.append(Tile(tid, image, gt, coarsen(gt, "buildings-old", tile_rng(0, f"buildings-old/{tid}"), 2,
                                                 gsd_m=ds.tiles[int(i)].gsd_m)))
    batch = TileBatch(np.stack([t.image for t in tiles]).transpose(0, 3, 1, 2).astype(np.float32) / 255,
                      np.stack([t.coarse for t in tiles]), np.ones((len(tiles), 256, 256), bool))
    pred = refiner.predict(batch).argmax(1)
    ev, base = Evaluator(2), Evaluator(2)
    for t, p in zip(tiles, pred):
        ev.update(p.astype(np.uint8), t.gt, t.coarse)
        base.update(t.coarse, t.gt, t.coarse)
    assert ev.result()["boundary_f"]["3"] > base.result()["boundary_f"]["3"] + 0.03
    # the gate keeps the coarse class wherever the model is less sure than the gate
    gated = load_refiner(result.out, device="cpu", gate=0.9).predict(batch)
    changed, changed_gated = pred != batch.coarse, gated.argmax(1) != batch.coarse
    assert changed_gated.sum() < changed.sum() and not (changed_gated & ~changed).any()
    assert (gated.max(1)[changed_gated] > 0.9).all()


def _anchored_folder(tmp_path, gsd_range: list[float]):
    """An untrained (identity at init) anchored model folder with a GSD range."""
    from idgbr.models.card import ClassInfo, ModelCard

    folder = tmp_path / "anchored-untrained"
    torch.manual_seed(0)
    AnchoredRefinerNet(num_classes=2, widths=(8, 16, 32), steps=4).save_pretrained(folder)
    ModelCard(name="anchored-untrained", refiner="anchored", classes=[ClassInfo(0, "background", "#9e9e9e"),
              ClassInfo(1, "building", "#e31a1c")], gsd_m=0.15, gsd_range_m=gsd_range, tile_size=128,
              training={"sampling": {"steps": 2}}).save(folder)
    return folder


def test_a_0075m_orthophoto_is_refined_at_the_models_gsd_and_returned_on_its_grid(shared_data, tmp_path):
    """A real 0.075 m mosaic (Kampala, EPSG:3857) with a model trained at 0.15-0.3 m: tiles go
    through the model at 0.15 m and the outputs come back on the image grid. The untrained
    model reproduces its input, so the result must equal the coarse map up to resampling."""
    import rasterio

    from idgbr import refine
    from idgbr.models.resample import ground_gsd_m
    from idgbr.xyz import build_xyz_mosaic, complete_z19_parents

    area = shared_data / "buildings_hot_oam" / "area2"
    image, gpkg = tmp_path / "ortho.tif", tmp_path / "buildings.gpkg"
    build_xyz_mosaic(area, *complete_z19_parents(area)[0], image, gpkg)
    with rasterio.open(image) as ds:
        assert 0.07 < ground_gsd_m(ds.crs, ds.transform, ds.width, ds.height) < 0.08
        shape, transform = ds.shape, ds.transform
    result = refine(image, gpkg, _anchored_folder(tmp_path, [0.15, 0.3]), tmp_path / "out", device="cpu")
    assert any("outside model" in line and "resampled to 0.15 m" in line for line in result.summary)
    with rasterio.open(result.refined) as r, rasterio.open(result.coarse) as c:
        col, row = ~transform * (r.transform.c, r.transform.f)  # the layer's part of the image grid
        assert r.res == (transform.a, -transform.e) and col == round(col) and row == round(row)
        assert r.width <= shape[1] and r.height <= shape[0]
        refined, coarse = r.read(1), c.read(1)
    known = coarse != 255
    agree = (refined[known] == coarse[known]).mean()
    assert 0.97 < agree < 1.0  # halving and doubling moves edge pixels, nothing else
    inside = refine(image, gpkg, _anchored_folder(tmp_path / "b", [0.05, 0.1]), tmp_path / "out2", device="cpu")
    assert not any("outside model" in line for line in inside.summary)  # inside the range: its own pixels
    with rasterio.open(inside.refined) as r, rasterio.open(inside.coarse) as c:
        assert (r.read(1) == c.read(1)).all()


@pytest.mark.parametrize("precision", ["auto", "fp32"])  # bf16 batches on this CPU; fp32 runs tile by tile
def test_a_tiles_diffusion_noise_depends_on_its_grid_position_not_on_its_batch(precision):
    """What makes a cluster run equal the in-process run for a diffusion refiner: each tile's
    noise is seeded by (seed, its row and column in the run's grid), whatever the batch or order."""
    refiner = load_refiner("buildings-diffusion", samples=2, precision=precision)
    tiles = [(image[:256, :256], coarsen(label, "buildings-old", tile_rng(0, tid), 2, gsd_m=0.15)[:256, :256])
             for image, label, tid in _real_tiles(3)]
    image = np.stack([t[0] for t in tiles]).transpose(0, 3, 1, 2).astype(np.float32) / 255
    coarse = np.stack([t[1] for t in tiles])
    origins = np.array([[0, 0], [0, 192], [192, 0]])

    def run(order: list[int], at: np.ndarray = origins) -> tuple[np.ndarray, np.ndarray]:
        return refiner.predict_with_uncertainty(TileBatch(image[order], coarse[order], np.ones_like(coarse[order], bool),
                                                          at[order]))

    probs, unc = run([0, 1, 2])
    assert unc.max() > 0  # two samples that differ: the noise matters
    back_probs, back_unc = run([2, 1, 0])
    assert np.array_equal(back_probs[::-1], probs) and np.array_equal(back_unc[::-1], unc)
    alone = run([1])
    assert np.array_equal(alone[0][0], probs[1]) and np.array_equal(alone[1][0], unc[1])
    moved = run([1], np.array([[0, 0], [384, 0], [0, 0]]))
    assert not np.array_equal(moved[0][0], probs[1])


def test_recipe_odds_steer_the_crops_and_validation_splits_its_tiles_among_recipes(tmp_path):
    from idgbr.anchored.data import CoarseSource, CropSampler
    from idgbr.anchored.train import val_tiles

    ds = load_dataset("buildings", "train")
    few = type(ds)(ds.spec, ds.split, ds.tiles[:3])
    sources = [CoarseSource("buildings-osm"), CoarseSource("buildings-old")]
    only_old = CropSampler(few, sources, 64, variants=2, weights=[0.0, 1.0])
    for step in range(4):
        only_old.batch(step, 4)
    assert {s for _, s, _ in only_old._cache} == {1}
    with pytest.raises(InputError, match="one non-negative odds per recipe"):
        CropSampler(few, sources, 64, weights=[1.0])

    cfg = _config(tmp_path, "diffusion")
    cfg.data.val_recipe = ["buildings-osm", "buildings-old"]
    tiles = val_tiles(cfg)
    val = load_dataset("buildings", "val")
    assert len(tiles) == 4 and len({t.tile_id for t in tiles}) == 4
    for t, recipe in zip(tiles, ["buildings-osm", "buildings-osm", "buildings-old", "buildings-old"]):
        i = val.tile_ids.index(t.tile_id)
        assert np.array_equal(t.coarse, coarsen(t.gt, recipe, tile_rng(0, t.tile_id), 2, gsd_m=val.tiles[i].gsd_m))


def test_a_short_reach_keeps_every_change_near_the_coarse_boundary():
    """`reach`: how far a boundary may move. With 3 px, nothing farther than 3 px (chessboard)
    from a coarse boundary changes; beyond the trained band it is refused."""
    (image, label, tid), = _real_tiles(1)
    coarse = coarsen(label, "buildings-old", tile_rng(0, tid), 2, gsd_m=0.15)
    batch = TileBatch(image.transpose(2, 0, 1)[None].astype(np.float32) / 255, coarse[None],
                      np.ones((1,) + coarse.shape, bool))
    full = load_refiner("buildings").predict(batch)[0].argmax(0)
    narrow = load_refiner("buildings", reach=3).predict(batch)[0].argmax(0)
    dist = boundary_distance(torch.from_numpy(coarse.astype(np.int64))[None], 16)[0].numpy()
    assert (full != coarse)[dist > 3].any()  # the full band moves boundaries farther than 3 px here
    assert not (narrow != coarse)[dist > 3].any()
    assert (narrow != coarse).any()
    with pytest.raises(InputError, match="reach must be 1..16"):
        load_refiner("buildings", reach=17)


def test_a_tile_is_close_when_its_refined_outlines_stay_within_reach_of_the_coarse_ones():
    """Real footprints against themselves moved by 1 px (a close layer) and by 2 CLOSE_PX
    (a misregistered one)."""
    labels = np.stack([label for _, label, _ in _real_tiles(6) if label.any() and not label.all()])
    near, far = np.roll(labels, 1, axis=2), np.roll(labels, 2 * CLOSE_PX, axis=1)
    assert close_tiles(labels, labels).all() and close_tiles(labels, near).all()
    assert not close_tiles(labels, far).any()


def test_the_close_gate_holds_back_doubtful_edits_only_on_tiles_whose_layer_is_close():
    """The shipped buildings model on real val tiles, one close (`buildings-osm`) and one
    misregistered (`buildings-old`) coarse map each: where the ungated output shows the layer
    close, a pixel leaves its coarse class only when sure; elsewhere every edit stays."""
    tiles = _real_tiles(8)
    image = np.stack([im for im, _, _ in tiles] * 2).transpose(0, 3, 1, 2).astype(np.float32) / 255
    coarse = np.stack([coarsen(label, recipe, tile_rng(0, tid), 2, gsd_m=0.15)
                       for recipe in ("buildings-osm", "buildings-old") for _, label, tid in tiles])
    batch = TileBatch(image, coarse, np.ones(coarse.shape, bool))
    free = load_refiner("buildings", close_gate=0.5).predict(batch)
    gated = load_refiner("buildings", close_gate=0.9).predict(batch)
    close = close_tiles(free.argmax(1), coarse)
    assert close.any() and not close.all()
    np.testing.assert_array_equal(gated[~close], free[~close])
    edits = gated[close].argmax(1) != coarse[close]
    assert (gated[close].max(1)[edits] >= 0.9).all()
    assert edits.sum() < (free[close].argmax(1) != coarse[close]).sum()
    with pytest.raises(InputError, match="close_gate must be in"):
        load_refiner("buildings", close_gate=1.0)
