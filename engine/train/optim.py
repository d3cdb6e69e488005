"""The optimizer and its learning-rate schedule: AdamW with linear warm-up, then cosine decay (or
constant)."""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from videogpa.engine.core.config import OptimConfig


def lr_lambda(step: int, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to min_ratio (or constant)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, optim: OptimConfig, total_steps: int, cpu_offload: bool = False):
    """AdamW over the trainable parameters (torch's; DeepSpeed's CPU Adam when the optimizer state is
    offloaded to the CPU, where DeepSpeed requires it) and its warm-up + cosine LambdaLR."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (check lora.targets)")
    kwargs = dict(lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps, weight_decay=optim.weight_decay)
    if cpu_offload:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        opt = DeepSpeedCPUAdam(params, adamw_mode=True, **kwargs)
    else:
        opt = torch.optim.AdamW(params, **kwargs)
    schedule = functools.partial(
        lr_lambda,
        warmup=optim.warmup_steps,
        total=total_steps,
        schedule=optim.schedule,
        min_ratio=optim.min_lr_ratio,
    )
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)
