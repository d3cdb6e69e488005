"""Making the transformer trainable: LoRA through peft (diffusers' PEFT integration), full fine-tuning,
activation checkpointing, the adapters-off context for the DPO reference, and the LoRA export.

The export is `pytorch_lora_weights.safetensors` in the diffusers pipelines' format: keys
`transformer.<module path>.lora_A.weight` / `.lora_B.weight`, and the LoRA config in the safetensors
metadata under `lora_adapter_metadata` (keys prefixed `transformer.`). These calls restore rank and alpha
exactly (scale alpha/r; checked with diffusers 0.42.1 in tests/reliability/test_lora_scaling.py):

    pipe.load_lora_weights(folder)  or  pipe.load_lora_weights(file)
    transformer.load_lora_adapter(folder, weight_name="pytorch_lora_weights.safetensors",
                                  prefix="transformer")

Two-expert models (Wan 2.2 A14B, engine.models.wan22_a14b) export one file per expert, both with keys
`transformer.<module path>...`: pytorch_lora_weights.safetensors for `transformer` and
pytorch_lora_weights_transformer_2.safetensors for `transformer_2`, loaded with

    pipe.load_lora_weights(folder, weight_name="pytorch_lora_weights_transformer_2.safetensors",
                           load_into_transformer_2=True)

Not `transformer.load_lora_adapter(file, ...)`: with a file path diffusers 0.42.1 skips the metadata and
loads alpha = r without a warning (half strength for r=64, alpha=128); and without weight_name it looks for
a pickled .bin. In this project engine.models.pipelines.attach_lora is the loader (safetensors only).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file
from torch import nn
from torch.utils.checkpoint import checkpoint

from videogpa.engine.io.atomic import atomic_path
from videogpa.engine.models.common import base_module

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
LORA_PREFIX = "transformer"  # the pipeline component the LoRA belongs to
ADAPTER_NAME = "default"
METADATA_KEY = "lora_adapter_metadata"


def lora_weight_name(component: str) -> str:
    """The LoRA file of a pipeline component: pytorch_lora_weights[_<component>].safetensors."""
    return (
        LORA_WEIGHT_NAME if component == LORA_PREFIX else LORA_WEIGHT_NAME.replace(".", f"_{component}.", 1)
    )


def trained_lora_file(folder: str | Path) -> Path:
    """A run folder's LoRA file: the first component's that exists (transformer, else transformer_2 of a
    two-expert run trained with lora.experts: [transformer_2]); the transformer's path when none exists
    yet."""
    files = [Path(folder) / lora_weight_name(c) for c in (LORA_PREFIX, "transformer_2")]
    return next((f for f in files if f.is_file()), files[0])


def model_components(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(pipeline component name, diffusers model) of a trained model: [("transformer", it)], or each expert
    of a two-expert container (one that defines `components()`)."""
    base = base_module(model)
    return base.components() if hasattr(base, "components") else [(LORA_PREFIX, base)]


def _lora_layers(model: nn.Module) -> list[BaseTunerLayer]:
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def lora_scalings(model: nn.Module) -> set[float]:
    """The distinct scales (alpha / r) of a model's LoRA layers, from peft's `scaling` dicts: one value for a
    model loaded at its trained strength."""
    return {scale for layer in _lora_layers(model) for scale in layer.scaling.values()}


