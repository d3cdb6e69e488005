"""The built-in tiny model: a 2-layer CogVideoXTransformer3DModel built in code from a fixed seed.

It is the CogVideoX T2V adapter with a tiny config (rotary embeddings on, CogVideoX-2B's schedule), so the
embedded default and the tests exercise the real model class and the real adapter logic, with no files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import CogVideoXTransformer3DModel
from torch import nn

from videogpa.engine.models.cogvideox import CogVideoXAdapter
from videogpa.engine.models.registry import register_adapter


@dataclass(frozen=True)
class TinySpec:
    """Shapes of one tiny-model sample (no batch dim): latents [F, C, H, W] (BFCHW layout), text [L, D]."""

    latent_shape: tuple[int, int, int, int] = (4, 4, 8, 8)
    text_shape: tuple[int, int] = (8, 32)
    seed: int = 0  # the built-in weights are drawn from this seed


TINY = TinySpec()


def tiny_transformer_config(spec: TinySpec = TINY) -> dict[str, Any]:
    """The CogVideoXTransformer3DModel config of the tiny model: 2 layers, 2 heads × 16 dims."""
    frames, channels, height, width = spec.latent_shape
    length, dim = spec.text_shape
    return {
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "in_channels": channels,
        "out_channels": channels,
        "time_embed_dim": 32,
        "text_embed_dim": dim,
        "num_layers": 2,
        "sample_width": width,
        "sample_height": height,
        "sample_frames": (frames - 1) * 4 + 1,
        "patch_size": 2,
        "max_text_seq_length": length,
        "use_rotary_positional_embeddings": True,
    }


def build_tiny_transformer(dtype: torch.dtype = torch.float32, spec: TinySpec = TINY) -> nn.Module:
    """The tiny transformer with weights drawn from spec.seed (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = CogVideoXTransformer3DModel(**tiny_transformer_config(spec))
    return model if dtype == torch.float32 else model.to(dtype)


@register_adapter
class TinyAdapter(CogVideoXAdapter):
    """The tiny built-in model (CogVideoX T2V logic); TINY gives its sample shapes."""

    name: ClassVar[str] = "tiny"
    spec: ClassVar[TinySpec] = TINY

    @classmethod
    def load_transformer(cls, path: str | Path | None, dtype: torch.dtype) -> nn.Module:
        """path None: the built-in tiny model; otherwise a saved one from a local diffusers folder."""
        if path is None:
            return build_tiny_transformer(dtype)
        return super().load_transformer(path, dtype)
