"""The model-adapter contract: everything that differs between video model families.

The DPO step, reference strategies, ZeRO-3, checkpointing and logging are shared; they talk to a model
only through a `ModelAdapter`, and never branch on the model's name.

Latents are kept in the family's native layout everywhere (shards, batches, predictions):
CogVideoX [B, F, C, H, W], Wan [B, C, F, H, W]; `ModelAdapter.latent_layout` names it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn


@dataclass
class Conditioning:
    """What the transformer is conditioned on, batched along dim 0 like the latents."""

    text_embeds: torch.Tensor  # [B, L, D]
    image_latents: torch.Tensor | None = None  # image-to-video: the clean first-frame latent, native layout

    def repeat(self, times: int) -> Conditioning:
        """The same conditioning for `times` stacked copies of the batch ([w; l] -> repeat(2))."""
        rep = lambda t: None if t is None else t.repeat(times, *([1] * (t.ndim - 1)))
        return Conditioning(rep(self.text_embeds), rep(self.image_latents))


class ModelAdapter(abc.ABC):
    """How to load, noise, target, call and LoRA-wrap one family of video transformers."""

    name: ClassVar[str]
    latent_layout: ClassVar[str]  # "BFCHW" or "BCFHW"
    default_lora_targets: ClassVar[tuple[str, ...]]  # module-name suffixes that take LoRA

    @classmethod
    @abc.abstractmethod
    def load_transformer(cls, path: str | Path, dtype: torch.dtype) -> nn.Module:
        """Load the transformer from a local diffusers folder (offline; clear error if missing)."""

    @abc.abstractmethod
    def sample_timesteps(self, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """Training timesteps for n samples (one per pair: winner and loser share it)."""

    @abc.abstractmethod
    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t from clean latents x_0 and noise ε at the given timesteps."""

    @abc.abstractmethod
    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the model's output is regressed onto (v, ε − x_0, ...)."""

    @abc.abstractmethod
    def predict(
        self, transformer: nn.Module, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning
    ) -> torch.Tensor:
        """Call the (possibly peft/DeepSpeed-wrapped) transformer; returns a prediction shaped like noisy."""

    def loss_mask(self, latents: torch.Tensor, cond: Conditioning) -> torch.Tensor | None:
        """Per-element loss weights broadcastable to the latents (None = every element counts)."""
        return None
