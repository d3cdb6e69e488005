"""Launchers of the reprojection kernels (see triton_kernels.py); outputs may be passed in as buffers."""

from __future__ import annotations

import torch
import triton

from videogpa.kernels.reproject import triton_kernels as K
from videogpa.kernels.reproject.reference import EMPTY_KEY


def _blocks(device: torch.device) -> tuple[int, int]:
    """(points per program, pixels per program): GPU-sized, or few wide programs for the interpreter."""
    return (1024, 1024) if device.type == "cuda" else (8192, 8192)


def zbuffer(points, intrinsics, extrinsics, height: int, width: int) -> torch.Tensor:
    """[T·H·W] int64 z-buffer of (depth bits, point index) keys, EMPTY_KEY where nothing lands."""
    n_views, n_points = intrinsics.shape[0], points.shape[0]
    zbuf = torch.full((n_views * height * width,), EMPTY_KEY, dtype=torch.int64, device=points.device)
    if n_points:
        block = _blocks(points.device)[0]
        K.zbuffer_kernel[(triton.cdiv(n_points, block),)](
            points,
            intrinsics,
            extrinsics,
            zbuf,
            n_points,
            n_views,
            height,
            width,
            extrinsics.stride(0),
            BLOCK=block,
        )
    return zbuf


@torch.compiler.disable
def triton_render(points, colors, intrinsics, extrinsics, height, width, out_images=None, out_hit=None):
    """Kernel path of render_point_cloud; inputs already validated and made contiguous fp32 (colours any float)."""
    n_views, n_pixels = intrinsics.shape[0], height * width
    device = points.device
    images = torch.empty((n_views, 3, height, width), device=device) if out_images is None else out_images
    hit = (
        torch.empty((n_views, height, width), dtype=torch.bool, device=device) if out_hit is None else out_hit
    )
    zbuf = zbuffer(points, intrinsics, extrinsics, height, width)
    block = _blocks(device)[1]
    n_blocks = triton.cdiv(n_pixels, block)
    K.resolve_kernel[(n_views, n_blocks)](
        zbuf, colors, images, hit.view(torch.uint8), images, images, n_pixels, n_blocks,
        WRITE_IMAGES=True, COMPUTE_ERROR=False, BLOCK=block,
    )  # fmt: skip
    return images, hit


@torch.compiler.disable
def triton_view_errors(points, colors, intrinsics, extrinsics, frames):
    """Kernel path of reprojection_error: per-view mean squared error [T] without materialising images."""
    n_views, _, height, width = frames.shape
    n_pixels = height * width
    block = _blocks(points.device)[1]
    n_blocks = triton.cdiv(n_pixels, block)
    zbuf = zbuffer(points, intrinsics, extrinsics, height, width)
    partial = torch.empty((n_views, n_blocks), device=points.device)
    K.resolve_kernel[(n_views, n_blocks)](
        zbuf, colors, frames, zbuf, frames, partial, n_pixels, n_blocks,
        WRITE_IMAGES=False, COMPUTE_ERROR=True, BLOCK=block,
    )  # fmt: skip
    return partial.sum(dim=1) / (3 * n_pixels)
