"""`idgbr train label-embed|vae|refiner` on tiny configs over real building tiles: each writes
a folder its loader accepts, the refiner's loads as an `idgbr refine` model, and --resume
continues from the checkpoint's step."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from idgbr.cli import main
from idgbr.datasets import data_root

try:
    data_root()
except Exception:  # noqa: BLE001 - the shared data is optional for the test suite
    pytest.skip("needs the shared data folder", allow_module_level=True)

DATA = {"dataset": "buildings", "recipes": ["buildings-osm", "blocky"], "crop": 32, "scale": 0.25, "val_tiles": 1}
TRAIN = {"batch_size": 2, "log_every": 1, "checkpoint_every": 1, "validate_every": 0, "threads": 1, "warmup": 1}


def write_config(folder: Path, name: str, **sections: dict) -> Path:
    cfg = {"name": name, "out": str(folder / name), "data": DATA, "train": TRAIN,
           "sampling": {"sampler": "ddim-trailing", "steps": 1, "guidance": 1.0}}
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def log_steps(folder: Path) -> list[int]:
    lines = [json.loads(x) for x in (folder / "train_log.jsonl").read_text().splitlines()]
    return [x["step"] for x in lines if "loss" in x]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """label-embed → vae → refiner, a few steps each."""
    root = tmp_path_factory.mktemp("diffusion_cli")
    assert main(["train", "label-embed", "--config", str(write_config(root, "embed", model={"label_hidden": 16})),
                 "--steps", "3"]) == 0
    model = {"preset": "compact", "label_embed": str(root / "embed"), "vae": str(root / "vae")}
    assert main(["train", "vae", "--config", str(write_config(root, "vae", model=model)), "--steps", "2"]) == 0
    assert main(["train", "refiner", "--config", str(write_config(root, "refiner", model=model)), "--steps", "2"]) == 0
    return root


def test_label_embed_and_vae_folders_load(trained: Path) -> None:
    from diffusers import AutoencoderKL

    from idgbr.diffusion.label_embed import LabelEmbedding

    embed = LabelEmbedding.from_pretrained(trained / "embed")
    assert embed.config.num_classes == 2 and embed.config.hidden == 16
    assert log_steps(trained / "embed") == [1, 2, 3]
    vae = AutoencoderKL.from_pretrained(trained / "vae")
    assert vae.config.scaling_factor > 0 and vae.config.scaling_factor != 0.18215  # fitted, not the default
    assert json.loads((trained / "vae" / "training.json").read_text())["steps"] == 2


def test_refiner_folder_is_an_idgbr_refine_model(trained: Path) -> None:
    from idgbr.models import load_refiner
    from idgbr.models.base import TileBatch

    folder = trained / "refiner"
    card = json.loads((folder / "model_card.json").read_text())
    assert card["refiner"] == "idgbr" and card["training"]["steps"] == 2 and card["training"]["machine"]
    assert card["training"]["sampling"]["steps"] == 1
    assert set(card["metrics"]["validation"]) >= {"boundary_f3", "wfm_band3", "miou", "coarse_boundary_f3"}
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
    refiner = load_refiner(folder, device="cpu")
    coarse = np.zeros((1, 48, 48), np.uint8)
    coarse[:, 10:30, 12:40] = 1
    batch = TileBatch(np.random.default_rng(0).random((1, 3, 48, 48), dtype=np.float32), coarse,
                      np.ones((1, 48, 48), bool))
    probs = refiner.predict(batch)
    assert probs.shape == (1, 2, 48, 48) and np.allclose(probs.sum(1), 1, atol=1e-4)


def test_refiner_resume_continues_from_the_checkpoint_step(trained: Path) -> None:
    config = trained / "refiner.yaml"
    assert main(["train", "refiner", "--config", str(config), "--steps", "4", "--resume"]) == 0
    assert log_steps(trained / "refiner") == [1, 2, 3, 4]
    assert json.loads((trained / "refiner" / "model_card.json").read_text())["training"]["steps"] == 4


def test_unknown_config_key_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {stepz: 3}\n")
    assert main(["train", "vae", "--config", str(bad)]) == 2


def test_benchmark_refiner_spec_passes_options() -> None:
    from idgbr.benchmarks.quality import refiner_spec

    assert refiner_spec("resources/models/buildings@steps=25@guidance=3.5@sampler=ddim") == (
        "resources/models/buildings", {"steps": 25, "guidance": 3.5, "sampler": "ddim"})
    assert refiner_spec("crf") == ("crf", {})


def test_batches_mix_coarse_folders_and_recipes_and_replay_by_step(tmp_path: Path) -> None:
    from PIL import Image

    from idgbr.diffusion.config import DataConfig
    from idgbr.diffusion.data import BatchSampler, open_tiles

    cfg = DataConfig(dataset="buildings", recipes=[], coarse=[str(tmp_path)], crop=32)
    tiles = open_tiles(cfg)
    few = type("Few", (list,), {"classes": tiles.classes})(tiles[i] for i in range(2))
    for _, label, tile_id in few:  # folder coarse maps = the labels, nested by tile id, 0/255
        (tmp_path / tile_id).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(label * 255).save(tmp_path / f"{tile_id}.png")
    batch = BatchSampler(few, cfg, 2).batch(0, 3)
    assert batch["image"].shape == (3, 3, 32, 32) and float(batch["image"].min()) >= -1
    assert bool((batch["coarse"] == batch["labels"]).all())
    mixed = BatchSampler(few, DataConfig(dataset="buildings", recipes=["blocky"], coarse=str(tmp_path), crop=32), 2)
    a, b = mixed.batch(5, 4), mixed.batch(5, 4)
    assert all(bool((a[k] == b[k]).all()) for k in a)  # a batch depends on (seed, step) only
