"""LoRA: trainable parameters, adapters-off equals the base model, checkpointing gradients, diffusers
export."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import CogVideoXPipeline, WanPipeline
from safetensors import safe_open

from tests.models.model_builders import cond, wan_ti2v
from videogpa.engine.models import TINY, get_adapter
from videogpa.engine.models.lora import (
    LORA_WEIGHT_NAME,
    adapters_disabled,
    apply_lora,
    enable_full_finetuning,
    enable_gradient_checkpointing,
    lora_scalings,
    save_lora_weights,
    trainable_parameters,
)
from videogpa.engine.types import Conditioning

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def _perturb_lora(model, seed=4):
    """LoRA B starts at zero (adapter = identity); give it weights as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def _tiny_batch(batch=2):
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(batch, *TINY.latent_shape, generator=gen)
    return (
        x,
        torch.tensor([20, 800][:batch]),
        Conditioning(torch.randn(batch, *TINY.text_shape, generator=gen)),
    )


def _tiny_lora(rank=4, alpha=8.0):
    adapter = get_adapter("tiny")
    model = apply_lora(
        adapter.load_transformer(None, torch.float32), rank, alpha, adapter.default_lora_targets
    )
    return adapter, model


def test_only_lora_parameters_trainable():
    adapter, model = _tiny_lora()
    trainable = trainable_parameters(model)
    layers = [n for n, _ in model.named_modules() if any(n.endswith("." + t) for t in TARGETS)]
    assert len(layers) == 2 * 4  # 2 blocks × q, k, v, out
    assert len(trainable) == 2 * len(layers)  # A and B per layer
    assert all("lora_A" in n or "lora_B" in n for n, _ in trainable)
    assert {p.shape[0] for n, p in trainable if "lora_A" in n} == {4}
    x, t, c = _tiny_batch()
    base = adapter.load_transformer(None, torch.float32)
    with torch.no_grad():  # fresh LoRA (B = 0) leaves the model unchanged
        torch.testing.assert_close(adapter.predict(model, x, t, c), adapter.predict(base, x, t, c))


def test_apply_lora_bad_arguments():
    adapter = get_adapter("tiny")
    build = lambda: adapter.load_transformer(None, torch.float32)
    with pytest.raises(ValueError, match="match no module"):
        apply_lora(build(), 4, 8, ["to_qq"])
    with pytest.raises(ValueError, match="rank"):
        apply_lora(build(), 0, 8, TARGETS)
    with pytest.raises(ValueError, match="alpha"):
        apply_lora(build(), 4, 0, TARGETS)
    with pytest.raises(ValueError, match="dropout"):
        apply_lora(build(), 4, 8, TARGETS, dropout=1.0)
    with pytest.raises(ValueError, match="targets"):
        apply_lora(build(), 4, 8, [])
    model = apply_lora(build(), 4, 8, TARGETS)
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model, 4, 8, TARGETS)
    with pytest.raises(ValueError, match="has LoRA adapters"):
        enable_full_finetuning(model)
    with pytest.raises(ValueError, match="no LoRA adapters"):
        with adapters_disabled(build()):
            pass


def test_full_finetuning_makes_everything_trainable():
    model = get_adapter("tiny").load_transformer(None, torch.float32).requires_grad_(False)
    enable_full_finetuning(model)
    assert len(trainable_parameters(model)) == len(list(model.parameters()))


def test_adapters_disabled_equals_base_model():
    adapter, model = _tiny_lora()
    _perturb_lora(model)
    base = adapter.load_transformer(None, torch.float32)
    x, t, c = _tiny_batch()
    flags = [p.requires_grad for p in model.parameters()]
    with torch.no_grad():
        lora_out = adapter.predict(model, x, t, c)
        with adapters_disabled(model):
            off = adapter.predict(model, x, t, c)
        again = adapter.predict(model, x, t, c)
        base_out = adapter.predict(base, x, t, c)
    torch.testing.assert_close(off, base_out)
    assert not torch.allclose(lora_out, base_out)
    torch.testing.assert_close(again, lora_out)  # adapters back on after the block
    assert [p.requires_grad for p in model.parameters()] == flags


def test_adapters_restored_after_exception():
    adapter, model = _tiny_lora()
    _perturb_lora(model)
    x, t, c = _tiny_batch()
    with torch.no_grad():
        before = adapter.predict(model, x, t, c)
    with pytest.raises(RuntimeError, match="boom"):
        with adapters_disabled(model):
            raise RuntimeError("boom")
    with torch.no_grad():
        torch.testing.assert_close(adapter.predict(model, x, t, c), before)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family", ["tiny", "wan2.2-ti2v"])
