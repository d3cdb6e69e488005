"""2D rotary position embedding: row position on the first half of each head, column on the second."""

from __future__ import annotations

import torch


def patch_positions(grid_h: int, grid_w: int, num_special: int, device: torch.device) -> torch.Tensor:
    """(row, col) positions [num_special + grid_h·grid_w, 2]: special tokens (0, 0), patches (y+1, x+1)."""
    ys = torch.arange(1, grid_h + 1, device=device).repeat_interleave(grid_w)
    xs = torch.arange(1, grid_w + 1, device=device).repeat(grid_h)
    special = torch.zeros(num_special, 2, dtype=torch.long, device=device)
    return torch.cat([special, torch.stack([ys, xs], dim=-1)])


def rope_tables(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [N, head_dim] for positions [N, 2]; per half the angles are [pω, pω],
    ω_k = base^(−4k/D)."""
    half = head_dim // 2
    omega = 1.0 / base ** (torch.arange(0, half, 2, device=positions.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[..., None] * omega  # [N, 2, D/4]
    angles = torch.cat([angles, angles], dim=-1).flatten(-2)  # [N, D]: row half, then column half
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [..., N, D] with "rotate-half" inside each of its two halves."""
    quarters = x.unflatten(-1, (2, 2, -1))  # [..., half, sub, D/4]
    rotated = torch.stack([-quarters[..., 1, :], quarters[..., 0, :]], dim=-2).flatten(-3)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)
