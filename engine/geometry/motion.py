"""Camera motion score: how much a video's camera moves (static videos are dropped from preference pairs)."""

from __future__ import annotations

import torch


def motion_score(extrinsics: torch.Tensor) -> float:
    """mean_i ‖t_{i+1} − t_i‖ + 0.1 · mean_i arccos(clamp((tr(R_{i+1} R_iᵀ) − 1)/2, −1, 1)),
    in fp32.

    extrinsics [T, 3, 4] or [T, 4, 4] world-to-camera; uses the raw translations t (not camera centres) as
    the authors do. NaN (e.g. T = 1) becomes 0.
    """
    if extrinsics.ndim != 3 or extrinsics.shape[1:] not in ((3, 4), (4, 4)):
        raise ValueError(
            f"motion_score: extrinsics must be [T, 3, 4] or [T, 4, 4], got {tuple(extrinsics.shape)}"
        )
    extrinsics = extrinsics.float()
    rot, trans = extrinsics[:, :3, :3], extrinsics[:, :3, 3]
    step = torch.linalg.vector_norm(trans[1:] - trans[:-1], dim=-1).mean()
    relative = rot[1:] @ rot[:-1].transpose(1, 2)
    trace = relative.diagonal(dim1=1, dim2=2).sum(-1)
    angle = torch.arccos(torch.clamp((trace - 1.0) / 2.0, -1.0, 1.0)).mean()
    return float(torch.nan_to_num(step + 0.1 * angle, nan=0.0))
