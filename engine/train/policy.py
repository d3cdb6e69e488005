"""The policy under training: the family's adapter, its transformer made trainable (LoRA or full fine-tuning,
activation checkpointing), the optimizer, and the DeepSpeed engines (plus the frozen `separate` reference)."""

from __future__ import annotations

from pathlib import Path

import torch

from videogpa.engine.core.config import Config
from videogpa.engine.models import get_adapter
from videogpa.engine.models.base import ModelAdapter
from videogpa.engine.models.lora import apply_lora, enable_full_finetuning, enable_gradient_checkpointing
from videogpa.engine.runtime import distributed as D
from videogpa.engine.runtime.attention import apply_attention_backend
from videogpa.engine.runtime.compiling import compile_blocks
from videogpa.engine.runtime.partitioned_loading import load_transformer
from videogpa.engine.runtime.sequence_parallel import enable_sequence_parallel
from videogpa.engine.train.optim import build_optimizer
from videogpa.engine.train.reference import needs_frozen_model


def model_adapter(cfg: Config) -> ModelAdapter:
    """The family adapter of model.name, for model.path (a ValueError naming a missing folder)."""
    path = cfg.model.path
    if path is not None and not Path(path).is_dir():
        raise ValueError(
            f"config key 'model.path': checkpoint folder {path!r} does not exist (set it to a local "
            f"diffusers folder for model {cfg.model.name!r})"
        )
    return get_adapter(cfg.model.name, path=path)


def build_policy(cfg: Config, adapter: ModelAdapter, dtype: torch.dtype, world: int):
    """(the policy's DeepSpeed engine, the frozen reference's inference engine or None)."""
    import deepspeed

    ds_config = D.deepspeed_config(cfg, world)
    model = load_transformer(adapter, cfg.model.path, dtype, ds_config)  # partitioned under ZeRO-3
    frozen = frozen_reference(cfg, adapter, dtype, world)
    if cfg.lora.enabled:
        targets = cfg.lora.targets or list(adapter.default_lora_targets)
        model = apply_lora(model, cfg.lora.rank, cfg.lora.alpha, targets, cfg.lora.dropout, cfg.lora.experts)
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
    modules = [m for m in (model, frozen) if m is not None]  # the reference runs like the policy
    if D.sequence_parallel_size() > 1:
        for module in modules:
            enable_sequence_parallel(
                module,
                adapter,
                D.sequence_group(),
                D.sequence_parallel_size(),
                D.rank() % D.sequence_parallel_size(),
            )
    for module in modules:
        apply_attention_backend(module, adapter, cfg.model.attention_backend, D.device())
        if cfg.model.compile is not None:  # after the hooks above, so the compiled blocks include them
            compile_blocks(module, adapter, cfg.model.compile, "model.compile")
    optimizer, scheduler = build_optimizer(
        model, cfg.optim, cfg.train.max_steps, cfg.distributed.offload_optimizer
    )
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
    )
    if frozen is not None:
        frozen = deepspeed.initialize(
            model=frozen, config=D.inference_config(cfg, world, cfg.dpo.reference_offload)
        )[0]
        frozen.eval()  # DeepSpeedEngine.eval() returns None: keep the engine, not eval()'s result
    return engine, frozen


def frozen_reference(cfg: Config, adapter: ModelAdapter, dtype: torch.dtype, world: int):
    """The `separate` reference's transformer (None for other strategies), frozen: a second load of the
    checkpoint, partitioned for its ZeRO-3 inference engine (no rank holds it whole), never a copy."""
    if not needs_frozen_model(cfg):
        return None
    ds_config = D.inference_config(cfg, world, cfg.dpo.reference_offload)
    return load_transformer(adapter, cfg.model.path, dtype, ds_config).requires_grad_(False).eval()
