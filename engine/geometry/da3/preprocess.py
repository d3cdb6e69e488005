"""The official input processing: upper-bound resize to 504, sides to the nearest multiple of 14,
ImageNet norm.

The official code resizes 8-bit images with OpenCV: bicubic when a side grows, pixel-area averaging
otherwise, each result rounded back to 8 bits. Here the same filters run in torch on frames in [0, 1]
(area weights computed exactly, bicubic with a = −0.75 like OpenCV) and each result is rounded to k/255.
Checked once against opencv-python 4.14 on 8-bit images (518² → 504², 480×720 → 336×504,
1080×1920 → 284×504, 300×400 → 378×504): equal, or one 8-bit level apart on under 1% of the values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from videogpa.engine.geometry.vggt.aggregator import IMAGENET_MEAN, IMAGENET_STD

PROCESS_RES = 504
PATCH_SIZE = 14


def nearest_multiple(size: int, patch: int = PATCH_SIZE) -> int:
    """The multiple of `patch` nearest to `size` (a tie goes up; never below one patch)."""
    return max(patch, (size + patch // 2) // patch * patch)


def processed_size(
    height: int, width: int, process_res: int = PROCESS_RES, patch: int = PATCH_SIZE
) -> tuple[tuple[int, int], tuple[int, int]]:
    """((h, w) after the upper-bound resize, (h, w) after rounding to the patch grid) of an H×W image."""
    longest = max(height, width)
    if longest != process_res:
        scale = process_res / longest
        height, width = round(height * scale), round(width * scale)
    return (height, width), (nearest_multiple(height, patch), nearest_multiple(width, patch))


def area_weights(n_in: int, n_out: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """[n_out, n_in]: output pixel i averages the input over [i·s, (i+1)·s), s = n_in/n_out
    (n_out ≤ n_in)."""
    scale = n_in / n_out
    start = torch.arange(n_out, dtype=dtype)[:, None] * scale
    left = torch.arange(n_in, dtype=dtype)[None, :]
    overlap = (torch.minimum(start + scale, left + 1) - torch.maximum(start, left)).clamp_min(0)
    return overlap / scale


def quantise(x: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit grid k/255 in [0, 1], as the official 8-bit resize does."""
    return (x * 255).round().clamp(0, 255) / 255


def resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """frames [N, 3, H, W] in [0, 1] → [N, 3, h, w]: bicubic if a side grows, else pixel-area, then
    8-bit."""
    height, width = frames.shape[-2:]
    if (height, width) == tuple(size):
        return frames
    if size[0] > height or size[1] > width:
        out = F.interpolate(frames, size=size, mode="bicubic", align_corners=False)
    else:
        rows = area_weights(height, size[0]).to(frames.device)
        cols = area_weights(width, size[1]).to(frames.device)
        out = torch.einsum("ih,nchw,jw->ncij", rows, frames.double(), cols).to(frames.dtype)
    return quantise(out)


def normalise(frames: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of frames [..., 3, H, W] in [0, 1]."""
    mean = frames.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = frames.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return (frames - mean) / std


def preprocess(frames: torch.Tensor, process_res: int = PROCESS_RES) -> torch.Tensor:
    """Frames [..., 3, H, W] in [0, 1] → the normalised network input [..., 3, h, w] (h, w multiples of
    14)."""
    if frames.ndim < 3 or frames.shape[-3] != 3 or not frames.is_floating_point():
        raise ValueError(f"frames must be floating point [..., 3, H, W] in [0, 1], got {tuple(frames.shape)}")
    lead, (height, width) = frames.shape[:-3], frames.shape[-2:]
    scaled, final = processed_size(height, width, process_res)
    x = resize(resize(frames.reshape(-1, 3, height, width), scaled), final)
    return normalise(x.reshape(*lead, 3, *final))
