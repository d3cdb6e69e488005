"""Point clouds from a reconstruction: depth unprojection and confidence-percentile filtering."""

from __future__ import annotations

import math

import torch

from videogpa.engine.geometry.base import Geometry

MIN_VALID_CONF = 1e-5


def unproject_depth(
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    extrinsics: torch.Tensor,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """World points [T, H, W, 3]: X_cam = ((u − c_x)·d/f_x, (v − c_y)·d/f_y, d),
    X_world = Rᵀ(X_cam − t).

    depth [T, H, W], intrinsics [T, 3, 3], extrinsics [T, 3, 4] or [T, 4, 4] world-to-camera; u is the
    column, v the row. Camera coordinates are rounded to float32 (as the authors' routine does); the world
    transform runs in `dtype` (their numpy routine returns float64).
    """
    if depth.ndim != 3:
        raise ValueError(f"unproject_depth: depth must be [T, H, W], got {tuple(depth.shape)}")
    n_views, height, width = depth.shape
    if intrinsics.shape != (n_views, 3, 3) or extrinsics.shape not in ((n_views, 3, 4), (n_views, 4, 4)):
        raise ValueError(
            f"unproject_depth: expected intrinsics [{n_views}, 3, 3] and extrinsics [{n_views}, 3, 4], got "
            f"{tuple(intrinsics.shape)} and {tuple(extrinsics.shape)}"
        )
    wide = torch.promote_types(dtype, torch.float32)
    d = depth.to(wide)
    k = intrinsics.to(wide)[:, :, :, None, None]
    u = torch.arange(width, device=depth.device, dtype=wide)
    v = torch.arange(height, device=depth.device, dtype=wide)[:, None]
    cam = torch.stack([(u - k[:, 0, 2]) * d / k[:, 0, 0], (v - k[:, 1, 2]) * d / k[:, 1, 1], d], -1)
    cam = cam.to(torch.float32).to(dtype)
    rot, trans = extrinsics[:, :3, :3].to(dtype), extrinsics[:, :3, 3].to(dtype)
    return torch.einsum("tji,thwj->thwi", rot, cam - trans[:, None, None, :])


def confidence_mask(conf: torch.Tensor, conf_thres: float) -> torch.Tensor:
    """Keep mask (same shape as conf) by the authors' conf_thres rule.

    Valid: finite and conf > 1e-5. conf_thres ≤ 0 keeps every valid point; conf_thres = p > 0 keeps the
    valid points with conf ≥ the k-th largest valid confidence,
    k = max(1, ⌈N·clamp(1 − p/100, 0, 1)⌉).
    """
    valid = torch.isfinite(conf) & (conf > MIN_VALID_CONF)
    n_valid = int(valid.sum())
    if conf_thres <= 0 or n_valid == 0:
        return valid
    k = max(1, math.ceil(n_valid * min(max(1.0 - conf_thres / 100.0, 0.0), 1.0)))
    threshold = torch.topk(conf[valid], k).values[-1]
    return valid & (conf >= threshold)


def colored_point_cloud(
    world_points: torch.Tensor,
    images: torch.Tensor,
    conf: torch.Tensor | None = None,
    conf_thres: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(points [N, 3], colours [N, 3] in [0, 1]) from world points [T, H, W, 3] and images [T, 3, H, W].

    Points are taken frame-major then row-major; conf [T, H, W] (all ones when None) filters them through
    confidence_mask(conf, conf_thres).
    """
    if world_points.ndim != 4 or world_points.shape[-1] != 3:
        raise ValueError(
            f"colored_point_cloud: world_points must be [T, H, W, 3], got {tuple(world_points.shape)}"
        )
    n_views, height, width, _ = world_points.shape
    if tuple(images.shape) != (n_views, 3, height, width):
        raise ValueError(
            f"colored_point_cloud: images must be [{n_views}, 3, {height}, {width}] to match world_points, "
            f"got {tuple(images.shape)}"
        )
    if conf is None:
        conf = torch.ones(n_views, height, width, device=world_points.device)
    elif tuple(conf.shape) != (n_views, height, width):
        raise ValueError(
            f"colored_point_cloud: conf must be [{n_views}, {height}, {width}], got {tuple(conf.shape)}"
        )
    keep = confidence_mask(conf.reshape(-1), conf_thres)
    points = world_points.reshape(-1, 3)[keep]
    colors = images.permute(0, 2, 3, 1).reshape(-1, 3)[keep]
    return points, colors


POINT_SOURCES = ("auto", "depth", "pointmap")


def geometry_point_cloud(
    geometry: Geometry, frames: torch.Tensor, conf_thres: float = 0.0, source: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The scoring cloud of one video, coloured by frames [T, 3, H, W] in [0, 1].

    source "auto" (the paper's pipeline): the model's world points (its unprojected depth when it has none)
    with the depth confidence; "depth": always the unprojected depth, depth confidence; "pointmap": the
    world points with their own confidence (the authors' mode="pointmap").
    """
    if source not in POINT_SOURCES:
        raise ValueError(f"geometry_point_cloud: source must be one of {POINT_SOURCES}, got {source!r}")
    if source == "pointmap":
        if geometry.world_points is None:
            raise ValueError("geometry_point_cloud: source='pointmap' but the geometry has no world_points")
        return colored_point_cloud(geometry.world_points, frames, geometry.world_points_conf, conf_thres)
    points = geometry.world_points if source == "auto" else None
    if points is None:
        points = unproject_depth(geometry.depth, geometry.intrinsics, geometry.extrinsics)
    return colored_point_cloud(points, frames, geometry.depth_conf, conf_thres)
