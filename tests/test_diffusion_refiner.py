"""The idgbr refiner behind the registry, and the sd15 preset's loader on a tiny local
diffusers-format Stable Diffusion folder written by the test."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from diffusion_tiny import tiny_model, tiny_unet, tiny_vae
from idgbr.diffusion.model import IDGBRModel
from idgbr.diffusion.presets import sd15
from idgbr.models import NO_COARSE, ModelCard, TileBatch, default_classes, load_refiner


def write_model_folder(folder: Path, num_classes: int) -> Path:
    tiny_model(num_classes).save_pretrained(folder)
    ModelCard(name="tiny", refiner="idgbr", classes=default_classes(num_classes), tile_size=32,
              training={"sampling": {"steps": 2}}).save(folder)
    return folder


def test_refiner_predicts_probabilities(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "m", 3)
    refiner = load_refiner(folder, device="cpu", samples=2, seed=5, guidance=None)
    assert refiner.options.steps == 2 and refiner.options.samples == 2 and refiner.options.guidance == 3.0
    assert refiner.nfe_per_tile == 8
    refiner.bind_classes(3)
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 3, (2, 30, 30)).astype(np.uint8)  # 30: not a multiple of the latent grid
    coarse[0, :4] = NO_COARSE
    batch = TileBatch(rng.random((2, 3, 30, 30), dtype=np.float32), coarse, np.ones((2, 30, 30), bool))
    probs, unc = refiner.predict_with_uncertainty(batch)
    assert probs.shape == (2, 3, 30, 30) and probs.dtype == np.float32
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert unc.shape == (2, 30, 30) and unc.dtype == np.float32 and unc.max() > 0
    assert np.array_equal(refiner.predict(batch), probs)  # seeded: the same every call


def write_tiny_sd_folder(folder: Path) -> Path:
    """unet/, vae/, text_encoder/ and tokenizer/ in diffusers layout, all tiny."""
    tiny_unet().save_pretrained(folder / "unet")
    tiny_vae().save_pretrained(folder / "vae")
    CLIPTextModel(CLIPTextConfig(vocab_size=6, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=8, bos_token_id=0,
                                 eos_token_id=1, pad_token_id=1)).save_pretrained(folder / "text_encoder")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3, "a": 4, "b": 5}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"),
                  model_max_length=8).save_pretrained(folder / "tokenizer")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return folder


def test_sd15_loader_on_a_tiny_diffusers_folder(tmp_path: Path) -> None:
    sd = write_tiny_sd_folder(tmp_path / "sd")
    model = sd15(2, path=sd).eval()
    unet = type(model.unet).from_pretrained(sd / "unet")
    for name, p in unet.state_dict().items():
        assert torch.equal(model.unet.state_dict()[name], p), name
    assert torch.equal(model.cond_encoder.conv_in.weight, unet.conv_in.weight)  # frozen copy of pretrained
    assert not model.cond_encoder.conv_in.weight.requires_grad
    assert model.null_context.shape == (1, 8, 8) and not model.null_context.requires_grad
    assert model.null_context.abs().sum() > 0
    model.save_pretrained(tmp_path / "out")
    loaded = IDGBRModel.from_pretrained(tmp_path / "out")
    assert torch.equal(loaded.null_context, model.null_context)
    assert loaded.config.null_context_learned is False


def test_pipeline_writes_uncertainty_when_several_samples_are_drawn(tmp_path: Path, shared_data: Path) -> None:
    """A real building tile as a georeferenced raster, refined by a tiny (untrained) idgbr model
    with two samples per tile: uncertainty.tif comes out on the image grid."""
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin

    import idgbr

    stem = sorted((shared_data / "buildings_hot_oam/area1/masks").glob("*.png"))[0].stem
    rgb = np.asarray(Image.open(shared_data / f"buildings_hot_oam/area1/images/{stem}.png").convert("RGB"))[:64, :64]
    mask = (np.asarray(Image.open(shared_data / f"buildings_hot_oam/area1/masks/{stem}.png"))[:64, :64] > 0)
    common = dict(driver="GTiff", width=64, height=64, crs="EPSG:32737", transform=from_origin(500000, 9300000, 0.3, 0.3))
    with rasterio.open(tmp_path / "image.tif", "w", count=3, dtype="uint8", **common) as dst:
        dst.write(rgb.transpose(2, 0, 1))
    with rasterio.open(tmp_path / "coarse.tif", "w", count=1, dtype="uint8", **common) as dst:
        dst.write(mask.astype(np.uint8), 1)
    model = write_model_folder(tmp_path / "m", 2)
    result = idgbr.refine(tmp_path / "image.tif", tmp_path / "coarse.tif", model, tmp_path / "out", device="cpu",
                          tile_size=32, seed=1, refiner_options={"samples": 2})
    assert result.uncertainty is not None and result.uncertainty.is_file()
    with rasterio.open(result.uncertainty) as unc, rasterio.open(result.refined) as ref:
        assert unc.transform == ref.transform == common["transform"] and unc.crs == ref.crs
        u = unc.read(1)
        assert (u >= 0).all() and (u <= 1).all() and u.max() > 0
        assert set(np.unique(ref.read(1))) <= {0, 1}
    single = idgbr.refine(tmp_path / "image.tif", tmp_path / "coarse.tif", model, tmp_path / "one", device="cpu",
                          tile_size=32)
    assert single.uncertainty is None and not (tmp_path / "one" / "uncertainty.tif").exists()
