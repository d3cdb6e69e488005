"""Neutral types every layer may use: a batch's conditioning, dtype names, the default device (torch only)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# Names accepted wherever a config or a flag gives a floating-point precision.
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}
DTYPE_CHOICES = ("fp32", "bf16", "fp16")  # the short names, for command-line choices


@dataclass
class Conditioning:
    """What the transformer is conditioned on, batched along dim 0 like the latents."""

    text_embeds: torch.Tensor  # [B, L, D]
    # image-to-video: the family's image latents in the native layout (the clean first-frame latent, or for
    # Wan's latent-concat I2V the VAE encoding of the first frame followed by zero frames, every latent frame)
    image_latents: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None  # Wan 2.1 I2V: CLIP image-encoder hidden states [B, N, D]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Conditioning:
        """The conditioning with `fn` applied to every tensor it holds (absent ones stay None)."""
        apply = lambda t: None if t is None else fn(t)
        return Conditioning(apply(self.text_embeds), apply(self.image_latents), apply(self.image_embeds))

    def repeat(self, times: int) -> Conditioning:
        """The same conditioning for `times` stacked copies of the batch ([w; l] -> repeat(2))."""
        return self.map(lambda t: t.repeat(times, *([1] * (t.ndim - 1))))


def default_device() -> str:
    """Where pipelines and geometry models run when no device is given."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_compute_dtype(dtype: torch.dtype | str | None, device: torch.device | str) -> torch.dtype:
    """None → bf16 (fp16 where bf16 is unsupported) on CUDA, fp32 elsewhere; names like 'bf16' accepted."""
    if dtype is None:
        if torch.device(device).type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)} or a torch dtype, got {dtype!r}")
        dtype = DTYPES[dtype]
    if dtype not in DTYPES.values():
        raise ValueError(f"dtype must be bfloat16, float16 or float32, got {dtype}")
    return dtype
