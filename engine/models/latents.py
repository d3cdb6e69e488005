"""How a family's VAE latents are normalised, laid out and compressed (a family fact its adapter names)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class LatentConvention:
    """A family's VAE latent space: the VAE class, the native layout of the diffusion model's latents, and the
    VAE's compression read from its config."""

    vae_class: str  # the diffusers VAE class name
    layout: str  # "BFCHW" (CogVideoX) or "BCFHW" (Wan)
    temporal_compression: Callable[[Any], int]  # vae.config -> frames per latent frame
    spatial_compression: Callable[[Any], int]  # vae.config -> pixels per latent pixel
    # image-to-video's image latents: "first_frame" (the first frame's latent, one latent frame) or "video"
    # (the VAE encoding of the first frame followed by zero frames, every latent frame: Wan's latent-concat
    # I2V)
    image_condition: str = "first_frame"
    # transformer config -> the multiple its latent frame count must be (CogVideoX 1.5: patch_size_t = 2)
    frame_multiple: Callable[[Any], int] = lambda transformer_config: 1

    def __post_init__(self):
        if self.image_condition not in ("first_frame", "video"):
            raise ValueError(
                f"image_condition: expected 'first_frame' or 'video', got {self.image_condition!r}"
            )

    def normalize(self, vae, z: torch.Tensor, image: bool = False) -> torch.Tensor:
        """Raw VAE latents [B, C, F, H, W] → the diffusion model's latent space (still BCFHW):
        (z − mean) / std when the VAE config has latents_mean/std (Wan), else z × scaling_factor; CogVideoX
        configs with invert_scale_latents divide an I2V image latent by the scaling factor, as their
        pipeline does."""
        config = vae.config
        if (
            getattr(config, "latents_mean", None) is not None
            and getattr(config, "latents_std", None) is not None
        ):
            shape = (1, -1, 1, 1, 1)
            mean = torch.tensor(config.latents_mean, dtype=z.dtype, device=z.device).view(shape)
            std = torch.tensor(config.latents_std, dtype=z.dtype, device=z.device).view(shape)
            return (z - mean) / std
        if image and getattr(config, "invert_scale_latents", False):
            return z / config.scaling_factor
        return z * config.scaling_factor

    def pad_frames(self, z: torch.Tensor, multiple: int) -> torch.Tensor:
        """Latents [B, C, F, H, W] with copies of their first frame put in front until F is a multiple of
        `multiple`: what the CogVideoX 1.5 sampler generates (it samples the extra frames and drops them when
        decoding) and how its authors' fine-tuning pads encoded videos."""
        missing = -z.shape[2] % multiple
        return torch.cat([z[:, :, :1].expand(-1, -1, missing, -1, -1), z], dim=2) if missing else z

    def to_native(self, z: torch.Tensor) -> torch.Tensor:
        """[B, C, F, H, W] → the native layout."""
        return z.permute(0, 2, 1, 3, 4) if self.layout == "BFCHW" else z

    def frames_of(self, latent_shape: tuple[int, ...]) -> int:
        """Latent frames of one sample's latents [F, C, H, W] or [C, F, H, W]."""
        return latent_shape[0] if self.layout == "BFCHW" else latent_shape[1]

    def clip_size(self, vae, latent_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(frames, height, width) of the clips this VAE turns into latents of one sample's latent_shape."""
        temporal, spatial = self.temporal_compression(vae.config), self.spatial_compression(vae.config)
        height, width = latent_shape[-2:]
        return (self.frames_of(latent_shape) - 1) * temporal + 1, height * spatial, width * spatial
