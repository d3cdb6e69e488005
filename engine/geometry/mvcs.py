"""Multi-view consistency score (MVCS) of depth maps and cameras."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _as_4x4(extrinsics: torch.Tensor) -> torch.Tensor:
    if extrinsics.shape[1:] == (4, 4):
        return extrinsics
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=extrinsics.dtype, device=extrinsics.device)
    return torch.cat([extrinsics, bottom.expand(extrinsics.shape[0], 1, 4)], dim=1)


def pair_depth_error(depth_i, depth_j, k_i, k_j, e_i, e_j) -> tuple[float, int]:
    """(mean squared depth disagreement, valid pixel count) of view i warped into view j.

    P = K_i⁻¹·[u, v, 1]ᵀ·d_i, P' = (E_j E_i⁻¹)·P, d_proj = P'_z,
    (u', v') = (K_j P')_xy / max(w, 1e-8); d_j sampled bilinearly (align_corners=True, zero padding) at
    (u', v'); valid where 0 ≤ u' < W, 0 ≤ v' < H and d_proj > 0.
    """
    height, width = depth_i.shape
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=depth_i.device),
        torch.arange(width, dtype=torch.float32, device=depth_i.device),
        indexing="ij",
    )
    pixels = torch.stack([u, v, torch.ones_like(u)], dim=-1).reshape(-1, 3)
    cam = (pixels @ torch.linalg.inv(k_i).T) * depth_i.reshape(-1, 1)
    relative = e_j @ torch.linalg.inv(e_i)
    moved = cam @ relative[:3, :3].T + relative[:3, 3]
    d_proj = moved[:, 2]
    proj = moved @ k_j.T
    w = torch.clamp(proj[:, 2], min=1e-8)
    u2, v2 = proj[:, 0] / w, proj[:, 1] / w
    grid = torch.stack([2.0 * u2 / (width - 1) - 1.0, 2.0 * v2 / (height - 1) - 1.0], dim=-1).view(
        1, 1, -1, 2
    )
    sampled = F.grid_sample(
        depth_j[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    sampled = sampled.reshape(-1)
    mask = (u2 >= 0) & (u2 < width) & (v2 >= 0) & (v2 < height) & (d_proj > 0)
    count = int(mask.sum())
    if count == 0:
        return float("nan"), 0
    return float(((sampled[mask] - d_proj[mask]) ** 2).mean()), count


def mvcs(
    depths: torch.Tensor, intrinsics: torch.Tensor, extrinsics: torch.Tensor
) -> tuple[float, list[float]]:
    """(MVCS, per-pair errors): MVCS = exp(−mean over consecutive pairs with valid pixels of
    pair_depth_error).

    depths [T, H, W] (or [T, H, W, 1]), intrinsics [T, 3, 3] (or 4×4), extrinsics [T, 3, 4] or [T, 4, 4]
    world-to-camera. Pairs without valid pixels are skipped; 0.0 when none has any. Higher is better.
    """
    if depths.ndim == 4 and depths.shape[-1] == 1:
        depths = depths[..., 0]
    if depths.ndim != 3:
        raise ValueError(f"mvcs: depths must be [T, H, W] or [T, H, W, 1], got {tuple(depths.shape)}")
    n_views = depths.shape[0]
    if intrinsics.shape not in ((n_views, 3, 3), (n_views, 4, 4)):
        raise ValueError(f"mvcs: intrinsics must be [{n_views}, 3, 3], got {tuple(intrinsics.shape)}")
    if extrinsics.shape not in ((n_views, 3, 4), (n_views, 4, 4)):
        raise ValueError(
            f"mvcs: extrinsics must be [{n_views}, 3, 4] or [{n_views}, 4, 4], got {tuple(extrinsics.shape)}"
        )
    depths, k, e = depths.float(), intrinsics[:, :3, :3].float(), _as_4x4(extrinsics.float())
    errors = []
    for i in range(n_views - 1):
        error, count = pair_depth_error(depths[i], depths[i + 1], k[i], k[i + 1], e[i], e[i + 1])
        if count:
            errors.append(error)
    if not errors:
        return 0.0, []
    return math.exp(-math.fsum(errors) / len(errors)), errors