def test_checkpointing_with_lora_gives_every_trainable_parameter_a_gradient(family):
    adapter = get_adapter(family)
    if family == "tiny":
        build = lambda: adapter.load_transformer(None, torch.float32)
        x, t, c = _tiny_batch()
    else:
        build = lambda: wan_ti2v().requires_grad_(True)
        torch.manual_seed(0)
        x, t, c = (
            torch.randn(2, 4, 3, 8, 8),
            torch.tensor([100.0, 900.0]),
            cond(2, torch.randn(2, 4, 1, 8, 8)),
        )
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = apply_lora(build(), 4, 8, adapter.default_lora_targets)
        _perturb_lora(model)
        if checkpointing:
            enable_gradient_checkpointing(model)
            assert model.gradient_checkpointing
        # the inputs do not require grad: a re-entrant checkpoint would silently drop the LoRA gradients
        pred = adapter.predict(model, x, t, c)
        pred.square().mean().backward()
        grads = _grads(model)
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
        results.append(grads)
    for name, g in results[0].items():
        torch.testing.assert_close(results[1][name], g, rtol=1e-4, atol=1e-6)


def test_export_loads_into_diffusers(tmp_path):
    adapter, model = _tiny_lora(rank=4, alpha=16.0)  # alpha ≠ rank: the scale must survive the round trip
    _perturb_lora(model)
    path = save_lora_weights(model, tmp_path)
    assert path == tmp_path / LORA_WEIGHT_NAME and path.is_file()
    assert not list(tmp_path.glob("*.tmp"))
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        meta = json.loads(f.metadata()["lora_adapter_metadata"])
    assert keys and all(k.startswith("transformer.transformer_blocks.") for k in keys)
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys)
    assert meta["transformer.r"] == 4 and meta["transformer.lora_alpha"] == 16.0
    x, t, c = _tiny_batch()
    with torch.no_grad():
        trained = adapter.predict(model, x, t, c)
        base = adapter.load_transformer(None, torch.float32)
        base_out = adapter.predict(base, x, t, c)
        # the pipelines' loader path (what CogVideoXPipeline.load_lora_weights does)
        state, metadata = CogVideoXPipeline.lora_state_dict(str(tmp_path), return_lora_metadata=True)
        via_pipeline = adapter.load_transformer(None, torch.float32)
        CogVideoXPipeline.load_lora_into_transformer(state, transformer=via_pipeline, metadata=metadata)
        # and the transformer's own loader
        via_model = adapter.load_transformer(None, torch.float32)
        via_model.load_lora_adapter(str(tmp_path), weight_name=LORA_WEIGHT_NAME, prefix="transformer")
        assert lora_scalings(model) == {16.0 / 4}
        for loaded in (via_pipeline, via_model):
            assert lora_scalings(loaded) == {16.0 / 4}  # alpha / r, not 1 (alpha = r)
            out = adapter.predict(loaded, x, t, c)
            torch.testing.assert_close(out, trained)
            assert not torch.allclose(out, base_out)


def test_export_wan_loads_into_wan_pipeline_loader(tmp_path):
    adapter = get_adapter("wan2.2-ti2v")
    torch.manual_seed(0)
    model = apply_lora(wan_ti2v(), 2, 4.0, adapter.default_lora_targets)
    _perturb_lora(model)
    save_lora_weights(model, tmp_path)
    x, t = torch.randn(1, 4, 3, 8, 8), torch.tensor([400.0])
    with torch.no_grad():
        trained = adapter.predict(model, x, t, cond(1))
        torch.manual_seed(0)
        fresh = wan_ti2v()
        state, metadata = WanPipeline.lora_state_dict(str(tmp_path), return_lora_metadata=True)
        WanPipeline.load_lora_into_transformer(state, transformer=fresh, metadata=metadata)
        assert lora_scalings(fresh) == {4.0 / 2}
        torch.testing.assert_close(adapter.predict(fresh, x, t, cond(1)), trained)


def test_export_bf16_and_errors(tmp_path):
    _, model = _tiny_lora()
    path = save_lora_weights(model, tmp_path, dtype=torch.bfloat16)
    with safe_open(str(path), "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.bfloat16 for k in f.keys())
    plain = get_adapter("tiny").load_transformer(None, torch.float32)
    with pytest.raises(ValueError, match="no LoRA adapters to export"):
        save_lora_weights(plain, tmp_path / "plain")
