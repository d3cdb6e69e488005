"""Fused Diffusion-DPO loss: Triton kernels, the plain-PyTorch reference and the public API."""

from videogpa.kernels.dpo_loss.api import DiffusionDPOLoss, DPOOutput, diffusion_dpo_loss
from videogpa.kernels.dpo_loss.reference import LOSS_TYPES, per_sample_mse

__all__ = ["LOSS_TYPES", "DPOOutput", "DiffusionDPOLoss", "diffusion_dpo_loss", "per_sample_mse"]
