"""videogpa.kernels: Triton kernels with plain-PyTorch references (a leaf: torch and triton only)."""

from videogpa.kernels.dpo_loss import (
    LOSS_TYPES,
    DiffusionDPOLoss,
    DPOOutput,
    diffusion_dpo_loss,
    per_sample_mse,
)
from videogpa.kernels.reproject import render_point_cloud, reprojection_error

__all__ = [
    "LOSS_TYPES",
    "DPOOutput",
    "DiffusionDPOLoss",
    "diffusion_dpo_loss",
    "per_sample_mse",
    "render_point_cloud",
    "reprojection_error",
]
