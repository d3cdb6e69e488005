"""Score one video's 3D consistency from a reconstruction: cloud -> reprojection -> metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from videogpa.engine.geometry.base import Geometry
from videogpa.engine.geometry.metrics import SSIM_WINDOW, consistency_score, psnr, reprojection_mse, ssim
from videogpa.engine.geometry.motion import motion_score
from videogpa.engine.geometry.mvcs import mvcs
from videogpa.engine.geometry.pointcloud import geometry_point_cloud
from videogpa.kernels.reproject import render_point_cloud, reprojection_error


@dataclass
class VideoScore:
    """score = 3DCS = mse + λ·lpips (= mse when LPIPS is off); lower is more 3D-consistent."""

    score: float
    mse: float
    lpips: float | None
    psnr: float | None
    ssim: float | None
    mvcs: float
    motion: float
    n_points: int
    coverage: float | None  # fraction of pixels some point lands on

    def as_dict(self) -> dict:
        return asdict(self)


class ReconstructionError(ValueError):
    """A reconstruction that cannot be scored (non-finite values, no usable points); the message says why."""


def _first_frames(bad: torch.Tensor, limit: int = 5) -> list[int]:
    """The first `limit` frame indices (dim 0) of a [T, ...] mask with a True anywhere."""
    return torch.nonzero(bad.reshape(bad.shape[0], -1).any(1)).flatten()[:limit].tolist()


def check_reconstruction(geometry: Geometry) -> None:
    """ReconstructionError unless depth, intrinsics and extrinsics are all finite: a NaN there would make
    every score NaN (or silently drop points) instead of an error."""
    for name in ("depth", "intrinsics", "extrinsics"):
        bad = ~torch.isfinite(getattr(geometry, name))
        if bad.any():
            raise ReconstructionError(
                f"the reconstruction's {name} has {int(bad.sum())} non-finite values (frames "
                f"{_first_frames(bad)}); expected finite values"
            )


def check_cloud(cloud: torch.Tensor, conf_thres: float, points: str) -> None:
    """ReconstructionError when the scoring cloud [N, 3] is empty or holds a non-finite point."""
    if cloud.shape[0] == 0:
        raise ReconstructionError(
            f"the reconstruction has no valid points (points={points!r}, conf_thres={conf_thres}: no finite "
            "confidence above the minimum); expected at least one"
        )
    bad = ~torch.isfinite(cloud).all(-1)
    if bad.any():
        raise ReconstructionError(
            f"{int(bad.sum())} of the reconstruction's {cloud.shape[0]} valid points are non-finite "
            f"(points={points!r}); expected finite points"
        )


def _on(geometry: Geometry, device: torch.device) -> Geometry:
    fields = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(geometry).items()}
    return Geometry(**fields)


def score_reconstruction(
    frames: torch.Tensor,
    geometry: Geometry,
    *,
    conf_thres: float = 0.0,
    points: str = "auto",
    lpips=None,
    lpips_weight: float = 1.0,
    image_metrics: bool = True,
    backend: str = "auto",
) -> VideoScore:
    """Scores of frames [T, 3, H, W] in [0, 1] given their reconstruction (same T, H, W).

    All frames' points (`points`: "auto" | "depth" | "pointmap", see geometry_point_cloud; filtered by
    conf_thres) form one cloud, rendered into every camera (nearest point,
    empty pixels black); MSE/PSNR/SSIM/LPIPS compare the renders with the frames. `lpips` is a callable
    (frames, renders) -> per-frame distances [T] (e.g. engine.geometry.lpips.LPIPS) or None (off).
    image_metrics=False computes only the MSE, with the fused kernel that never stores the renders.
    A reconstruction with non-finite depth or cameras, or without a finite valid point, is a
    ReconstructionError (check_reconstruction, check_cloud), never a score.
    """
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"score_reconstruction: frames must be [T, 3, H, W], got {tuple(frames.shape)}")
    if (frames.shape[0], *frames.shape[2:]) != tuple(geometry.depth.shape):
        raise ValueError(
            f"score_reconstruction: frames {tuple(frames.shape)} do not match the geometry's [T, H, W] = "
            f"{tuple(geometry.depth.shape)}"
        )
    if lpips is not None and not image_metrics:
        raise ValueError("score_reconstruction: LPIPS needs image_metrics=True")
    frames = frames.float()
    geometry = _on(geometry, frames.device)
    check_reconstruction(geometry)
    cloud, colors = geometry_point_cloud(geometry, frames, conf_thres, source=points)
    check_cloud(cloud, conf_thres, points)
    k, e = geometry.intrinsics, geometry.extrinsics
    common = {
        "mvcs": mvcs(geometry.depth, k, e)[0],
        "motion": motion_score(e),
        "n_points": int(cloud.shape[0]),
    }
    if not image_metrics:
        mse = float(reprojection_error(cloud, colors, k, e, frames, backend=backend).mean())
        return VideoScore(score=mse, mse=mse, lpips=None, psnr=None, ssim=None, coverage=None, **common)
    images, hit = render_point_cloud(cloud, colors, k, e, frames.shape[-2], frames.shape[-1], backend=backend)
    renders = (images + 1.0) / 2.0
    mse = reprojection_mse(frames, renders)
    lp = None if lpips is None else float(lpips(frames, renders).mean())
    return VideoScore(
        score=consistency_score(mse, lp, lpips_weight),
        mse=mse,
        lpips=lp,
        psnr=psnr(frames, renders),
        ssim=ssim(frames, renders) if min(frames.shape[-2:]) >= SSIM_WINDOW else None,
        coverage=float(hit.float().mean()),
        **common,
    )
