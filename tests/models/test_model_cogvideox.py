"""CogVideoX adapters: schedule, v-prediction formulas, rotary/I2V inputs, forward+backward, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.models.model_builders import cogvideox_i2v, cogvideox_t2v, cond, text
from videogpa.engine.models import get_adapter
from videogpa.engine.models.cogvideox import DEFAULT_SCHEDULER
from videogpa.engine.types import Conditioning


def expected_alphas_cumprod(beta_start, beta_end, T, snr_shift, zero_snr):
    """ᾱ from the formulas: scaled-linear betas, SD3-style SNR shift, zero-terminal-SNR rescale
    (Lin et al.)."""
    betas = [
        (math.sqrt(beta_start) + (math.sqrt(beta_end) - math.sqrt(beta_start)) * i / (T - 1)) ** 2
        for i in range(T)
    ]
    abar, prod = [], 1.0
    for b in betas:
        prod *= 1 - b
        abar.append(prod / (snr_shift + (1 - snr_shift) * prod))
    if zero_snr:
        s = [math.sqrt(a) for a in abar]
        s0, sT = s[0], s[-1]
        abar = [((x - sT) * s0 / (s0 - sT)) ** 2 for x in s]
    return torch.tensor(abar, dtype=torch.float64)


def test_default_schedule_matches_formulas():
    adapter = get_adapter("cogvideox-t2v")
    expected = expected_alphas_cumprod(0.00085, 0.012, 1000, 3.0, True)
    torch.testing.assert_close(adapter.alphas_cumprod, expected, rtol=1e-5, atol=1e-7)
    assert adapter.alphas_cumprod[-1] == pytest.approx(0.0, abs=1e-12)  # zero terminal SNR


def test_schedule_from_model_folder(tmp_path):
    config = dict(DEFAULT_SCHEDULER, snr_shift_scale=1.0, _class_name="CogVideoXDDIMScheduler")
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    adapter = get_adapter("cogvideox-t2v", path=tmp_path)
    expected = expected_alphas_cumprod(0.00085, 0.012, 1000, 1.0, True)
    torch.testing.assert_close(adapter.alphas_cumprod, expected, rtol=1e-5, atol=1e-7)
    # a transformer subfolder finds its parent's scheduler config
    (tmp_path / "transformer").mkdir()
    sub = get_adapter("cogvideox-t2v", path=tmp_path / "transformer")
    torch.testing.assert_close(sub.alphas_cumprod, adapter.alphas_cumprod)


def test_folder_without_scheduler_warns_and_uses_defaults(tmp_path):
    with pytest.warns(UserWarning, match="scheduler_config.json"):
        adapter = get_adapter("cogvideox-t2v", path=tmp_path)
    torch.testing.assert_close(adapter.alphas_cumprod, get_adapter("cogvideox-t2v").alphas_cumprod)


def test_rejects_non_v_prediction_and_bad_json(tmp_path):
    with pytest.raises(ValueError, match="prediction_type"):
        get_adapter("cogvideox-t2v", scheduler_config=dict(DEFAULT_SCHEDULER, prediction_type="epsilon"))
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text("{oops")
    with pytest.raises(ValueError, match="scheduler_config.json.*not valid JSON"):
        get_adapter("cogvideox-t2v", path=tmp_path)


def test_noise_and_v_target_formulas():
    adapter = get_adapter("cogvideox-t2v")
    x0, eps = torch.randn(3, 2, 4, 4, 4, dtype=torch.float64), torch.randn(3, 2, 4, 4, 4, dtype=torch.float64)
    t = torch.tensor([0, 517, 999])
    xt, v = adapter.add_noise(x0, eps, t), adapter.target(x0, eps, t)
    expected = expected_alphas_cumprod(0.00085, 0.012, 1000, 3.0, True)[t]
    a, s = expected.sqrt().view(-1, 1, 1, 1, 1), (1 - expected).sqrt().view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(xt, a * x0 + s * eps, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(v, a * eps - s * x0, rtol=1e-5, atol=1e-6)
    # the v-parameterisation identities: x0 = a·x_t − s·v and ε = s·x_t + a·v
    torch.testing.assert_close(a * xt - s * v, x0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(s * xt + a * v, eps, rtol=1e-4, atol=1e-5)


def test_sample_timesteps_uniform_integers_deterministic():
    adapter = get_adapter("cogvideox-t2v")
    draw = lambda: adapter.sample_timesteps(4000, torch.Generator().manual_seed(5), torch.device("cpu"))
    t = draw()
    assert torch.equal(t, draw())
    assert t.dtype == torch.long and t.min() >= 0 and t.max() <= 999
    assert abs(t.double().mean().item() - 499.5) < 20  # uniform mean (std of the mean ≈ 4.6)
    assert len(t.unique()) > 900


def test_t2v_forward_backward():
    adapter = get_adapter("cogvideox-t2v")
    model = cogvideox_t2v()
    x0 = torch.randn(2, 3, 4, 8, 8)
    t = torch.tensor([3, 900])
    pred = adapter.predict(model, adapter.add_noise(x0, torch.randn_like(x0), t), t, cond(2))
    assert pred.shape == x0.shape and torch.isfinite(pred).all()
    pred.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert adapter.loss_mask(x0, cond(2)) is None
    assert adapter.latent_layout == "BFCHW"


@pytest.mark.parametrize("variant", ["1.0", "1.5"])
def test_i2v_forward_backward_and_image_input(variant):
    adapter = get_adapter("cogvideox-i2v")
    model = (
        cogvideox_i2v()
        if variant == "1.5"
        else cogvideox_i2v(patch_size_t=None, ofs_embed_dim=None, patch_bias=True)
    )
    noisy, image = torch.randn(2, 4, 4, 8, 8), torch.randn(2, 1, 4, 8, 8)
    t = torch.tensor([10, 600])
    hidden = adapter.model_input(noisy, Conditioning(text(2), image), model.config.in_channels)
    assert hidden.shape == (2, 4, 8, 8, 8)
    assert torch.equal(hidden[:, :, :4], noisy)
    assert torch.equal(hidden[:, :1, 4:], image) and not hidden[:, 1:, 4:].any()  # image, then zero padding
    pred = adapter.predict(model, noisy, t, Conditioning(text(2), image))
    assert pred.shape == noisy.shape
    pred.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        other = adapter.predict(model, noisy, t, Conditioning(text(2), image + 1))
    assert not torch.allclose(pred.detach(), other)  # the image conditions the prediction


def test_rotary_tables_cover_the_token_grid():
    adapter = get_adapter("tiny")
    config = cogvideox_i2v(patch_size_t=None, ofs_embed_dim=None, patch_bias=True).config
    cos, sin = adapter.rotary_embedding(config, 3, 8, 6, torch.device("cpu"))
    assert cos.shape == sin.shape == (3 * 4 * 3, config.attention_head_dim)
    torch.testing.assert_close(cos.square() + sin.square(), torch.ones_like(cos))


def test_rotary_embedding_is_used():
    adapter = get_adapter("cogvideox-t2v")
    model = cogvideox_t2v(use_rotary_positional_embeddings=True)
    noisy, t = torch.randn(1, 3, 4, 8, 8), torch.tensor([400])
    with torch.no_grad():
        pred = adapter.predict(model, noisy, t, cond(1))
        plain = model(hidden_states=noisy, encoder_hidden_states=text(1), timestep=t, return_dict=False)[0]
    assert not torch.allclose(pred, plain)


def test_bad_inputs():
    t2v, i2v = get_adapter("cogvideox-t2v"), get_adapter("cogvideox-i2v")
    model, model_i2v = cogvideox_t2v(), cogvideox_i2v()
    x = torch.randn(2, 3, 4, 8, 8)
    t = torch.tensor([1, 2])
    with pytest.raises(ValueError, match="5-D latents"):
        t2v.add_noise(x[0], x[0], t)
    nan = x.clone()
    nan[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        t2v.target(nan, x, t)
    with pytest.raises(ValueError, match=r"timesteps.*\[0, 1000\)"):
        t2v.add_noise(x, x, torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match="timesteps: expected shape"):
        t2v.add_noise(x, x, torch.tensor([1]))
    with pytest.raises(ValueError, match="integer timesteps"):
        t2v.add_noise(x, x, torch.tensor([1.5, 2.0]))
    with pytest.raises(ValueError, match="channels"):  # a [B, C, F, H, W] (Wan-layout) batch
        t2v.predict(model, x.transpose(1, 2).contiguous(), t, cond(2))
    with pytest.raises(ValueError, match="text_embeds"):
        t2v.predict(model, x, t, Conditioning(torch.randn(2, 6, 7)))
    with pytest.raises(ValueError, match="not divisible by the patch"):
        t2v.predict(model, torch.randn(2, 3, 4, 7, 8), t, cond(2))
    with pytest.raises(ValueError, match="image_latents"):
        i2v.predict(model_i2v, torch.randn(2, 4, 4, 8, 8), t, cond(2))
    with pytest.raises(ValueError, match="image_latents"):
        i2v.predict(model_i2v, torch.randn(2, 4, 4, 8, 8), t, cond(2, torch.randn(2, 4, 4, 8, 8)))
    with pytest.raises(ValueError, match="not divisible by the patch"):  # temporal patch 2, odd frames
        i2v.predict(model_i2v, torch.randn(2, 3, 4, 8, 8), t, cond(2, torch.randn(2, 1, 4, 8, 8)))
