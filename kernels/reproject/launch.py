"""Launchers of the reprojection kernels (see triton_kernels.py); outputs may be passed in as buffers.

Each launcher builds a `Launch`; `aot_variants` builds the same launches from meta tensors of the paper's
size, so the ahead-of-time compile check compiles exactly what runs on a GPU.
"""

from __future__ import annotations

import torch
import triton

from videogpa.kernels._launch import Launch, Variant
from videogpa.kernels.reproject import triton_kernels as K
from videogpa.kernels.reproject.reference import EMPTY_KEY

CUDA_BLOCKS = (512, 1024)  # (points per program, pixels per program) on a GPU
INTERPRETER_BLOCKS = (8192, 8192)  # few, wide programs: the interpreter's cost grows with their number


def _blocks(device: torch.device) -> tuple[int, int]:
    return CUDA_BLOCKS if device.type == "cuda" else INTERPRETER_BLOCKS


def zbuffer_launch(points, intrinsics, extrinsics, height: int, width: int, zbuf, block: int) -> Launch:
    """zbuf [T·H·W] int64 (filled with EMPTY_KEY) <- atomic-min of every landing point's key."""
    args = (points, intrinsics, extrinsics, zbuf, points.shape[0], intrinsics.shape[0], height, width)
    return Launch(
        K.zbuffer_kernel,
        (triton.cdiv(points.shape[0], block),),
        (*args, extrinsics.stride(0)),
        {"BLOCK": block},
    )


def resolve_launch(
    zbuf, colors, n_views: int, n_pixels: int, block: int, *, images=None, hit=None, frames=None, partial=None
) -> Launch:
    """Render (images, hit given) or the fused per-block error sums (frames, partial given)."""
    n_blocks = triton.cdiv(n_pixels, block)
    render = images is not None
    if render:  # the pointers a variant does not use get any tensor
        pointers = (zbuf, colors, images, hit.view(torch.uint8), images, images)
    else:
        pointers = (zbuf, colors, frames, zbuf, frames, partial)
    args = (*pointers, n_pixels, n_blocks)
    flags = dict(WRITE_IMAGES=render, COMPUTE_ERROR=not render, BLOCK=block)
    return Launch(K.resolve_kernel, (n_views, n_blocks), args, flags)


def zbuffer(points, intrinsics, extrinsics, height: int, width: int) -> torch.Tensor:
    """[T·H·W] int64 z-buffer of (depth bits, point index) keys, EMPTY_KEY where nothing lands."""
    n_views = intrinsics.shape[0]
    zbuf = torch.full((n_views * height * width,), EMPTY_KEY, dtype=torch.int64, device=points.device)
    if points.shape[0]:
        zbuffer_launch(points, intrinsics, extrinsics, height, width, zbuf, _blocks(points.device)[0])()
    return zbuf


@torch.compiler.disable
def triton_render(points, colors, intrinsics, extrinsics, height, width, out_images=None, out_hit=None):
    """Kernel path of render_point_cloud; inputs already validated and made contiguous fp32."""
    n_views, device = intrinsics.shape[0], points.device
    images = torch.empty((n_views, 3, height, width), device=device) if out_images is None else out_images
    hit = (
        torch.empty((n_views, height, width), dtype=torch.bool, device=device) if out_hit is None else out_hit
    )
    zbuf = zbuffer(points, intrinsics, extrinsics, height, width)
    resolve_launch(zbuf, colors, n_views, height * width, _blocks(device)[1], images=images, hit=hit)()
    return images, hit


@torch.compiler.disable
def triton_view_errors(points, colors, intrinsics, extrinsics, frames):
    """Kernel path of reprojection_error: per-view mean squared error [T] without materialising images."""
    n_views, _, height, width = frames.shape
    n_pixels, block = height * width, _blocks(points.device)[1]
    zbuf = zbuffer(points, intrinsics, extrinsics, height, width)
    partial = torch.empty((n_views, triton.cdiv(n_pixels, block)), device=points.device)
    resolve_launch(zbuf, colors, n_views, n_pixels, block, frames=frames, partial=partial)()
    return partial.sum(dim=1) / (3 * n_pixels)


def aot_variants() -> list[Variant]:
    """Every (signature, constexprs) the launchers build on a GPU, at the paper's size (T=10 views of
    518²)."""
    meta = torch.device("meta")
    n_views, size = 10, 518
    n_points, n_pixels = n_views * size * size, size * size
    points, colors = torch.empty(n_points, 3, device=meta), torch.empty(n_points, 3, device=meta)
    intr, extr = torch.empty(n_views, 3, 3, device=meta), torch.empty(n_views, 3, 4, device=meta)
    zbuf = torch.empty(n_views * n_pixels, dtype=torch.int64, device=meta)
    point_block, pixel_block = CUDA_BLOCKS
    variants = [
        Variant(
            "zbuffer",
            zbuffer_launch(points, intr, extr, size, size, zbuf, point_block),
            ("no_membar", "one_instruction_round"),
            max_registers=80,  # ≥ 6 resident blocks of 128 threads per SM (113 registers gave 4)
        ),
        Variant(
            "resolve/render",
            resolve_launch(
                zbuf,
                colors,
                n_views,
                n_pixels,
                pixel_block,
                images=torch.empty(n_views, 3, size, size, device=meta),
                hit=torch.empty(n_views, size, size, dtype=torch.bool, device=meta),
            ),
        ),
    ]
    partial = torch.empty(n_views, triton.cdiv(n_pixels, pixel_block), device=meta)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        frames = torch.empty(n_views, 3, size, size, dtype=dtype, device=meta)
        launch = resolve_launch(zbuf, colors, n_views, n_pixels, pixel_block, frames=frames, partial=partial)
        variants.append(Variant(f"resolve/error/{dtype}", launch))
    return variants
