"""The paper's VGGT input: T frames sampled uniformly, centre-cropped to a square, resized to the model size."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def uniform_frame_indices(num_frames: int, count: int) -> list[int]:
    """`count` indices spread evenly over 0…num_frames−1, first and last included (all frames if fewer)."""
    if num_frames < 1 or count < 1:
        raise ValueError(f"num_frames and count must be >= 1, got {num_frames} and {count}")
    if count >= num_frames:
        return list(range(num_frames))
    if count == 1:
        return [0]
    return [round(i * (num_frames - 1) / (count - 1)) for i in range(count)]


def center_crop_resize(frames: torch.Tensor, size: int) -> torch.Tensor:
    """frames [T, 3, H, W] in [0, 1] → centre square crop resized (bicubic, antialiased) to [T, 3, size, size]."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be [T, 3, H, W], got {tuple(frames.shape)}")
    h, w = frames.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = frames[..., top : top + side, left : left + side].float()
    if side == size:
        return square
    return F.interpolate(square, size=(size, size), mode="bicubic", antialias=True).clamp_(0.0, 1.0)


def prepare_video(frames: torch.Tensor, num_frames: int, size: int) -> torch.Tensor:
    """A whole video [N, 3, H, W] in [0, 1] → the VGGT input [num_frames, 3, size, size]."""
    if frames.ndim != 4:
        raise ValueError(f"frames must be [N, 3, H, W], got {tuple(frames.shape)}")
    return center_crop_resize(frames[uniform_frame_indices(frames.shape[0], num_frames)], size)
