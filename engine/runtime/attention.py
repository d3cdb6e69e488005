"""The attention kernel of a model, for training (model.attention_backend) and sampling
(loop.generation.attention_backend): PyTorch SDPA limited to one kernel, or a diffusers attention backend
("diffusers:<name>", e.g. diffusers:flash for flash-attn) where the family dispatches through diffusers."""

from __future__ import annotations

import torch

from videogpa.engine.models.base import ModelAdapter

DIFFUSERS_PREFIX = "diffusers:"


def select_sdpa_kernel(backend: str, device: torch.device, key: str = "model.attention_backend") -> None:
    """Limit PyTorch SDPA to one kernel for this process (cudnn, flash, efficient, math; auto leaves PyTorch's
    choice). Process-wide, so forward, backward and checkpoint recompute agree. `key`: the config key named
    in errors."""
    kernels = {"cudnn": "cudnn", "flash": "flash", "efficient": "mem_efficient", "math": "math"}
    if backend == "auto":  # every kernel allowed, PyTorch picks (also undoes an earlier choice)
        for name in kernels.values():
            getattr(torch.backends.cuda, f"enable_{name}_sdp")(True)
        return
    if backend not in kernels:
        raise ValueError(
            f"config key {key!r}: expected auto, {', '.join(kernels)} or diffusers:<backend>, got {backend!r}"
        )
    if backend in ("cudnn", "efficient") and device.type != "cuda":
        raise ValueError(f"config key {key!r}: SDPA's {backend} kernel needs a CUDA device, not {device}")
    for name in kernels.values():
        getattr(torch.backends.cuda, f"enable_{name}_sdp")(name == kernels[backend])


def set_diffusers_attention(
    model: torch.nn.Module, adapter: ModelAdapter, name: str, key: str = "model.attention_backend"
) -> None:
    """A diffusers attention backend (flash-attn, sage, ...) on every attention of the model; a ValueError
    when the family's attention does not dispatch through diffusers or the backend's package is missing."""
    if not adapter.dispatches_attention:
        raise ValueError(
            f"config key {key!r}: model {adapter.name!r} calls PyTorch SDPA directly; "
            "choose one of auto, cudnn, flash, efficient, math"
        )
    from videogpa.engine.models.common import base_module

    try:
        base_module(model).set_attention_backend(name)
    except (ImportError, RuntimeError, ValueError) as err:
        raise ValueError(f"config key {key!r}: diffusers backend {name!r} is unavailable ({err})") from None


def apply_attention_backend(
    model: torch.nn.Module,
    adapter: ModelAdapter,
    backend: str,
    device: torch.device,
    key: str = "model.attention_backend",
) -> None:
    """`backend` ("diffusers:<name>" or an SDPA kernel) for `model` on `device`."""
    if backend.startswith(DIFFUSERS_PREFIX):
        set_diffusers_attention(model, adapter, backend.removeprefix(DIFFUSERS_PREFIX), key)
    else:
        select_sdpa_kernel(backend, device, key)
