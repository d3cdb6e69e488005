"""Image agreement metrics between a video's frames and their reprojections (both [T, 3, H, W] in [0, 1])."""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
MIN_MSE = 1e-10


def _pair(frames: torch.Tensor, reprojections: torch.Tensor, op: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes; resize the reprojections bilinearly (align_corners=False) if the sizes differ."""
    for name, t in (("frames", frames), ("reprojections", reprojections)):
        if t.ndim != 4 or t.shape[1] != 3:
            raise ValueError(f"{op}: {name} must be [T, 3, H, W] in [0, 1], got {tuple(t.shape)}")
    if frames.shape[0] != reprojections.shape[0]:
        raise ValueError(f"{op}: {frames.shape[0]} frames but {reprojections.shape[0]} reprojections")
    reprojections = reprojections.float()
    if reprojections.shape[-2:] != frames.shape[-2:]:
        reprojections = F.interpolate(
            reprojections, size=frames.shape[-2:], mode="bilinear", align_corners=False
        )
    return frames.float(), reprojections


def reprojection_mse(frames: torch.Tensor, reprojections: torch.Tensor) -> float:
    """MSE = mean over T·3·H·W of (reprojection − frame)², in fp32."""
    frames, reprojections = _pair(frames, reprojections, "reprojection_mse")
    return float(((reprojections - frames) ** 2).mean())


def psnr(frames: torch.Tensor, reprojections: torch.Tensor) -> float:
    """Mean over frames of 10·log10(1 / MSE_t), MSE_t the per-frame mean squared error (floored at 1e-10)."""
    frames, reprojections = _pair(frames, reprojections, "psnr")
    per_frame = ((reprojections - frames) ** 2).flatten(1).mean(dim=1).clamp(min=MIN_MSE)
    return float((-10.0 * torch.log10(per_frame)).mean())


def _gaussian_window(device: torch.device) -> torch.Tensor:
    x = torch.arange(SSIM_WINDOW, dtype=torch.float32, device=device) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, SSIM_WINDOW, SSIM_WINDOW)


def ssim(frames: torch.Tensor, reprojections: torch.Tensor) -> float:
    """Mean SSIM: 11×11 Gaussian window (σ = 1.5) per channel, valid positions only, data range 1.

    SSIM = ((2μ_xμ_y + C1)(2σ_xy + C2)) / ((μ_x² + μ_y² + C1)(σ_x² + σ_y² + C2)),
    C1 = 0.01², C2 = 0.03².
    """
    frames, reprojections = _pair(frames, reprojections, "ssim")
    if min(frames.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"ssim: frames must be at least {SSIM_WINDOW}×{SSIM_WINDOW}, got {tuple(frames.shape[-2:])}"
        )
    window = _gaussian_window(frames.device)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, groups=3)

    mu_x, mu_y = blur(frames), blur(reprojections)
    var_x = blur(frames * frames) - mu_x**2
    var_y = blur(reprojections * reprojections) - mu_y**2
    cov = blur(frames * reprojections) - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(value.mean())


def consistency_score(mse: float, lpips: float | None, lpips_weight: float = 1.0) -> float:
    """3DCS = MSE + λ·LPIPS (λ = 1, the authors' default); lower is more 3D-consistent. LPIPS None ->
    MSE."""
    return mse if lpips is None else mse + lpips_weight * lpips
