"""Encoding with a loaded pipeline's own VAE and text encoder, as its sampler decodes and conditions.

Videos: frames mapped from [0, 1] to [-1, 1], the posterior's mode, then the family's latent normalisation
(engine.models.latents.LatentConvention), padded to the transformer's latent-frame multiple (CogVideoX 1.5),
in the model's native layout. Prompts: the pipeline's
`encode_prompt` without classifier-free guidance, at a given max_sequence_length. First frames: the family's
image condition (LatentConvention.image_condition) and, for pipelines with a CLIP image encoder (Wan 2.1
I2V), its image embeddings as the pipeline's `encode_image` computes them.
"""

from __future__ import annotations

import torch

from videogpa.engine.models.latents import LatentConvention


class PipelineEncoder:
    """Encodes videos, first frames and prompts with a loaded pipeline's VAE and text encoder."""

    def __init__(self, pipe, convention: LatentConvention, max_sequence_length: int):
        name = type(pipe.vae).__name__
        if name != convention.vae_class:
            raise ValueError(
                f"the pipeline's VAE is a {name}; this model family's latents need a {convention.vae_class}"
            )
        self.pipe, self.vae, self.convention = pipe, pipe.vae, convention
        self.max_sequence_length = max_sequence_length
        self.device = pipe.vae.device

    def encode_video(self, frames: torch.Tensor, image: bool = False) -> torch.Tensor:
        """frames [T, 3, H, W] in [0, 1] → latents of one sample in the native layout (4-D)."""
        if frames.ndim != 4:
            raise ValueError(f"encode_video: expected frames [T, 3, H, W], got {tuple(frames.shape)}")
        return self.encode_videos(frames[None], image)[0]

    @torch.no_grad()
    def encode_videos(self, frames: torch.Tensor, image: bool = False) -> torch.Tensor:
        """frames [B, T, 3, H, W] in [0, 1] → latents [B, ...] in the native layout, one VAE call."""
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"encode_videos: expected frames [B, T, 3, H, W], got {tuple(frames.shape)}")
        if frames.min() < 0 or frames.max() > 1:
            raise ValueError("encode_videos: frames must be in [0, 1]")
        x = (frames * 2 - 1).transpose(1, 2).to(self.device, self.vae.dtype)  # [B, 3, T, H, W]
        z = self.convention.normalize(self.vae, self.vae.encode(x).latent_dist.mode().float(), image)
        if not image:
            z = self.convention.pad_frames(z, self.convention.frame_multiple(self.pipe.transformer.config))
        return self.convention.to_native(z).cpu()

    def encode_image(self, image: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """First frame [3, H, W] in [0, 1] → its image latents in the native layout (4-D): one latent frame,
        or for an image_condition "video" family the encoding of the frame followed by num_frames − 1 zero
        frames (0 in [-1, 1]), as WanImageToVideoPipeline.prepare_latents builds its condition."""
        if self.convention.image_condition == "first_frame":
            return self.encode_video(image[None], image=True)
        if not (isinstance(num_frames, int) and num_frames > 1):
            raise ValueError(
                f"encode_image: this family's image condition spans the video; expected its "
                f"num_frames (> 1), got {num_frames!r}"
            )
        gray = image.new_full((num_frames - 1, *image.shape), 0.5)  # 0 once mapped to [-1, 1]
        return self.encode_video(torch.cat([image[None], gray]), image=True)

    @property
    def has_image_encoder(self) -> bool:
        """The pipeline conditions on CLIP image embeddings (its image_encoder is set)."""
        return getattr(self.pipe, "image_encoder", None) is not None

    @torch.no_grad()
    def encode_image_embeds(self, image: torch.Tensor) -> torch.Tensor:
        """First frame [3, H, W] in [0, 1] → [N, D] image-encoder states (the pipeline's `encode_image`: its
        CLIP image processor on the 8-bit image, the penultimate hidden states)."""
        if not self.has_image_encoder:
            raise ValueError(
                f"{type(self.pipe).__name__} has no image encoder: no image embeddings to compute"
            )
        from PIL import Image

        pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        return self.pipe.encode_image(Image.fromarray(pixels), self.device)[0].float().cpu()

    @torch.no_grad()
    def encode_text(self, prompt: str) -> torch.Tensor:
        """[L, D] embeddings of one prompt from the pipeline's own text encoder."""
        embeds = self.pipe.encode_prompt(
            prompt,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
            device=self.device,
        )[0]
        return embeds[0].float().cpu()
