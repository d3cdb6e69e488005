"""The trained LoRA in other tools' formats, from the diffusers-format file (engine.models.lora) alone.

- `read_lora`: a diffusers-format LoRA file (safetensors only, never unpickled) with its rank and alpha read
  from diffusers' `lora_adapter_metadata`.
- `ComfyUILoraFormat`: how ComfyUI names a family's LoRA; each family's adapter holds its own (a family
  fact: `ModelAdapter.comfyui_lora`), this module only applies it.
- `merge_lora`: the LoRA folded into a base transformer's weights, W ← W + (alpha/r)·B·A.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from videogpa.engine.models.lora import LORA_PREFIX, METADATA_KEY

LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


@dataclass(frozen=True)
class LoraFile:
    """A diffusers-format LoRA: weights `transformer.<module>.lora_A/B.weight`, rank, alpha, metadata."""

    state: dict[str, torch.Tensor]
    rank: int
    alpha: float
    metadata: dict[str, str]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def modules(self) -> list[str]:
        """The transformer module paths the LoRA adapts (without the `transformer.` prefix)."""
        prefix = LORA_PREFIX + "."
        return sorted(
            {k[len(prefix) : -len(LORA_SUFFIXES[0])] for k in self.state if k.endswith(LORA_SUFFIXES[0])}
        )

    def pair(self, module: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(A [r, in], B [out, r]) of one module."""
        key = f"{LORA_PREFIX}.{module}"
        return self.state[key + LORA_SUFFIXES[0]], self.state[key + LORA_SUFFIXES[1]]


def read_lora(path: str | Path) -> LoraFile:
    """Read a diffusers-format LoRA file; a one-line ValueError naming the file for anything else."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        raise ValueError(f"LoRA {path}: expected an existing .safetensors file (nothing is unpickled)")
    try:
        with safe_open(str(path), "pt") as f:
            metadata = dict(f.metadata() or {})
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for a damaged header
        raise ValueError(f"LoRA {path}: not a readable safetensors file ({err})") from None
    if METADATA_KEY not in metadata:
        raise ValueError(f"LoRA {path}: no {METADATA_KEY!r} in its metadata (not the trainer's export)")
    config = json.loads(metadata[METADATA_KEY])
    rank, alpha = config.get(f"{LORA_PREFIX}.r"), config.get(f"{LORA_PREFIX}.lora_alpha")
    patterns = [k for k in ("rank_pattern", "alpha_pattern") if config.get(f"{LORA_PREFIX}.{k}")]
    if not isinstance(rank, int) or not isinstance(alpha, int | float) or patterns:
        raise ValueError(
            f"LoRA {path}: expected one rank and alpha in {METADATA_KEY}, got r={rank!r}, "
            f"lora_alpha={alpha!r}{', per-module ' + ' and '.join(patterns) if patterns else ''}"
        )
    odd = [k for k in state if not k.startswith(LORA_PREFIX + ".") or not k.endswith(LORA_SUFFIXES)]
    if odd or not state:
        raise ValueError(
            f"LoRA {path}: expected only {LORA_PREFIX}.<module>.lora_A/B.weight keys, got {odd[:1] or 'none'}"
        )
    return LoraFile(state, rank, float(alpha), metadata)


@dataclass(frozen=True)
class ComfyUILoraFormat:
    """How ComfyUI names a family's LoRA keys.

    prefix: the key prefix (`diffusion_model` for ComfyUI's native models); modules: (regex on the diffusers
    module path, replacement) rules, the first full match wins, none means the diffusers names are kept;
    alpha_keys: write `<module>.alpha` (ComfyUI and diffusers' non-diffusers converters scale by alpha/rank),
    in which case diffusers' `lora_adapter_metadata` must not be kept (the loader would apply alpha/r
    twice)."""

    prefix: str
    modules: tuple[tuple[str, str], ...] = ()
    alpha_keys: bool = False

    def module_name(self, module: str, family: str) -> str:
        if not self.modules:
            return module
        for pattern, replacement in self.modules:
            if re.fullmatch(pattern, module):
                return re.sub(pattern, replacement, module)
        raise ValueError(
            f"LoRA module {module!r} has no ComfyUI name for model {family!r} "
            f"(known: {', '.join(p for p, _ in self.modules)})"
        )

    def convert(self, lora: LoraFile, family: str) -> dict[str, torch.Tensor]:
        """The ComfyUI state dict of a diffusers-format LoRA."""
        out = {}
        for module in lora.modules():
            name = f"{self.prefix}.{self.module_name(module, family)}"
            down, up = lora.pair(module)
            out[f"{name}.lora_A.weight"], out[f"{name}.lora_B.weight"] = down, up
            if self.alpha_keys:
                out[f"{name}.alpha"] = torch.tensor(lora.alpha, dtype=torch.float32)
        return out

    def metadata(self, lora: LoraFile) -> dict[str, str]:
        """The diffusers file's metadata to carry over (without diffusers' LoRA config if alpha is in
        keys)."""
        return {k: v for k, v in lora.metadata.items() if not (self.alpha_keys and k == METADATA_KEY)}


def merge_lora(model: nn.Module, lora: LoraFile) -> nn.Module:
    """Fold the LoRA into the model's Linear weights in place (W ← W + (alpha/r)·B·A, computed in
    float64)."""
    for module in lora.modules():
        try:
            layer = model.get_submodule(module)
        except AttributeError:
            raise ValueError(f"LoRA module {module!r} is not in {type(model).__name__}") from None
        if not isinstance(layer, nn.Linear):
            raise ValueError(
                f"LoRA module {module!r}: merging supports Linear layers, got {type(layer).__name__}"
            )
        down, up = lora.pair(module)
        delta = lora.scale * (up.double() @ down.double())
        if delta.shape != layer.weight.shape:
            shapes = f"B·A is {tuple(delta.shape)}, the weight {tuple(layer.weight.shape)}"
            raise ValueError(f"LoRA module {module!r}: {shapes}")
        with torch.no_grad():
            layer.weight.copy_((layer.weight.double() + delta).to(layer.weight.dtype))
    return model
