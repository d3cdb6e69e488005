"""Depth maps + cameras → world points, as the VGGT reference returns them (float64)."""

from __future__ import annotations

import torch

from videogpa.engine.geometry.pointcloud import unproject_depth


def depth_to_world_points(
    depth: torch.Tensor, extrinsics: torch.Tensor, intrinsics: torch.Tensor
) -> torch.Tensor:
    """depth [S, H, W] or [S, H, W, 1], world-to-camera [S, 3, 4], K [S, 3, 3] → points [S, H, W, 3]
    float64."""
    if depth.ndim == 4 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    return unproject_depth(depth, intrinsics, extrinsics, dtype=torch.float64)
