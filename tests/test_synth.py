"""SatSynth (idgbr.synth): analog-bit labels, a tiny generator trained on real landcover tiles
(CLI, resume, sampling shapes, save/load), the SR stage following its condition, and the
`synth sample` folder that the trainers read."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from idgbr.cli import main
from idgbr.errors import InputError
from idgbr.synth import bits
from idgbr.synth.config import SynthConfig

TINY = {"block_out_channels": [8, 16], "norm_num_groups": 4, "attention_head_dim": 8, "batch_size": 2}
K = 6  # landcover


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


# --- bits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("k", range(2, 17))
def test_bits_round_trip(k: int) -> None:
    labels = torch.arange(k).view(1, 1, k).expand(3, 4, k).contiguous()  # every id
    code = bits.encode(labels, k)
    assert code.shape == (3, bits.num_bits(k), 4, k) and set(code.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(bits.decode(code, k), labels)
    noisy = code + 0.3 * torch.randn(code.shape, generator=torch.Generator().manual_seed(k))
    assert (bits.decode(noisy, k) == labels).float().mean() > 0.95


@pytest.mark.parametrize("k", [3, 5, 6, 11])
def test_invalid_codes_map_to_valid_ids(k: int) -> None:
    n = bits.num_bits(k)
    every = torch.tensor([[(c >> b) & 1 for b in range(n)] for c in range(2 ** n)]).float() * 2 - 1
    decoded = bits.decode(every.T[None, :, :, None], k)[0, :, 0]
    assert decoded[:k].tolist() == list(range(k)) and int(decoded.max()) < k


def test_pair_tensor_round_trip() -> None:
    rng = np.random.default_rng(0)
    image, label = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), rng.integers(0, K, (8, 8), dtype=np.uint8)
    x = bits.pair_to_tensor(image, label, K)
    assert x.shape == (6, 8, 8) and x.min() >= -1 and x.max() <= 1
    back_image, back_label = bits.tensor_to_pair(x, K)
    assert np.array_equal(back_image, image) and np.array_equal(back_label, label)


def test_config_refuses_unknown_keys() -> None:
    with pytest.raises(InputError, match="unknown keys"):
        SynthConfig.from_dict({"base": {"widths": [8]}})
    with pytest.raises(InputError, match="sampler"):
        SynthConfig.from_dict({"sampling": {"sampler": "euler"}})


# --- a tiny generator on real tiles ---------------------------------------------------------


def write_config(folder: Path, name: str, **sections: dict) -> Path:
    cfg = {"name": name, "out": str(folder / name), "data": {"dataset": "landcover", "crop": 32, "limit": 4},
           "base": dict(TINY), "sr": dict(TINY), "train": {"threads": 1, "log_every": 1, "warmup": 2, "device": "cpu"},
           "sampling": {"sampler": "ddim", "steps": 2}}
    for key, value in sections.items():
        cfg[key] = {**cfg[key], **value}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A generator trained 3 steps per stage through the CLI, then resumed to 5."""
    root = tmp_path_factory.mktemp("synth")
    config = write_config(root, "gen", data={"root": str(shared_data)})
    assert main(["synth", "train", "--config", str(config), "--steps", "3"]) == 0
    assert main(["synth", "train", "--config", str(config), "--steps", "5", "--resume"]) == 0
    return root / "gen"


def test_training_logs_finite_loss_and_resumes(tiny: Path) -> None:
    log = [json.loads(line) for line in (Path(f"{tiny}.work") / "train_log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"]) for r in log] == [(s, i) for s in ("base", "sr") for i in (1, 2, 3)] + \
        [(s, i) for s in ("base", "sr") for i in (4, 5)]
    assert all(np.isfinite(r["loss"]) for r in log)
    card = json.loads((tiny / "synth_card.json").read_text())
    assert card["num_bits"] == 3 and [c["name"] for c in card["classes"]][:2] == ["building", "clutter"]
    assert (card["base_resolution"], card["sr_resolution"], card["training"]["sr"]["step"]) == (16, 32, 5)
    assert (tiny / "base" / "diffusion_pytorch_model.safetensors").is_file()


def test_sampling_shapes(tiny: Path) -> None:
    from idgbr.synth.model import load_synth_model
    from idgbr.synth.sample import generate

    model = load_synth_model(tiny)
    for sr, size in ((True, 32), (False, 16)):
        pairs = generate(model, 3, sampler="ddim", steps=2, batch_size=2, sr=sr)
        assert len(pairs) == 3
        for image, label in pairs:
            assert image.shape == (size, size, 3) and image.dtype == np.uint8
            assert label.shape == (size, size) and label.dtype == np.uint8 and label.max() < K


