"""The step's speed knobs: selective activation checkpointing (a fraction of the blocks) and the attention
kernel (PyTorch SDPA's, or a diffusers backend where the family dispatches through diffusers)."""

import pytest
import torch

from tests.models.model_builders import cogvideox_t2v, cond, wan_ti2v
from tests.trainer.trainer_helpers import tiny_config
from videogpa.engine.models import get_adapter
from videogpa.engine.models import lora as lora_module
from videogpa.engine.models.lora import apply_lora, enable_gradient_checkpointing
from videogpa.engine.runtime.attention import select_sdpa_kernel, set_diffusers_attention


def _grads(checkpointed_fraction, monkeypatch):
    """LoRA gradients of one forward/backward of the tiny CogVideoX with that fraction of blocks checkpointed,
    and how many blocks went through the checkpoint."""
    torch.manual_seed(0)  # the same weights for every fraction
    adapter, model = get_adapter("cogvideox-t2v"), cogvideox_t2v()
    apply_lora(model, 4, 8, ["to_q", "to_v"])
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(generator=torch.Generator().manual_seed(1))
    blocks = adapter.transformer_blocks(model)
    enable_gradient_checkpointing(model, blocks[: round(checkpointed_fraction * len(blocks))])
    model.train()
    calls = []
    real = lora_module._non_reentrant_checkpoint
    monkeypatch.setattr(
        lora_module, "_non_reentrant_checkpoint", lambda m, *a: calls.append(m) or real(m, *a)
    )
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 8, 8, generator=gen)
    out = adapter.predict(model, x, torch.tensor([10, 500]), cond(2))
    out.square().mean().backward()
    return (
        {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad},
        len(calls),
        len(blocks),
    )


def test_selective_checkpointing_gives_the_full_gradients(monkeypatch):
    full, calls_full, n_blocks = _grads(1.0, monkeypatch)
    half, calls_half, _ = _grads(0.5, monkeypatch)
    assert n_blocks >= 2 and calls_full == n_blocks and calls_half == round(0.5 * n_blocks)
    assert full.keys() == half.keys() and all(g.abs().sum() > 0 for g in half.values())
    for name in full:
        torch.testing.assert_close(half[name], full[name], rtol=1e-5, atol=1e-7)


def test_sdpa_kernel_choice_and_its_errors():
    adapter, model = get_adapter("cogvideox-t2v"), cogvideox_t2v()
    gen = torch.Generator().manual_seed(0)
    x, c = torch.randn(1, 3, 4, 8, 8, generator=gen), cond(1)
    with torch.no_grad():
        auto = adapter.predict(model, x, torch.tensor([10]), c)
        try:
            select_sdpa_kernel("math", torch.device("cpu"))
            assert not torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
            math = adapter.predict(model, x, torch.tensor([10]), c)
        finally:
            select_sdpa_kernel("auto", torch.device("cpu"))
    assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.cudnn_sdp_enabled()
    torch.testing.assert_close(math, auto, rtol=1e-4, atol=1e-5)  # another kernel: the same attention
    with pytest.raises(ValueError, match="SDPA's cudnn kernel needs a CUDA device"):
        select_sdpa_kernel("cudnn", torch.device("cpu"))


def test_diffusers_backends_only_where_the_family_dispatches():
    model = cogvideox_t2v()
    with pytest.raises(ValueError, match="'cogvideox-t2v' calls PyTorch SDPA directly"):
        set_diffusers_attention(model, get_adapter("cogvideox-t2v"), "flash")
    adapter, wan = get_adapter("wan2.2-ti2v"), wan_ti2v()
    try:
        import flash_attn  # noqa: F401
    except ImportError:  # the usual CPU machine: the package is missing, and the error says so
        with pytest.raises(ValueError, match="diffusers backend 'flash' is unavailable"):
            set_diffusers_attention(wan, adapter, "flash")
    set_diffusers_attention(wan, adapter, "native")  # PyTorch SDPA through diffusers: always there


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("checkpoint_fraction", 0.0, "expected a fraction in"),
        ("attention_backend", "xformerz", "expected one of"),
    ],
)
def test_config_errors(tmp_path, key, value, message):
    with pytest.raises(ValueError, match=f"model.{key}.*{message}|{message}.*"):
        tiny_config(tmp_path, model={"name": "tiny", key: value})


def test_regional_compile_of_the_blocks_trains_like_eager(tmp_path):
    """model.compile: every block compiled in place (ZeRO-3, checkpointing, LoRA), the same losses and
    weights; an unknown backend is named. (aot_eager: the compiler's graph capture without code generation,
    fast on a CPU.)"""
    from safetensors.torch import load_file

    from videogpa.engine.train.run_logs import read_metrics
    from videogpa.engine.train.trainer import Trainer

    train = {"max_steps": 2, "checkpoint_every": 0}
    runs = {}
    for backend in (None, "aot_eager"):
        trainer = Trainer(tiny_config(tmp_path / str(backend), train=train, model={"compile": backend}))
        blocks = get_adapter("tiny").transformer_blocks(trainer.engine.module)
        assert all((b._compiled_call_impl is not None) == (backend is not None) for b in blocks)
        trainer.run()
        runs[backend] = tmp_path / str(backend)
    eager, compiled = (read_metrics(runs[b]) for b in (None, "aot_eager"))
    assert [r["loss"] for r in compiled] == pytest.approx([r["loss"] for r in eager], rel=1e-5)
    weights = [load_file(str(runs[b] / "pytorch_lora_weights.safetensors")) for b in runs]
    for key in weights[0]:
        torch.testing.assert_close(weights[1][key], weights[0][key], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="'model.compile': unknown torch.compile backend 'nope'"):
        Trainer(tiny_config(tmp_path / "bad", model={"compile": "nope"}))
