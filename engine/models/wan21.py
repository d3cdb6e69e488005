"""Wan 2.1 T2V (1.3B / 14B) and the latent-concat image-to-video of Wan 2.1 I2V 14B (and Wan 2.2 A14B I2V).

The flow-matching maths are Wan 2.2's (engine.models.wan22_ti2v: σ, x_t, target ε − x₀, timestep
1000·σ), but these transformers take one timestep per sample (no expand_timesteps) and every latent frame is
noised and counts in the loss. Image-to-video, as diffusers' WanImageToVideoPipeline builds its input:

- cond.image_latents [B, C, F, H, W]: the VAE encoding (mode, normalised) of the first frame followed by
  4·(F − 1) zero frames (in [-1, 1]) — every latent frame, not only the first;
- a mask [B, s, F, H, W] (s = the VAE's temporal compression = in_channels − 2C): 1 on latent frame 0,
  else 0;
- hidden_states = concat(x_t, mask, image_latents) on the channel axis (16 + 4 + 16 = 36 for Wan 2.1 I2V);
- Wan 2.1 only (its transformer has `image_dim`): cond.image_embeds [B, 257, 1280], the CLIP vision
  encoder's penultimate hidden states, as `encoder_hidden_states_image` (projected by the transformer's
  image_embedder and read by the cross-attention's add_k_proj / add_v_proj).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from videogpa.engine.models.base import PipelineClasses, SamplerSettings
from videogpa.engine.models.latents import LatentConvention
from videogpa.engine.models.registry import register_adapter
from videogpa.engine.models.wan22_ti2v import LATENTS, WanTI2VAdapter
from videogpa.engine.types import Conditioning

# Wan 2.1's published sampling: 81 frames at 480×832 (720×1280 for the 720p checkpoints), guidance 5.0, 50
# steps, umT5 prompts of 512 tokens, 16 fps (diffusers' Wan docs; flow shift 3.0 at 480p, 5.0 at 720p is the
# scheduler config's flow_shift, read by the adapter).
SAMPLER_480P = SamplerSettings(
    num_frames=81, height=480, width=832, steps=50, guidance_scale=5.0, max_sequence_length=512, fps=16
)

# The I2V image latents span the video: the first frame followed by zero frames, encoded together.
I2V_LATENTS = dataclasses.replace(LATENTS, image_condition="video")

WAN_TEXT_TOKENS = 512  # diffusers' WanAttnProcessor splits image and text context at 512 text tokens


def first_frame_mask(noisy: torch.Tensor, channels: int) -> torch.Tensor:
    """WanImageToVideoPipeline's mask [B, channels, F, H, W]: 1 on latent frame 0 (the given image), else
    0."""
    b, _, f, h, w = noisy.shape
    mask = noisy.new_zeros(b, channels, f, h, w)
    mask[:, :, 0] = 1
    return mask


@register_adapter
class Wan21T2VAdapter(WanTI2VAdapter):
    """Wan 2.1 text-to-video (1.3B, 14B): one timestep per sample."""

    name: ClassVar[str] = "wan2.1-t2v"
    pipelines: ClassVar[PipelineClasses] = PipelineClasses("WanPipeline", None)
    sampler_defaults: ClassVar[SamplerSettings] = SAMPLER_480P

    def finalize_latents(self, pipe, latents: torch.Tensor, images: list, encode_image) -> torch.Tensor:
        return latents  # the pipeline's last latents are what it decodes (no expand_timesteps)

    def transformer_inputs(self, config, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning):
        for name in ("image_latents", "image_embeds"):
            if getattr(cond, name) is not None:
                raise ValueError(f"cond.{name}: model {self.name!r} is text-to-video; expected None")
        if noisy.shape[1] != config.in_channels:
            raise ValueError(
                f"noisy: expected {config.in_channels} latent channels (dim 1), got {noisy.shape[1]}"
            )
        return self.common_inputs(noisy, timesteps, cond, noisy)

    @staticmethod
    def common_inputs(noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning, hidden: torch.Tensor):
        return dict(
            hidden_states=hidden,
            timestep=timesteps.to(noisy.device, torch.float32),
            encoder_hidden_states=cond.text_embeds.to(noisy.dtype),
        )

    def loss_mask(self, latents: torch.Tensor, cond: Conditioning) -> torch.Tensor | None:
        return None  # every latent frame is noised and predicted, image-to-video too


@register_adapter
class Wan21I2VAdapter(Wan21T2VAdapter):
    """Wan 2.1 image-to-video 14B (480p / 720p): latent-concat image conditioning and CLIP image
    embeddings."""

    name: ClassVar[str] = "wan2.1-i2v"
    # diffusers' WanImageToVideoPipeline cleans every prompt with ftfy
    pipelines: ClassVar[PipelineClasses] = PipelineClasses(None, "WanImageToVideoPipeline", ("ftfy",))
    latent_convention: ClassVar[LatentConvention] = I2V_LATENTS

    def transformer_inputs(self, config, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning):
        b, c, f, h, w = noisy.shape
        mask_channels = config.in_channels - 2 * c
        if mask_channels <= 0:
            raise ValueError(
                f"noisy: {c} latent channels; model {self.name!r} takes {config.in_channels} input channels "
                "(x_t, the first-frame mask and the image latents concatenated: expected fewer latent "
                "channels)"
            )
        image = cond.image_latents
        if image is None or tuple(image.shape) != (b, c, f, h, w):
            got = None if image is None else tuple(image.shape)
            raise ValueError(
                f"cond.image_latents: expected [B, C, F, H, W] = {(b, c, f, h, w)} (the VAE encoding of "
                f"the first frame followed by zero frames, every latent frame), got {got}"
            )
        hidden = torch.cat([noisy, first_frame_mask(noisy, mask_channels), image.to(noisy.dtype)], dim=1)
        inputs = self.common_inputs(noisy, timesteps, cond, hidden)
        embeds = cond.image_embeds
        if config.image_dim is None:
            if embeds is not None:
                raise ValueError(
                    f"cond.image_embeds: this {self.name!r} transformer has no image_dim; expected None"
                )
            return inputs
        if cond.text_embeds.shape[1] != WAN_TEXT_TOKENS:
            raise ValueError(
                f"cond.text_embeds: {cond.text_embeds.shape[1]} tokens; Wan's image cross-attention takes "
                f"all but the last {WAN_TEXT_TOKENS} context tokens as the image's, so expected "
                f"{WAN_TEXT_TOKENS} "
                "(max_sequence_length 512)"
            )
        if embeds is None or embeds.ndim != 3 or embeds.shape[0] != b or embeds.shape[2] != config.image_dim:
            got = None if embeds is None else tuple(embeds.shape)
            raise ValueError(
                f"cond.image_embeds: expected CLIP image embeddings [B={b}, N, D={config.image_dim}] (the "
                f"preference shards' 'image_embeds', written by the encode stage), got {got}"
            )
        return {**inputs, "encoder_hidden_states_image": embeds.to(noisy.dtype)}
