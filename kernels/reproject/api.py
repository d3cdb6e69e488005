"""Public entry points of the point-cloud reprojection: input checks and backend dispatch."""

from __future__ import annotations

import torch

from videogpa.kernels._backend import resolve_backend
from videogpa.kernels.reproject.reference import reference_render, reference_view_errors

_OP = "render_point_cloud"


def _check(name: str, t, shapes: tuple[tuple[int | None, ...], ...]) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{_OP}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{_OP}: {name} must have a floating dtype, got {t.dtype}")
    fits = any(t.ndim == len(s) and all(e is None or e == d for e, d in zip(s, t.shape)) for s in shapes)
    if not fits:
        wanted = " or ".join("[" + ", ".join("*" if e is None else str(e) for e in s) + "]" for s in shapes)
        raise ValueError(f"{_OP}: {name} must have shape {wanted}, got {tuple(t.shape)}")


def prepare_inputs(points, colors, intrinsics, extrinsics, height, width):
    """Validate; return contiguous fp32 points, colours and cameras (3×4 extrinsics).

    Colours are read as fp32 (a bf16/fp16 cloud is converted exactly, once): one compiled kernel variant."""
    _check("points", points, ((None, 3),))
    _check("colors", colors, ((points.shape[0], 3),))
    _check("intrinsics", intrinsics, ((None, 3, 3),))
    n_views = intrinsics.shape[0]
    _check("extrinsics", extrinsics, ((n_views, 3, 4), (n_views, 4, 4)))
    if n_views == 0:
        raise ValueError(f"{_OP}: need at least one view, got intrinsics of shape {tuple(intrinsics.shape)}")
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{_OP}: {name} must be a positive int, got {value!r}")
    if points.shape[0] >= 2**31:
        raise ValueError(f"{_OP}: at most 2**31 - 1 points are supported, got {points.shape[0]}")
    if height * width >= 2**31:
        raise ValueError(f"{_OP}: at most 2**31 - 1 pixels per view are supported, got {height}x{width}")
    for name, t in (("colors", colors), ("intrinsics", intrinsics), ("extrinsics", extrinsics)):
        if t.device != points.device:
            raise ValueError(f"{_OP}: {name} is on {t.device}, points on {points.device}")
    return (
        points.float().contiguous(),
        colors.float().contiguous(),
        intrinsics.float().contiguous(),
        extrinsics[:, :3, :].float().contiguous(),
    )


def render_point_cloud(
    points: torch.Tensor,
    colors: torch.Tensor,
    intrinsics: torch.Tensor,
    extrinsics: torch.Tensor,
    height: int,
    width: int,
    *,
    backend: str = "auto",
    out_images: torch.Tensor | None = None,
    out_hit: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render a coloured point cloud into T cameras, nearest point per pixel, deterministically.

    points [N, 3] world coordinates, colors [N, 3] in [0, 1], intrinsics [T, 3, 3], extrinsics [T, 3, 4] or
    [T, 4, 4] world-to-camera (x_cam = R·X + t). Pixel (u, v) = round(K·x_cam / z) (half to even), kept when
    inside the image and z > 0; the smallest z wins, equal depths go to the lower point index.
    Returns images [T, 3, H, W] fp32 with values ⌊255·c⌋/255·2 − 1 (black = −1 where nothing lands)
    and hit [T, H, W] bool. backend: "auto" (Triton on CUDA tensors, reference on CPU), "triton" or "torch".
    """
    points, colors, intrinsics, extrinsics = prepare_inputs(
        points, colors, intrinsics, extrinsics, height, width
    )
    n_views = intrinsics.shape[0]
    _check_out("out_images", out_images, (n_views, 3, height, width), torch.float32, points.device)
    _check_out("out_hit", out_hit, (n_views, height, width), torch.bool, points.device)
    if resolve_backend(backend, points, op=_OP) == "torch":
        images, hit = reference_render(points, colors, intrinsics, extrinsics, height, width)
        if out_images is not None:
            images = out_images.copy_(images)
        if out_hit is not None:
            hit = out_hit.copy_(hit)
        return images, hit
    from videogpa.kernels.reproject.launch import triton_render

    return triton_render(points, colors, intrinsics, extrinsics, height, width, out_images, out_hit)


def reprojection_error(
    points: torch.Tensor,
    colors: torch.Tensor,
    intrinsics: torch.Tensor,
    extrinsics: torch.Tensor,
    frames: torch.Tensor,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Per-view mean over 3·H·W of (render in [0, 1] − frame)², fp32 [T], without materialising the
    images.

    frames [T, 3, H, W] in [0, 1] (any float dtype); the render is render_point_cloud's images mapped by
    (x + 1)/2, i.e. ⌊255·c⌋/255 with black (0) where no point lands.
    """
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"reprojection_error: frames must be a [T, 3, H, W] tensor, got {shape}")
    n_views, _, height, width = frames.shape
    points, colors, intrinsics, extrinsics = prepare_inputs(
        points, colors, intrinsics, extrinsics, height, width
    )
    if intrinsics.shape[0] != n_views:
        raise ValueError(
            f"reprojection_error: frames have {n_views} views, the cameras {intrinsics.shape[0]}"
        )
    if not frames.is_floating_point() or frames.device != points.device:
        raise ValueError(f"reprojection_error: frames must be floating and on {points.device}")
    frames = frames.contiguous()
    if resolve_backend(backend, points, op="reprojection_error") == "torch":
        return reference_view_errors(points, colors, intrinsics, extrinsics, frames)
    from videogpa.kernels.reproject.launch import triton_view_errors

    return triton_view_errors(points, colors, intrinsics, extrinsics, frames)


def _check_out(name, out, shape, dtype, device) -> None:
    if out is None:
        return
    if tuple(out.shape) != shape or out.dtype != dtype or out.device != device or not out.is_contiguous():
        raise ValueError(
            f"{_OP}: {name} must be a contiguous {dtype} tensor of shape {shape} on {device}, "
            f"got {out.dtype} {tuple(out.shape)} on {out.device}"
        )
