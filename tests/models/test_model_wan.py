"""Wan 2.2 TI2V adapter: flow-matching σ, noising/target, per-token timesteps, I2V first frame, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from tests.models.model_builders import cond, text, wan_ti2v
from videogpa.engine.models import get_adapter
from videogpa.engine.models.wan22_ti2v import shifted_sigma
from videogpa.engine.types import Conditioning


@pytest.mark.parametrize(
    "s, shift, sigma",
    [(0.5, 5.0, 5 / 6), (0.2, 5.0, 1 / 1.8), (0.0, 5.0, 0.0), (1.0, 5.0, 1.0), (0.3, 1.0, 0.3)],
)
def test_shifted_sigma_at_known_points(s, shift, sigma):
    assert shifted_sigma(torch.tensor(s, dtype=torch.float64), shift).item() == pytest.approx(sigma)


def test_sample_timesteps_distribution():
    adapter = get_adapter("wan2.2-ti2v")
    assert adapter.shift == 5.0
    draw = lambda: adapter.sample_timesteps(4000, torch.Generator().manual_seed(2), torch.device("cpu"))
    t = draw()
    assert torch.equal(t, draw())
    assert t.dtype == torch.float32 and t.min() > 0 and t.max() < 1000
    sigma = t.double() / 1000
    s = sigma / (5 - 4 * sigma)  # inverse of the shift: s must be uniform on (0, 1)
    assert abs(s.mean().item() - 0.5) < 0.02
    assert abs(s.median().item() - 0.5) < 0.03
    assert abs(sigma.median().item() - 5 / 6) < 0.02


def test_shift_from_scheduler_config(tmp_path):
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"flow_shift": 3.0}))
    assert get_adapter("wan2.2-ti2v", path=tmp_path).shift == 3.0
    assert get_adapter("wan2.2-ti2v", shift=2.0).shift == 2.0
    with pytest.raises(ValueError, match="shift"):
        get_adapter("wan2.2-ti2v", shift=0.0)


def test_add_noise_and_target_formulas():
    adapter = get_adapter("wan2.2-ti2v")
    x0, eps = torch.randn(3, 4, 3, 4, 4, dtype=torch.float64), torch.randn(3, 4, 3, 4, 4, dtype=torch.float64)
    t = torch.tensor([0.0, 250.0, 999.0], dtype=torch.float64)
    sigma = torch.tensor([0.0, 0.25, 0.999], dtype=torch.float64).view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(adapter.add_noise(x0, eps, t), (1 - sigma) * x0 + sigma * eps)
    torch.testing.assert_close(adapter.target(x0, eps, t), eps - x0)
    # the velocity integrates x_t: x_t + (1 − σ)·(ε − x0) = ε
    torch.testing.assert_close(adapter.add_noise(x0, eps, t) + (1 - sigma) * adapter.target(x0, eps, t), eps)


def test_t2v_forward_backward():
    adapter = get_adapter("wan2.2-ti2v")
    model = wan_ti2v()
    x0 = torch.randn(2, 4, 3, 8, 8)
    t = torch.tensor([100.0, 800.0])
    noisy = adapter.add_noise(x0, torch.randn_like(x0), t)
    pred = adapter.predict(model, noisy, t, cond(2))
    assert pred.shape == x0.shape and torch.isfinite(pred).all()
    pred.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert adapter.loss_mask(x0, cond(2)) is None
    # Wan 2.2 TI2V takes per-token timesteps: all tokens carry t in text-to-video
    with torch.no_grad():
        per_token = t.view(2, 1).expand(2, 3 * 4 * 4)
        direct = model(
            hidden_states=noisy, timestep=per_token, encoder_hidden_states=text(2), return_dict=False
        )[0]
    torch.testing.assert_close(pred.detach(), direct)


def test_i2v_first_frame_clean_zero_timestep_and_masked():
    adapter = get_adapter("wan2.2-ti2v")
    model = wan_ti2v()
    x0, image = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 4, 1, 8, 8)
    t = torch.tensor([300.0, 700.0])
    c = Conditioning(text(2), image)
    noisy = adapter.add_noise(x0, torch.randn_like(x0), t)
    pred = adapter.predict(model, noisy, t, c)
    pred.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        # independent construction: first latent frame = the image, its 16 tokens at timestep 0
        hidden = torch.cat([image, noisy[:, :, 1:]], dim=2)
        steps = torch.cat([torch.zeros(2, 16), t.view(2, 1).expand(2, 32)], dim=1)
        direct = model(
            hidden_states=hidden, timestep=steps, encoder_hidden_states=text(2), return_dict=False
        )[0]
        torch.testing.assert_close(pred.detach(), direct)
        changed = noisy.clone()
        changed[:, :, 0] += 5  # whatever x_t's first frame was, it is replaced by the image
        torch.testing.assert_close(adapter.predict(model, changed, t, c), pred.detach())
    mask = adapter.loss_mask(x0, c)
    assert torch.equal(mask.expand_as(x0)[:, :, 0], torch.zeros_like(x0[:, :, 0]))
    assert torch.equal(mask.expand_as(x0)[:, :, 1:], torch.ones_like(x0[:, :, 1:]))


def test_bad_inputs():
    adapter = get_adapter("wan2.2-ti2v")
    model = wan_ti2v()
    x, t = torch.randn(2, 4, 3, 8, 8), torch.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match="latent channels"):  # a [B, F, C, H, W] (CogVideoX-layout) batch
        adapter.predict(model, x.transpose(1, 2).contiguous(), t, cond(2))
    with pytest.raises(ValueError, match="image_latents"):
        adapter.predict(model, x, t, cond(2, torch.randn(2, 1, 4, 8, 8)))
    with pytest.raises(ValueError, match="text_embeds"):
        adapter.predict(model, x, t, Conditioning(torch.randn(2, 6)))
    with pytest.raises(ValueError, match=r"timesteps.*\[0, 1000\)"):
        adapter.add_noise(x, x, torch.tensor([-1.0, 5.0]))
    with pytest.raises(ValueError, match="not divisible"):
        adapter.predict(model, torch.randn(2, 4, 3, 7, 8), t, cond(2))
    inf = x.clone()
    inf[1, 1, 1, 1, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        adapter.predict(model, inf, t, cond(2))
