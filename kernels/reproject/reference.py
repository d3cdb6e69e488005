"""Plain-PyTorch reference of the nearest-point reprojection: a z-buffer built with scatter_reduce("amin").

Conventions (the authors' batch_reproject): x_cam = R·X + t, p = K·x_cam (computed as p = P·[X; 1] with
P = K·[R|t] folded per view, as the kernel does), z = p_z,
u = round(p_x / (z + 1e-8)), v = round(p_y / (z + 1e-8)) with round-half-to-even; a point lands when
0 ≤ u < W, 0 ≤ v < H and z > 0. The nearest point (smallest z) wins a pixel; equal depths go to the lower
point index. Colours c in [0, 1] are quantised to q = ⌊clamp(255·c, 0, 255)⌋ (uint8 truncation) and
written as q/255·2 − 1; empty pixels are black (−1).

The elementwise formulas below are written in the same order as the Triton kernel so both give the same
bits (on a GPU, FMA contraction may still move a point that sits within an ulp of a rounding boundary).
"""

from __future__ import annotations

import torch

EMPTY_KEY = torch.iinfo(torch.int64).max
DEPTH_EPS = 1e-8


def projection_matrices(intrinsics: torch.Tensor, extrinsics: torch.Tensor) -> torch.Tensor:
    """P = K·[R|t], [T, 3, 4] fp32, written out elementwise in the kernel's order (no matmul summation
    order)."""
    k, e = intrinsics, extrinsics[:, :3, :]
    rows = [
        k[:, i, 0, None] * e[:, 0] + k[:, i, 1, None] * e[:, 1] + k[:, i, 2, None] * e[:, 2] for i in range(3)
    ]
    return torch.stack(rows, dim=1)


def project(points: torch.Tensor, intrinsics: torch.Tensor, extrinsics: torch.Tensor):
    """(z, u, v), each [T, N] fp32: projective depth and rounded pixel coordinates of every point in every
    view."""
    x, y, w = (c[None, :] for c in points.unbind(-1))
    p = projection_matrices(intrinsics, extrinsics)
    px, py, pz = (
        p[:, i, 0, None] * x + p[:, i, 1, None] * y + p[:, i, 2, None] * w + p[:, i, 3, None]
        for i in range(3)
    )
    denom = pz + DEPTH_EPS
    return pz, torch.round(px / denom), torch.round(py / denom)


def depth_keys(z: torch.Tensor) -> torch.Tensor:
    """int64 keys (float bits of z > 0, point index) whose minimum is the nearest point, lowest index on
    ties."""
    index = torch.arange(z.shape[-1], device=z.device, dtype=torch.int64)
    return (z.contiguous().view(torch.int32).to(torch.int64) << 32) | index


def reference_zbuffer(points, intrinsics, extrinsics, height: int, width: int) -> torch.Tensor:
    """[T, H, W] int64 z-buffer of keys (EMPTY_KEY where no point lands)."""
    n_views = intrinsics.shape[0]
    z, u, v = project(points, intrinsics, extrinsics)
    lands = (z > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    view = torch.arange(n_views, device=points.device)[:, None].expand_as(z)
    flat = (view * height + v.where(lands, 0).long()) * width + u.where(lands, 0).long()
    zbuf = torch.full((n_views * height * width,), EMPTY_KEY, dtype=torch.int64, device=points.device)
    zbuf.scatter_reduce_(0, flat[lands], depth_keys(z)[lands], reduce="amin")
    return zbuf.view(n_views, height, width)


def quantize(colors: torch.Tensor) -> torch.Tensor:
    """The authors' uint8 truncation of colours in [0, 1], as fp32 levels q = ⌊clamp(255·c, 0, 255)⌋."""
    return torch.floor(torch.clamp(colors.float() * 255.0, 0.0, 255.0))


def resolve(zbuf: torch.Tensor, colors: torch.Tensor):
    """(images [T, 3, H, W] in [−1, 1], hit [T, H, W] bool) from a z-buffer of keys."""
    hit = zbuf != EMPTY_KEY
    # last row: background
    palette = torch.cat([quantize(colors), colors.new_zeros(1, 3, dtype=torch.float32)])
    levels = palette[torch.where(hit, zbuf & 0xFFFFFFFF, colors.shape[0])]  # [T, H, W, 3]
    images = levels / 255.0 * 2.0 - 1.0
    return images.permute(0, 3, 1, 2).contiguous(), hit


def reference_render(points, colors, intrinsics, extrinsics, height: int, width: int):
    """Nearest-point render of the cloud into every view -> (images [T, 3, H, W], hit [T, H, W])."""
    if points.shape[0] == 0:
        zbuf = torch.full(
            (intrinsics.shape[0], height, width), EMPTY_KEY, dtype=torch.int64, device=points.device
        )
    else:
        zbuf = reference_zbuffer(points, intrinsics, extrinsics, height, width)
    return resolve(zbuf, colors)


def reference_view_errors(points, colors, intrinsics, extrinsics, frames):
    """Per-view mean over 3·H·W of (reprojection in [0, 1] − frame)², fp32 [T]."""
    images, _ = reference_render(points, colors, intrinsics, extrinsics, frames.shape[-2], frames.shape[-1])
    diff = (images + 1.0) / 2.0 - frames.float()
    return (diff * diff).flatten(1).mean(dim=1)
