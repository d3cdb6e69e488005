"""Wan 2.2 TI2V: flow matching, latents [B, C, F, H, W], per-token timesteps.

s ~ U(0, 1), σ = shift·s / (1 + (shift − 1)·s) (shift from the scheduler config's `flow_shift`, 5 by
default), x_t = (1 − σ) x₀ + σ ε, target ε − x₀, and the model's timestep is 1000·σ. Wan 2.2
TI2V takes one timestep per patch token ([B, F·H/p·W/p], as diffusers' WanPipeline with expand_timesteps
builds it). Image-to-video (cond.image_latents [B, C, 1, H, W] given): x_t's first latent frame is the clean
image latent, its tokens get timestep 0, and it is excluded from the loss (`loss_mask`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import WanTransformer3DModel
from torch import nn

from videogpa.engine.models.base import ModelAdapter, PipelineClasses, SamplerSettings, SequenceParallelPlan
from videogpa.engine.models.common import (
    ATTENTION_PROJECTIONS,
    DiffusersAdapterMixin,
    base_module,
    check_latents,
    check_timesteps,
    find_scheduler_config,
    per_sample,
)
from videogpa.engine.models.latents import LatentConvention
from videogpa.engine.models.lora_formats import ComfyUILoraFormat
from videogpa.engine.models.registry import register_adapter
from videogpa.engine.types import Conditioning

DEFAULT_SHIFT = 5.0  # Wan 2.2 TI2V's published flow_shift
NUM_TRAIN_TIMESTEPS = 1000
# AutoencoderKLWan: (z − latents_mean) / latents_std; its config states its compression.
LATENTS = LatentConvention(
    vae_class="AutoencoderKLWan",
    layout="BCFHW",
    temporal_compression=lambda config: config.scale_factor_temporal,
    spatial_compression=lambda config: config.scale_factor_spatial,
)
SAMPLER = SamplerSettings(
    num_frames=121, height=704, width=1280, steps=50, guidance_scale=5.0, max_sequence_length=512
)

# ComfyUI's native Wan model (comfy/ldm/wan/model.py) names the blocks' layers as the original Wan code does;
# these are the inverse of what diffusers' `_convert_non_diffusers_wan_lora_to_diffusers` maps (it also
# reads the `.alpha` keys of block layers, the ones a LoRA of this project adapts).
_BLOCK = r"blocks\.(\d+)\."
COMFYUI_LORA = ComfyUILoraFormat(
    prefix="diffusion_model",
    modules=tuple(
        (_BLOCK + f"{ours}\\.{re.escape(diffusers)}", rf"blocks.\1.{theirs}.{comfy}")
        for ours, theirs in (("attn1", "self_attn"), ("attn2", "cross_attn"))
        for diffusers, comfy in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "o"))
    )
    + (
        (_BLOCK + r"attn2\.add_k_proj", r"blocks.\1.cross_attn.k_img"),
        (_BLOCK + r"attn2\.add_v_proj", r"blocks.\1.cross_attn.v_img"),
        (_BLOCK + r"ffn\.net\.0\.proj", r"blocks.\1.ffn.0"),
        (_BLOCK + r"ffn\.net\.2", r"blocks.\1.ffn.2"),
    ),
    alpha_keys=True,
)


def shifted_sigma(s: torch.Tensor, shift: float) -> torch.Tensor:
    """σ = shift·s / (1 + (shift − 1)·s)."""
    return shift * s / (1 + (shift - 1) * s)


@register_adapter
class WanTI2VAdapter(DiffusersAdapterMixin, ModelAdapter):
    """Wan 2.2 TI2V (text-to-video, or image-to-video when cond.image_latents is given)."""

    name: ClassVar[str] = "wan2.2-ti2v"
    latent_convention: ClassVar[LatentConvention] = LATENTS
    default_lora_targets: ClassVar[tuple[str, ...]] = ATTENTION_PROJECTIONS
    blocks_attribute: ClassVar[str] = "blocks"
    dispatches_attention: ClassVar[bool] = True  # WanAttnProcessor calls diffusers' dispatch_attention_fn
    # diffusers' WanImageToVideoPipeline cleans every prompt with ftfy
    pipelines: ClassVar[PipelineClasses] = PipelineClasses(
        "WanPipeline", "WanImageToVideoPipeline", ("ftfy",)
    )
    sampler_defaults: ClassVar[SamplerSettings] = SAMPLER
    image_per_video: ClassVar[bool] = False  # WanImageToVideoPipeline takes one image for the whole batch
    transformer_class: ClassVar[type[nn.Module]] = WanTransformer3DModel
    comfyui_lora: ClassVar[ComfyUILoraFormat] = COMFYUI_LORA
    # Self-attention over the video tokens; cross-attention reads the whole text on every rank (no exchange).
    sequence_parallel_plan: ClassVar[SequenceParallelPlan] = SequenceParallelPlan(
        hidden_states="hidden_states",
        # per-token timestep projections [B, L, 6, D] (Wan 2.2 TI2V; [B, 6, D] otherwise) and rope (cos, sin)
        token_args=(("temb", 1, 4), ("rotary_emb", 1, 4)),
        output_index=None,
        self_attention="attn1",
    )

    def __init__(self, path: str | Path | None = None, shift: float | None = None):
        """path: the local diffusers folder (its scheduler config's flow_shift); shift overrides it."""
        if shift is None:
            config: dict[str, Any] = find_scheduler_config(path, "Wan 2.2") or {}
            shift = config.get("flow_shift", config.get("shift", DEFAULT_SHIFT))
        if not float(shift) > 0:
            raise ValueError(f"shift: expected a positive flow shift, got {shift!r}")
        self.shift = float(shift)

    def finalize_latents(self, pipe, latents: torch.Tensor, images: list, encode_image) -> torch.Tensor:
        """Pipelines with `expand_timesteps` (Wan 2.2 TI2V) paste the clean image latent into latent frame 0
        only after their last step callback; do the same to the latents kept, so they decode to the video."""
        if not getattr(pipe.config, "expand_timesteps", False) or not images:
            return latents
        latents = latents.clone()
        for i, image in enumerate(images):
            latents[i, :, :1] = encode_image(image).to(latents.device, latents.dtype)  # [C, 1, h, w]
        return latents

    def sample_timesteps(self, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """1000·σ(s) for s uniform in (0, 1) (float32)."""
        s = torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64)
        return (NUM_TRAIN_TIMESTEPS * shifted_sigma(s, self.shift)).to(device=device, dtype=torch.float32)

    def _sigma(self, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        check_timesteps(timesteps, like.shape[0], 0, NUM_TRAIN_TIMESTEPS)
        return per_sample(timesteps.double() / NUM_TRAIN_TIMESTEPS, like)

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        check_latents(latents, "latents", self.latent_layout)
        sigma = self._sigma(timesteps, latents)
        return (1 - sigma) * latents + sigma * noise

    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """ε − x₀."""
        check_latents(latents, "latents", self.latent_layout)
        return noise - latents

    @staticmethod
    def _check_image(image: torch.Tensor, noisy: torch.Tensor) -> None:
        b, c, _, h, w = noisy.shape
        if tuple(image.shape) != (b, c, 1, h, w):
            raise ValueError(
                f"cond.image_latents: expected [B, C, 1, H, W] = {(b, c, 1, h, w)}, got {tuple(image.shape)}"
            )

    def token_timesteps(self, timesteps: torch.Tensor, noisy: torch.Tensor, patch: tuple, clean_first: bool):
        """Per-token timesteps [B, F/p_t · H/p_h · W/p_w] (frame-major), 0 on the first frame if
        clean_first."""
        b, _, f, h, w = noisy.shape
        p_t, p_h, p_w = patch
        grid = (
            timesteps.to(noisy.device, torch.float32)
            .reshape(b, 1, 1, 1)
            .expand(b, f // p_t, h // p_h, w // p_w)
        )
        if clean_first:
            grid = torch.cat([torch.zeros_like(grid[:, :1]), grid[:, 1:]], dim=1)
        return grid.reshape(b, -1)

    def checked_config(
        self, transformer: nn.Module, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning
    ):
        """The transformer's config once noisy, text and timesteps fit it (latent channels:
        transformer_inputs)."""
        check_latents(noisy, "noisy", self.latent_layout)
        config = base_module(transformer).config
        b, _, f, h, w = noisy.shape
        p_t, p_h, p_w = config.patch_size
        if f % p_t or h % p_h or w % p_w:
            grid = f"F×H×W = {f}×{h}×{w}"
            raise ValueError(f"noisy: latent grid {grid} is not divisible by the patch {config.patch_size}")
        text = cond.text_embeds
        if text.ndim != 3 or text.shape[0] != b or text.shape[2] != config.text_dim:
            raise ValueError(
                f"cond.text_embeds: expected [B={b}, L, D={config.text_dim}], got {tuple(text.shape)}"
            )
        check_timesteps(timesteps, b, 0, NUM_TRAIN_TIMESTEPS)
        return config

    def transformer_inputs(self, config, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning):
        """The transformer's keyword arguments: Wan 2.2 TI2V's per-token timesteps, the image in frame 0."""
        c = noisy.shape[1]
        if c != config.in_channels:
            raise ValueError(f"noisy: expected {config.in_channels} latent channels (dim 1), got {c}")
        image = cond.image_latents
        if image is not None:
            self._check_image(image, noisy)
            if config.patch_size[0] != 1:
                raise ValueError(f"image-to-video needs a temporal patch size of 1, got {config.patch_size}")
            noisy = torch.cat([image.to(noisy.dtype), noisy[:, :, 1:]], dim=2)
        return dict(
            hidden_states=noisy,
            timestep=self.token_timesteps(timesteps, noisy, config.patch_size, image is not None),
            encoder_hidden_states=cond.text_embeds.to(noisy.dtype),
        )

    def predict(
        self, transformer: nn.Module, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning
    ) -> torch.Tensor:
        config = self.checked_config(transformer, noisy, timesteps, cond)
        inputs = self.transformer_inputs(config, noisy, timesteps, cond)
        return transformer(**inputs, return_dict=False)[0]

    def loss_mask(self, latents: torch.Tensor, cond: Conditioning) -> torch.Tensor | None:
        """Image-to-video: [1, 1, F, 1, 1] weights, 0 on the clean first frame; text-to-video: None."""
        if cond.image_latents is None:
            return None
        mask = torch.ones(1, 1, latents.shape[2], 1, 1, device=latents.device)
        mask[:, :, 0] = 0
        return mask
