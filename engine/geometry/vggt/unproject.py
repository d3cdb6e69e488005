"""Depth maps + cameras → world points (the reference returns float64)."""

from __future__ import annotations

import torch


def depth_to_world_points(
    depth: torch.Tensor, extrinsics: torch.Tensor, intrinsics: torch.Tensor
) -> torch.Tensor:
    """depth [S, H, W] or [S, H, W, 1], world-to-camera [S, 3, 4], K [S, 3, 3] → points [S, H, W, 3] float64.

    Pixel (u = column, v = row) at depth d → X_cam = ((u − c_x)·d/f_x, (v − c_y)·d/f_y, d), rounded to
    float32 like the reference, then X_world = Rᵀ(X_cam − t) in float64.
    """
    if depth.ndim == 4 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 3:
        raise ValueError(f"depth must be [S, H, W] or [S, H, W, 1], got {tuple(depth.shape)}")
    s, h, w = depth.shape
    if tuple(extrinsics.shape) != (s, 3, 4) or tuple(intrinsics.shape) != (s, 3, 3):
        raise ValueError(
            f"extrinsics must be [{s}, 3, 4] and intrinsics [{s}, 3, 3] for depth {tuple(depth.shape)}, got "
            f"{tuple(extrinsics.shape)} and {tuple(intrinsics.shape)}"
        )
    d = depth.to(torch.float64)
    k = intrinsics.to(torch.float64)[:, :, :, None, None]  # [S, 3, 3, 1, 1]
    u = torch.arange(w, dtype=torch.float64, device=depth.device)
    v = torch.arange(h, dtype=torch.float64, device=depth.device)[:, None]
    x_cam = (u - k[:, 0, 2]) * d / k[:, 0, 0]
    y_cam = (v - k[:, 1, 2]) * d / k[:, 1, 1]
    cam = torch.stack([x_cam, y_cam, d], dim=-1).to(torch.float32).to(torch.float64)
    ext = extrinsics.to(torch.float64)
    rot, trans = ext[:, None, None, :, :3], ext[:, None, None, :, 3]
    return ((cam - trans)[..., None, :] @ rot)[..., 0, :]
