"""The registry, the built-in tiny model, and offline loading from local diffusers folders."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel

from tests.models.model_builders import cond, wan_ti2v
from videogpa.engine.models import TINY, adapter_names, get_adapter, register_adapter
from videogpa.engine.models.cogvideox import CogVideoXAdapter
from videogpa.engine.models.tiny import TinyAdapter, build_tiny_transformer
from videogpa.engine.types import Conditioning


def test_registry():
    assert {"tiny", "cogvideox-t2v", "cogvideox-i2v", "wan2.2-ti2v"} <= set(adapter_names())
    assert isinstance(get_adapter("tiny"), TinyAdapter)
    for name in adapter_names():
        adapter = get_adapter(name)
        assert adapter.name == name and adapter.latent_layout in ("BFCHW", "BCFHW")
        assert adapter.default_lora_targets
    with pytest.raises(ValueError, match="unknown model 'sora'.*expected one of"):
        get_adapter("sora")
    with pytest.raises(ValueError, match="registered twice"):
        register_adapter(type("Again", (CogVideoXAdapter,), {"name": "tiny"}))
    assert isinstance(get_adapter("tiny"), TinyAdapter)  # the failed registration changed nothing


def _tiny_inputs(batch=2):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(batch, *TINY.latent_shape, generator=gen)
    return x, Conditioning(torch.randn(batch, *TINY.text_shape, generator=gen))


def test_tiny_is_deterministic_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b = build_tiny_transformer(), build_tiny_transformer()
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert isinstance(a, CogVideoXTransformer3DModel)
    assert sum(p.numel() for p in a.parameters()) < 200_000


def test_tiny_forward_backward_on_its_spec_shapes():
    adapter = get_adapter("tiny")
    model = adapter.load_transformer(None, torch.float32)
    assert model.config.in_channels == TINY.latent_shape[1]
    assert model.config.text_embed_dim == TINY.text_shape[1]
    x, c = _tiny_inputs()
    t = adapter.sample_timesteps(2, torch.Generator().manual_seed(0), torch.device("cpu"))
    pred = adapter.predict(model, adapter.add_noise(x, torch.randn_like(x), t), t, c)
    assert pred.shape == x.shape
    loss = (pred - adapter.target(x, torch.randn_like(x), t)).square().mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)


def test_tiny_bf16():
    adapter = get_adapter("tiny")
    model = adapter.load_transformer(None, torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    x, c = _tiny_inputs()
    pred = adapter.predict(model, x.bfloat16(), torch.tensor([5, 50]), c)
    assert pred.dtype == torch.bfloat16 and torch.isfinite(pred).all()


@pytest.mark.parametrize("subfolder", [True, False])
def test_load_saved_model_round_trip(tmp_path, subfolder):
    adapter = get_adapter("tiny")
    model = adapter.load_transformer(None, torch.float32)
    model.save_pretrained(tmp_path / "transformer" if subfolder else tmp_path)
    loaded = adapter.load_transformer(tmp_path, torch.float32)
    x, c = _tiny_inputs()
    t = torch.tensor([1, 700])
    with torch.no_grad():
        torch.testing.assert_close(adapter.predict(loaded, x, t, c), adapter.predict(model, x, t, c))


def test_load_in_bf16(tmp_path):
    adapter = get_adapter("tiny")
    adapter.load_transformer(None, torch.float32).save_pretrained(tmp_path)
    loaded = adapter.load_transformer(tmp_path, torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}


def test_load_wan_saved_model(tmp_path):
    adapter = get_adapter("wan2.2-ti2v")
    model = wan_ti2v()
    model.save_pretrained(tmp_path / "transformer")
    loaded = adapter.load_transformer(tmp_path, torch.float32)
    x, t = torch.randn(1, 4, 3, 8, 8), torch.tensor([500.0])
    with torch.no_grad():
        torch.testing.assert_close(
            adapter.predict(loaded, x, t, cond(1)), adapter.predict(model, x, t, cond(1))
        )


def test_load_errors(tmp_path):
    adapter = get_adapter("cogvideox-t2v")
    with pytest.raises(ValueError, match="does not exist"):
        adapter.load_transformer(tmp_path / "nowhere", torch.float32)
    with pytest.raises(ValueError, match="has no transformer"):
        adapter.load_transformer(tmp_path, torch.float32)
    with pytest.raises(ValueError, match="local diffusers folder path is required"):
        adapter.load_transformer(None, torch.float32)
    wan = tmp_path / "wan"
    wan_ti2v().save_pretrained(wan)
    with pytest.raises(
        ValueError, match="describes a WanTransformer3DModel, expected a CogVideoXTransformer3DModel"
    ):
        adapter.load_transformer(wan, torch.float32)
    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        adapter.load_transformer(bad_json, torch.float32)


def test_incomplete_or_corrupt_weights(tmp_path):
    adapter = get_adapter("tiny")
    adapter.load_transformer(None, torch.float32).save_pretrained(tmp_path)
    weights = next(tmp_path.glob("*.safetensors"))
    weights.write_bytes(b"\x00" * 16 + weights.read_bytes()[16:200])
    with pytest.raises(
        ValueError, match=f"could not load a CogVideoXTransformer3DModel from {str(tmp_path)!r}"
    ):
        adapter.load_transformer(tmp_path, torch.float32)
    weights.unlink()
    with pytest.raises(ValueError, match="missing or incomplete"):
        adapter.load_transformer(tmp_path, torch.float32)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "CogVideoXTransformer3DModel"


class _EngineLikeWrapper(torch.nn.Module):
    """The attribute layout of a DeepSpeed engine: the model as `.module`, and a `.config` of its own."""

    def __init__(self, module):
        super().__init__()
        self.module, self.config = module, {"train_micro_batch_size_per_gpu": 1}

    def forward(self, **kwargs):
        return self.module(**kwargs)


def test_predict_through_a_wrapper_reads_the_inner_model_config():
    adapter = get_adapter("tiny")
    model = adapter.load_transformer(None, torch.float32)
    x, c = _tiny_inputs()
    t = torch.tensor([3, 30])
    with torch.no_grad():
        torch.testing.assert_close(
            adapter.predict(_EngineLikeWrapper(model), x, t, c), adapter.predict(model, x, t, c)
        )
    with pytest.raises(ValueError, match="expected a diffusers transformer"):
        adapter.predict(torch.nn.Linear(2, 2), x, t, c)
