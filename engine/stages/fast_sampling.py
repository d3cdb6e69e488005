"""Fast sampling: the generation config's speed options on a loaded pipeline, each off or neutral by default
(engine.config.GenerationConfig): the attention kernel (engine.attention), regional torch.compile of the
transformer's repeated blocks (short compile times: one block's graph is reused by every block), VAE tiling /
slicing, diffusers' model CPU offload, and an opt-in step cache (diffusers' first-block cache), which changes
the sampled videos and so is recorded in every manifest row (step_cache_record)."""

from __future__ import annotations

import torch

from videogpa.engine.core.config import GenerationConfig
from videogpa.engine.models import ModelAdapter
from videogpa.engine.models.common import base_module
from videogpa.engine.runtime.attention import apply_attention_backend
from videogpa.engine.runtime.compiling import compile_blocks

KEY = "loop.generation"  # the config section named in errors


def step_cache_record(cfg: GenerationConfig) -> dict | None:
    """What a manifest row records of the step cache (None: no cache, the plain sampler)."""
    return None if cfg.step_cache is None else {"kind": cfg.step_cache, "threshold": cfg.step_cache_threshold}


def enable_step_cache(transformer: torch.nn.Module, cfg: GenerationConfig) -> None:
    """diffusers' first-block cache on the transformer (a clear error where diffusers or the model lacks
    it)."""
    try:
        from diffusers import FirstBlockCacheConfig
    except ImportError:
        raise ValueError(
            f"config key '{KEY}.step_cache': the installed diffusers has no FirstBlockCacheConfig"
        ) from None
    model = base_module(transformer)
    if not hasattr(model, "enable_cache"):
        raise ValueError(
            f"config key '{KEY}.step_cache': {type(model).__name__} has no diffusers cache hooks "
            "(enable_cache)"
        )
    model.enable_cache(FirstBlockCacheConfig(threshold=cfg.step_cache_threshold))


def _vae(pipe, method: str, key: str) -> None:
    vae = getattr(pipe, "vae", None)
    if vae is None or not hasattr(vae, method):
        raise ValueError(f"config key '{KEY}.{key}': the pipeline's VAE {type(vae).__name__} has no {method}")
    getattr(vae, method)()


def apply_sampling_options(pipe, adapter: ModelAdapter, cfg: GenerationConfig, device: str) -> None:
    """The config's speed options on `pipe` (loaded on `device`, its LoRA already attached)."""
    apply_attention_backend(
        pipe.transformer, adapter, cfg.attention_backend, torch.device(device), key=f"{KEY}.attention_backend"
    )
    if cfg.vae_tiling:
        _vae(pipe, "enable_tiling", "vae_tiling")
    if cfg.vae_slicing:
        _vae(pipe, "enable_slicing", "vae_slicing")
    if cfg.step_cache is not None:
        enable_step_cache(pipe.transformer, cfg)
    if cfg.compile is not None:
        compile_blocks(pipe.transformer, adapter, cfg.compile, f"{KEY}.compile")
    if cfg.cpu_offload:
        if not str(device).startswith("cuda"):
            raise ValueError(
                f"config key '{KEY}.cpu_offload': model CPU offload needs a CUDA device, not {device}"
            )
        pipe.enable_model_cpu_offload(device=device)