def test_save_load_round_trip_same_samples(tiny: Path, tmp_path: Path) -> None:
    from idgbr.synth.model import load_synth_model, save_synth_model
    from idgbr.synth.sample import generate

    model = load_synth_model(tiny)
    again = load_synth_model(save_synth_model(model, tmp_path / "copy"))
    for sampler in ("dpm++", "ddpm"):
        a, b = (generate(m, 2, sampler=sampler, steps=3, seed=5) for m in (model, again))
        assert all(np.array_equal(x, y) for pa, pb in zip(a, b) for x, y in zip(pa, pb))
    other = generate(model, 2, sampler="ddpm", steps=3, seed=6)
    assert not np.array_equal(other[0][0], a[0][0])


def test_sample_cli_writes_a_folder_dataset(tiny: Path, tmp_path: Path) -> None:
    from idgbr.segment.data import folder_dataset

    out = tmp_path / "pairs"
    assert main(["synth", "sample", "--model", str(tiny), "--n", "3", "--out", str(out), "--steps", "2",
                 "--batch-size", "2", "--device", "cpu"]) == 0
    assert sorted(p.name for p in (out / "labels").iterdir()) == [f"synth_{i:05d}.png" for i in range(3)]
    info = json.loads((out / "synth_info.json").read_text())
    assert (info["n"], info["sampler"], info["steps"], len(info["classes"])) == (3, "ddim", 2, K)
    ds = folder_dataset(out / "images", out / "labels", classes=K)
    image, label, _ = ds[0]
    assert len(ds) == 3 and image.shape == (32, 32, 3) and label.max() < K
    assert main(["synth", "sample", "--model", str(tiny), "--n", "1", "--out", str(out)]) == 2  # not empty


def test_sample_cli_bad_model_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "synth_card.json").write_text("{not json")
    for model in (tmp_path / "missing", tmp_path / "broken"):
        out = tmp_path / "out" / "pairs"
        assert main(["synth", "sample", "--model", str(model), "--n", "2", "--out", str(out)]) == 2
        assert str(model) in capsys.readouterr().err
        assert not (tmp_path / "out").exists()


# --- the SR stage follows its condition -----------------------------------------------------


def sr_agreement(model, crops: tuple[torch.Tensor, torch.Tensor], res: int) -> tuple[float, float]:
    """Share of low-resolution pixels whose class the SR output (downsampled ×2 by majority)
    keeps; and the same against another crop's condition (what ignoring it would score)."""
    from idgbr.synth.sample import super_resolve
    from idgbr.synth.train import resize_pair

    low = resize_pair(*crops, res, K)
    want = bits.decode(low[:, 3:], K)
    high = super_resolve(model, low, "ddpm", 50, torch.Generator().manual_seed(0))
    got = bits.decode(high[:, 3:], K)
    down = F.interpolate(F.one_hot(got, K).permute(0, 3, 1, 2).float(), size=(res, res), mode="area").argmax(1)
    return float((down == want).float().mean()), float((down == want.roll(1, 0)).float().mean())


def test_sr_stage_keeps_the_conditioning_labels(tmp_path: Path, shared_data: Path) -> None:
    """A tiny SR stage trained 400 steps (~20 s) keeps ~75 % of the low-resolution classes
    (another crop's condition: ~55 %); untrained it keeps ~12 %."""
    from idgbr.synth.model import build_unet, load_synth_model
    from idgbr.synth.train import CropSampler, open_tiles, train_synth

    stage = {"block_out_channels": [32], "norm_num_groups": 8, "attention_head_dim": 8, "batch_size": 4, "lr": 3e-3}
    cfg = SynthConfig.from_dict({
        "name": "sr", "out": str(tmp_path / "sr"), "data": {"dataset": "landcover", "root": str(shared_data),
                                                          "crop": 16, "limit": 6},
        "base": {**stage, "steps": 0}, "sr": {**stage, "steps": 400},
        "train": {"threads": 1, "log_every": 100, "warmup": 10, "device": "cpu"}})
    train_synth(cfg, report=lambda _: None)
    model = load_synth_model(cfg.out)
    crops = CropSampler(open_tiles(cfg.data), 16, seed=7).batch(0, 0, 16)
    kept, other = sr_agreement(model, crops, 8)
    assert kept > 0.6 and kept > other + 0.1, (kept, other)
    torch.manual_seed(0)
    model.sr = build_unet(cfg.sr, 16, model.card.channels, conditioned=True).eval()
    untrained, _ = sr_agreement(model, crops, 8)
    assert untrained < 0.4, untrained
