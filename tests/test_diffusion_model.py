"""IDGBR model: shapes, exact zero-init behaviour, save/load, cached vs recomputed sampling, CFG
pass counts (tiny CPU configurations, well under a second each)."""
from __future__ import annotations

import pytest
import torch

from diffusion_tiny import tiny_batch, tiny_model
from idgbr.diffusion.model import IDGBRModel
from idgbr.diffusion.sampling import SamplingOptions, reference_sample, sample


@pytest.mark.parametrize("num_classes", [2, 5])
def test_shapes_and_dtypes(num_classes: int) -> None:
    model = tiny_model(num_classes)
    image, labels = tiny_batch(num_classes)
    with torch.no_grad():
        lat = model.encode_labels(labels)
        assert lat.shape == (2, 4, 16, 16) and lat.dtype == torch.float32
        conds = model.prepare_conditions(model.encode_image(image), lat)
        assert len(conds) == len(model.guidance.blocks) == 5  # 4 skip points + mid block
        eps = model.denoise(torch.randn_like(lat), 10, conds, 3.0)
        assert eps.shape == lat.shape
    result = sample(model, image, labels, SamplingOptions(steps=2, samples=2))
    assert result.probs.shape == (2, num_classes, 32, 32) and result.probs.dtype == torch.float32
    assert torch.allclose(result.probs.sum(1), torch.ones(2, 32, 32), atol=1e-5)
    assert result.uncertainty is not None and result.uncertainty.shape == (2, 32, 32)
    assert float(result.uncertainty.min()) >= 0 and float(result.uncertainty.max()) <= 1


def test_unknown_coarse_pixels_embed_to_zero() -> None:
    model = tiny_model(3)
    codes = model.label_embed.encode(torch.tensor([[[0, 255], [2, 1]]]))
    assert torch.all(codes[0, :, 0, 1] == 0) and codes.abs().max() <= 1


def test_zero_init_guidance_is_exactly_the_plain_unet() -> None:
    model = tiny_model(2)
    image, labels = tiny_batch(2)
    with torch.no_grad():
        conds = model.prepare_conditions(model.encode_image(image), model.encode_labels(labels))
        z = torch.randn(2, 4, 16, 16)
        t = torch.tensor([10, 700])
        plain = model.unet(z, t, model.context(2)).sample
        assert torch.equal(model.denoise(z, t, conds), plain)
        # the guided path decodes both branches in one batch: equal up to float rounding
        assert torch.allclose(model.denoise(z, t, conds, guidance_scale=3.0), plain, atol=1e-5)


def test_save_load_round_trip(tmp_path) -> None:
    model = tiny_model(3)
    with torch.no_grad():  # make every part non-trivial, zero-initialised layers included
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file() and list(tmp_path.glob("*.safetensors"))
    loaded = IDGBRModel.from_pretrained(tmp_path).eval()
    image, labels = tiny_batch(3)
    opts = SamplingOptions(steps=2, guidance=2.0, seed=7)
    assert torch.equal(sample(model, image, labels, opts).probs, sample(loaded, image, labels, opts).probs)


@pytest.mark.parametrize("sampler", ["ddim", "dpm++"])
def test_cached_conditions_equal_recomputed(sampler: str) -> None:
    model = tiny_model(2)
    with torch.no_grad():
        for p in model.guidance.parameters():
            p.add_(0.1 * torch.randn_like(p))
    image, labels = tiny_batch(2)
    opts = SamplingOptions(sampler=sampler, steps=3, guidance=3.0, samples=2, seed=3)
    fast = sample(model, image, labels, opts)
    again = sample(model, image, labels, opts, recompute_conditions=True)
    authors = reference_sample(model, image, labels, opts)
    assert torch.allclose(fast.probs, again.probs, atol=1e-5)
    assert torch.allclose(fast.probs, authors.probs, atol=1e-4)
    assert torch.allclose(fast.uncertainty, authors.uncertainty, atol=1e-4)


@pytest.mark.parametrize("guidance,decoder_rows", [(1.0, 2), (3.0, 4)])
def test_cfg_pass_count(guidance: float, decoder_rows: int) -> None:
    """One encoder pass per step either way; w = 1 decodes the batch once, w > 1 decodes the
    conditional and unconditional branches together (twice the rows, still one call)."""
    model = tiny_model(2)
    encoder_calls: list[int] = []
    decoder_calls: list[int] = []
    model.unet.conv_in.register_forward_hook(lambda m, i, o: encoder_calls.append(i[0].shape[0]))
    model.unet.conv_out.register_forward_hook(lambda m, i, o: decoder_calls.append(i[0].shape[0]))
    image, labels = tiny_batch(2)
    steps = 3
    sample(model, image, labels, SamplingOptions(steps=steps, guidance=guidance))
    assert encoder_calls == [2] * steps
    assert decoder_calls == [decoder_rows] * steps
    assert SamplingOptions(steps=steps, guidance=guidance).nfe_per_tile == steps * decoder_rows // 2
