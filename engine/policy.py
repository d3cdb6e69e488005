"""The policy under training: the family's adapter, its transformer made trainable (LoRA or full fine-tuning,
activation checkpointing), the optimizer, and the DeepSpeed engines (plus the frozen `separate` reference)."""

from __future__ import annotations

from pathlib import Path

import torch

from videogpa.engine import distributed as D
from videogpa.engine.config import Config
from videogpa.engine.models import get_adapter
from videogpa.engine.models.base import ModelAdapter
from videogpa.engine.models.lora import apply_lora, enable_full_finetuning, enable_gradient_checkpointing
from videogpa.engine.optim import build_optimizer
from videogpa.engine.partitioned_loading import load_transformer


def model_adapter(cfg: Config) -> ModelAdapter:
    """The family adapter of model.name, for model.path (a ValueError naming a missing folder)."""
    path = cfg.model.path
    if path is not None and not Path(path).is_dir():
        raise ValueError(f"config key 'model.path': checkpoint folder {path!r} does not exist (set it to a local "
                         f"diffusers folder for model {cfg.model.name!r})")  # fmt: skip
    return get_adapter(cfg.model.name, path=path)


def select_sdpa_kernel(backend: str, device: torch.device) -> None:
    """Limit PyTorch SDPA to one kernel for this process (model.attention_backend: cudnn, flash, efficient,
    math; auto leaves PyTorch's choice). Process-wide, so forward, backward and checkpoint recompute agree."""
    kernels = {"cudnn": "cudnn", "flash": "flash", "efficient": "mem_efficient", "math": "math"}
    if backend == "auto":  # every kernel allowed, PyTorch picks (also undoes an earlier choice)
        for name in kernels.values():
            getattr(torch.backends.cuda, f"enable_{name}_sdp")(True)
        return
    if backend in ("cudnn", "efficient") and device.type != "cuda":
        raise ValueError(
            f"config key 'model.attention_backend': SDPA's {backend} kernel needs a CUDA device, not {device}"
        )
    for name in kernels.values():
        getattr(torch.backends.cuda, f"enable_{name}_sdp")(name == kernels[backend])


def set_diffusers_attention(model: torch.nn.Module, adapter: ModelAdapter, name: str) -> None:
    """A diffusers attention backend (flash-attn, sage, ...) on every attention of the model; a ValueError when
    the family's attention does not dispatch through diffusers or the backend's package is missing."""
    if not adapter.dispatches_attention:
        raise ValueError(f"config key 'model.attention_backend': model {adapter.name!r} calls PyTorch SDPA directly; "
                         "choose one of auto, cudnn, flash, efficient, math")  # fmt: skip
    from videogpa.engine.models.common import base_module

    try:
        base_module(model).set_attention_backend(name)
    except (ImportError, RuntimeError, ValueError) as err:
        raise ValueError(
            f"config key 'model.attention_backend': diffusers backend {name!r} is unavailable ({err})"
        ) from None


def build_policy(cfg: Config, adapter: ModelAdapter, dtype: torch.dtype, world: int):
    """(the policy's DeepSpeed engine, the frozen reference's inference engine or None)."""
    import deepspeed

    ds_config = D.deepspeed_config(cfg, world)
    model = load_transformer(adapter, cfg.model.path, dtype, ds_config)  # partitioned under ZeRO-3
    if cfg.lora.enabled:
        targets = cfg.lora.targets or list(adapter.default_lora_targets)
        model = apply_lora(model, cfg.lora.rank, cfg.lora.alpha, targets, cfg.lora.dropout)
    else:
        model = enable_full_finetuning(model)
    if cfg.model.gradient_checkpointing:
        blocks = adapter.transformer_blocks(model)
        chosen = (
            None
            if cfg.model.checkpoint_fraction == 1
            else blocks[: round(cfg.model.checkpoint_fraction * len(blocks))]
        )
        enable_gradient_checkpointing(model, chosen)
    backend = cfg.model.attention_backend
    if backend.startswith("diffusers:"):
        set_diffusers_attention(model, adapter, backend.removeprefix("diffusers:"))
    else:
        select_sdpa_kernel(backend, D.device())
    optimizer, scheduler = build_optimizer(
        model, cfg.optim, cfg.train.max_steps, cfg.distributed.offload_optimizer
    )
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                      config=ds_config)  # fmt: skip
    return engine, frozen_reference(cfg, adapter, dtype, world)


def frozen_reference(cfg: Config, adapter: ModelAdapter, dtype: torch.dtype, world: int):
    """The `separate` reference (None for other strategies): a ZeRO-3 inference engine over a second load of
    the checkpoint (partitioned: no rank holds it whole), frozen."""
    import deepspeed

    if cfg.dpo.reference != "separate":
        return None
    ds_config = D.inference_config(cfg, world, cfg.dpo.reference_offload)
    model = load_transformer(adapter, cfg.model.path, dtype, ds_config).requires_grad_(False).eval()
    frozen = deepspeed.initialize(model=model, config=ds_config)[0]
    frozen.eval()  # DeepSpeedEngine.eval() returns None: keep the engine, not eval()'s result
    return frozen
