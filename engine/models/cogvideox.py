"""CogVideoX (T2V and I2V): v-prediction on a DDPM-style schedule, latents [B, F, C, H, W].

The schedule is the model's own `scheduler/scheduler_config.json` (CogVideoXDDIMScheduler: scaled-linear
betas, SNR shift, zero-terminal-SNR rescale); t is uniform in {0, ..., T-1};
x_t = √ᾱ x₀ + √(1−ᾱ) ε and the target is v = √ᾱ ε − √(1−ᾱ) x₀. Rotary embeddings
are computed for the latent grid when the transformer config asks for them, as the diffusers pipelines do.
I2V: the clean first-frame image latent, zero-padded over the remaining frames, is concatenated with x_t along
channels (the CogVideoX I2V pipeline's input).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import CogVideoXDDIMScheduler, CogVideoXTransformer3DModel
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid
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
from videogpa.engine.models.lora import LORA_PREFIX
from videogpa.engine.models.lora_formats import ComfyUILoraFormat
from videogpa.engine.models.registry import register_adapter
from videogpa.engine.types import Conditioning

# CogVideoX-2B's published scheduler config (used when the model folder has none).
DEFAULT_SCHEDULER: dict[str, Any] = {
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "snr_shift_scale": 3.0,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "timestep_spacing": "trailing",
    "clip_sample": False,
}
# AutoencoderKLCogVideoX: 4× in time (temporal_compression_ratio), 2× per down block in space.
LATENTS = LatentConvention(
    vae_class="AutoencoderKLCogVideoX",
    layout="BFCHW",
    temporal_compression=lambda config: config.temporal_compression_ratio,
    spatial_compression=lambda config: 2 ** (len(config.block_out_channels) - 1),
    frame_multiple=lambda transformer_config: transformer_config.patch_size_t or 1,
)
SAMPLER = SamplerSettings(
    num_frames=49, height=480, width=720, steps=50, guidance_scale=6.0, max_sequence_length=226
)
# CogVideoX1.5-5B's published settings: 81 frames (5 s at 16 fps) of 768 × 1360, prompts of up to 224 tokens.
SAMPLER_15 = SamplerSettings(
    num_frames=81, height=768, width=1360, steps=50, guidance_scale=6.0, max_sequence_length=224, fps=16
)
I2V_OFS = 2.0  # the offset-conditioning value the CogVideoX 1.5 I2V pipeline passes when ofs_embed_dim is set

# ComfyUI runs CogVideoX through kijai's ComfyUI-CogVideoXWrapper, which builds diffusers' CogVideoX pipeline
# and loads a LoRA file with `pipe.load_lora_weights(file)`: the diffusers names and diffusers' LoRA metadata
# (rank, alpha) are what it reads, so the ComfyUI file is the diffusers one.
COMFYUI_LORA = ComfyUILoraFormat(prefix=LORA_PREFIX)


def alphas_cumprod_from_config(config: dict[str, Any]) -> torch.Tensor:
    """ᾱ_t (float64, [T]) of a CogVideoX scheduler config; only v-prediction configs are accepted."""
    prediction = config.get("prediction_type", "v_prediction")
    if prediction != "v_prediction":
        raise ValueError(f"scheduler config 'prediction_type': expected 'v_prediction', got {prediction!r}")
    scheduler = CogVideoXDDIMScheduler.from_config(config)
    return scheduler.alphas_cumprod.to(torch.float64)


@register_adapter
class CogVideoXAdapter(DiffusersAdapterMixin, ModelAdapter):
    """CogVideoX text-to-video."""

    name: ClassVar[str] = "cogvideox-t2v"
    latent_convention: ClassVar[LatentConvention] = LATENTS
    default_lora_targets: ClassVar[tuple[str, ...]] = ATTENTION_PROJECTIONS
    blocks_attribute: ClassVar[str] = "transformer_blocks"
    pipelines: ClassVar[PipelineClasses] = PipelineClasses("CogVideoXPipeline", None)
    sampler_defaults: ClassVar[SamplerSettings] = SAMPLER
    image_per_video: ClassVar[bool] = True  # CogVideoXImageToVideoPipeline encodes one first frame per video
    transformer_class: ClassVar[type[nn.Module]] = CogVideoXTransformer3DModel
    comfyui_lora: ClassVar[ComfyUILoraFormat] = COMFYUI_LORA
    image_conditioned: ClassVar[bool] = False
    # Joint attention over [text; video]: the text stream stays whole (replicated) on every rank of a group.
    sequence_parallel_plan: ClassVar[SequenceParallelPlan] = SequenceParallelPlan(
        hidden_states="hidden_states",
        token_args=(("image_rotary_emb", 0, 2),),  # (cos, sin) [L, head_dim]
        output_index=0,  # a block returns (hidden_states, encoder_hidden_states)
        self_attention="attn1",
        replicated_prefix="encoder_hidden_states",
    )

    def __init__(self, path: str | Path | None = None, scheduler_config: dict[str, Any] | None = None):
        """path: the local diffusers folder (its scheduler config defines the schedule); scheduler_config
        overrides it; with neither, CogVideoX-2B's published schedule."""
        config = scheduler_config or find_scheduler_config(path, "CogVideoX") or DEFAULT_SCHEDULER
        self.alphas_cumprod = alphas_cumprod_from_config(config)
        self.num_train_timesteps = len(self.alphas_cumprod)

    def sample_timesteps(self, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """Integer timesteps uniform in [0, T)."""
        t = torch.randint(0, self.num_train_timesteps, (n,), generator=generator, device=generator.device)
        return t.to(device)

    def _coefficients(self, timesteps: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(√ᾱ_t, √(1−ᾱ_t)) per sample, shaped to broadcast over `like`."""
        check_timesteps(timesteps, like.shape[0], 0, self.num_train_timesteps)
        if timesteps.is_floating_point() and not torch.equal(timesteps, timesteps.round()):
            raise ValueError(f"timesteps: CogVideoX expects integer timesteps, got {timesteps.tolist()}")
        abar = self.alphas_cumprod[timesteps.long().cpu()]
        return per_sample(abar.sqrt(), like), per_sample((1 - abar).sqrt(), like)

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        check_latents(latents, "latents", self.latent_layout)
        a, s = self._coefficients(timesteps, latents)
        return a * latents + s * noise

    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """v = √ᾱ ε − √(1−ᾱ) x₀."""
        check_latents(latents, "latents", self.latent_layout)
        a, s = self._coefficients(timesteps, latents)
        return a * noise - s * latents

    def model_input(self, noisy: torch.Tensor, cond: Conditioning, in_channels: int) -> torch.Tensor:
        """The transformer's hidden_states: x_t, and for I2V the padded image latent along channels."""
        channels = noisy.shape[2] * (2 if self.image_conditioned else 1)
        if channels != in_channels:
            raise ValueError(
                f"noisy latents have {noisy.shape[2]} channels; model {self.name!r} needs {in_channels} "
                "input "
                f"channels (expected {in_channels // (2 if self.image_conditioned else 1)} latent channels)"
            )
        if not self.image_conditioned:
            return noisy
        image = cond.image_latents
        b, f, c, h, w = noisy.shape
        if image is None or tuple(image.shape) != (b, 1, c, h, w):
            got = None if image is None else tuple(image.shape)
            raise ValueError(f"cond.image_latents: expected [B, 1, C, H, W] = {(b, 1, c, h, w)}, got {got}")
        padded = torch.cat([image, image.new_zeros(b, f - 1, c, h, w)], dim=1)
        return torch.cat([noisy, padded.to(noisy.dtype)], dim=2)

    @staticmethod
    def rotary_embedding(config: Any, frames: int, height: int, width: int, device: torch.device):
        """(cos, sin) rotary tables for a latent grid of frames × height × width, as the pipelines build
        them."""
        p, p_t = config.patch_size, config.patch_size_t
        grid = (height // p, width // p)
        base_w, base_h = config.sample_width // p, config.sample_height // p
        if p_t is None:  # CogVideoX 1.0
            crops = get_resize_crop_region_for_grid(grid, base_w, base_h)
            return get_3d_rotary_pos_embed(
                embed_dim=config.attention_head_dim,
                crops_coords=crops,
                grid_size=grid,
                temporal_size=frames,
                device=device,
            )
        return get_3d_rotary_pos_embed(  # CogVideoX 1.5
            embed_dim=config.attention_head_dim,
            crops_coords=None,
            grid_size=grid,
            temporal_size=frames // p_t,
            grid_type="slice",
            max_size=(base_h, base_w),
            device=device,
        )

    def predict(
        self, transformer: nn.Module, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning
    ) -> torch.Tensor:
        check_latents(noisy, "noisy", self.latent_layout)
        config = base_module(transformer).config
        b, f, _, h, w = noisy.shape
        if (
            h % config.patch_size
            or w % config.patch_size
            or (config.patch_size_t and f % config.patch_size_t)
        ):
            raise ValueError(
                f"noisy: latent grid F×H×W = {f}×{h}×{w} is not divisible by the patch size "
                f"({config.patch_size_t or 1}×{config.patch_size}×{config.patch_size})"
            )
        text = cond.text_embeds
        if text.ndim != 3 or text.shape[0] != b or text.shape[2] != config.text_embed_dim:
            raise ValueError(
                f"cond.text_embeds: expected [B={b}, L, D={config.text_embed_dim}], got {tuple(text.shape)}"
            )
        rotary = None
        if config.use_rotary_positional_embeddings:
            rotary = self.rotary_embedding(config, f, h, w, noisy.device)
        ofs = None if config.ofs_embed_dim is None else noisy.new_full((b,), I2V_OFS)
        out = transformer(
            hidden_states=self.model_input(noisy, cond, config.in_channels),
            encoder_hidden_states=text.to(noisy.dtype),
            timestep=timesteps.to(noisy.device),
            ofs=ofs,
            image_rotary_emb=rotary,
            return_dict=False,
        )[0]
        return out


@register_adapter
class CogVideoXI2VAdapter(CogVideoXAdapter):
    """CogVideoX image-to-video: cond.image_latents [B, 1, C, H, W] is required."""

    name: ClassVar[str] = "cogvideox-i2v"
    image_conditioned: ClassVar[bool] = True
    pipelines: ClassVar[PipelineClasses] = PipelineClasses(None, "CogVideoXImageToVideoPipeline")


@register_adapter
class CogVideoX15T2VAdapter(CogVideoXAdapter):
    """CogVideoX 1.5 text-to-video (CogVideoX1.5-5B): the same maths and transformer class as CogVideoX; what
    differs lives in its transformer config (patch_size_t = 2, rotary embeddings on a sliced grid, no learned
    positional embeddings, no patch bias), which the shared code reads, and in its sampler defaults. Its
    latent frames must be even: encoded videos get their first latent frame repeated in front
    (LatentConvention)."""

    name: ClassVar[str] = "cogvideox1.5-t2v"
    sampler_defaults: ClassVar[SamplerSettings] = SAMPLER_15