def apply_lora(
    model: nn.Module,
    rank: int,
    alpha: float,
    targets: Sequence[str],
    dropout: float = 0.0,
    components: Sequence[str] | None = None,
) -> nn.Module:
    """Add a LoRA adapter (rank r, scale alpha/r) to every module whose name ends with one of `targets`
    (only inside the given pipeline components of a two-expert model, if `components`); freezes everything
    else. Returns the same model (modified in place); only LoRA weights require grad."""
    if not (isinstance(rank, int) and rank > 0):
        raise ValueError(f"lora rank: expected a positive integer, got {rank!r}")
    if not alpha > 0:
        raise ValueError(f"lora alpha: expected a positive number, got {alpha!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"lora dropout: expected a value in [0, 1), got {dropout!r}")
    if not targets or any(not isinstance(t, str) or not t for t in targets):
        raise ValueError(f"lora targets: expected a non-empty list of module-name suffixes, got {targets!r}")
    base = base_module(model)
    names = [name for name, _ in base.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ValueError(f"lora targets {missing} match no module of {type(base).__name__}")
    if _lora_layers(base):
        raise ValueError(f"{type(base).__name__} already has LoRA adapters")
    parts = dict(model_components(base))  # one transformer, or each expert (each gets its own peft config)
    if components is not None and (not components or set(components) - set(parts)):
        raise ValueError(f"lora components {list(components)}: expected some of {list(parts)}")
    base.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=dropout)
    for component, part in parts.items():
        if components is None or component in components:
            part.add_adapter(config, adapter_name=ADAPTER_NAME)
    for name, param in base.named_parameters():
        param.requires_grad_("lora_" in name)
    return model


def enable_full_finetuning(model: nn.Module) -> nn.Module:
    """Full fine-tuning: every parameter is trainable (no LoRA). Returns the same model."""
    if _lora_layers(model):
        raise ValueError("full fine-tuning: the model has LoRA adapters (use LoRA or a fresh model)")
    return model.requires_grad_(True)


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every parameter that requires grad: LoRA weights, or everything in full FT."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def _non_reentrant_checkpoint(module: nn.Module, *args):
    return checkpoint(module.__call__, *args, use_reentrant=False)


def enable_gradient_checkpointing(model: nn.Module, blocks: Sequence[nn.Module] | None = None) -> nn.Module:
    """Activation checkpointing of the transformer's blocks with torch's non-reentrant checkpoint, so
    parameters get gradients even when a block's inputs do not require grad: every block, or only `blocks`
    (selective checkpointing: the others keep their activations, trading memory for recompute). Returns the
    same model."""
    if blocks is None:
        func = _non_reentrant_checkpoint
    else:
        chosen = {id(b) for b in blocks}

        def func(module: nn.Module, *args):
            return _non_reentrant_checkpoint(module, *args) if id(module) in chosen else module(*args)

    base_module(model).enable_gradient_checkpointing(gradient_checkpointing_func=func)
    return model


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Inside, the model computes as its base (LoRA off); on exit adapters and requires_grad flags are
    restored exactly. For the trainer's adapters_off reference."""
    layers = _lora_layers(model)
    if not layers:
        raise ValueError(f"adapters_disabled: {type(model).__name__} has no LoRA adapters")
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_enabled = [not layer.disable_adapters for layer in layers]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield model
    finally:
        for layer, enabled in zip(layers, was_enabled):
            layer.enable_adapters(enabled)
        for p, flag in flags:
            p.requires_grad_(flag)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA weights in diffusers pipeline naming (`transformer.<path>.lora_A.weight`), on the CPU."""
    base = base_module(model)
    if not _lora_layers(base):
        raise ValueError(f"{type(base).__name__} has no LoRA adapters to export")
    state = get_peft_model_state_dict(base, adapter_name=ADAPTER_NAME)
    return {f"{LORA_PREFIX}.{k}": v.detach().cpu().contiguous() for k, v in state.items()}


def lora_metadata(model: nn.Module) -> dict[str, str]:
    """safetensors metadata carrying the LoRA config (rank, alpha, targets) the diffusers loaders read."""
    config = base_module(model).peft_config[ADAPTER_NAME].to_dict()
    config = {f"{LORA_PREFIX}.{k}": sorted(v) if isinstance(v, set) else v for k, v in config.items()}
    return {"format": "pt", METADATA_KEY: json.dumps(config, indent=2, sort_keys=True, default=str)}


def save_lora_weights(model: nn.Module, out_dir: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write out_dir/pytorch_lora_weights.safetensors atomically (and, for a two-expert model, each further
    expert's file: lora_weight_name); returns the first."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for component, part in model_components(model):
        if not _lora_layers(part):  # an expert trained without LoRA (lora.experts)
            continue
        state = lora_state_dict(part)
        if dtype is not None:
            state = {k: v.to(dtype) for k, v in state.items()}
        paths.append(out / lora_weight_name(component))
        with atomic_path(paths[-1]) as tmp:
            save_file(state, str(tmp), metadata=lora_metadata(part))
    if not paths:
        raise ValueError(f"{type(base_module(model)).__name__} has no LoRA adapters to export")
    return paths[0]


def export_trained_weights(module: nn.Module, out_dir: str | Path, lora: bool) -> None:
    """Collective: the final weights, gathered from ZeRO-3 — the LoRA in diffusers format, or (full
    fine-tuning) the whole transformer as a diffusers folder out_dir/transformer (and out_dir/transformer_2
    for a two-expert model); rank 0 writes."""
    import deepspeed
    import torch.distributed as dist

    main = not dist.is_initialized() or dist.get_rank() == 0
    params = [p for p in module.parameters() if p.requires_grad or not lora]
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        bad = [
            n
            for n, p in module.named_parameters()
            if (p.requires_grad or not lora) and not torch.isfinite(p).all()
        ]
        if bad:
            raise FloatingPointError(f"not exporting non-finite weights ({len(bad)} tensors, e.g. {bad[0]})")
        if main:
            if lora:
                save_lora_weights(module, out_dir)
            else:
                for component, part in model_components(module):
                    part.save_pretrained(Path(out_dir) / component)
    if dist.is_initialized():
        dist.barrier()
