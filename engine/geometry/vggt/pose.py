"""Pose encoding (t_xyz, q_xyzw, fov_h, fov_w) ↔ world-to-camera extrinsics [.., 3, 4] and intrinsics."""

from __future__ import annotations

import torch


def quaternion_to_matrix(quat: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] from quaternions [..., 4] (x, y, z, w), not necessarily unit
    (2/|q|²)."""
    x, y, z, w = quat.unbind(-1)
    s = 2.0 / (quat * quat).sum(-1)
    rows = (
        1 - s * (y * y + z * z),
        s * (x * y - z * w),
        s * (x * z + y * w),
        s * (x * y + z * w),
        1 - s * (x * x + z * z),
        s * (y * z - x * w),
        s * (x * z - y * w),
        s * (y * z + x * w),
        1 - s * (x * x + y * y),
    )
    return torch.stack(rows, dim=-1).unflatten(-1, (3, 3))


def matrix_to_quaternion(rot: torch.Tensor) -> torch.Tensor:
    """Unit quaternions [..., 4] (x, y, z, w) with w ≥ 0 from rotation matrices [..., 3, 3]."""
    m = rot.unbind(-2)  # rows
    r00, r01, r02 = m[0].unbind(-1)
    r10, r11, r12 = m[1].unbind(-1)
    r20, r21, r22 = m[2].unbind(-1)
    # Four candidate solutions; pick, per matrix, the one whose divisor is largest (numerically stable).
    sq = torch.stack(
        [1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22, 1 + r00 + r11 + r22], dim=-1
    )
    root = sq.clamp_min(1e-12).sqrt()  # 2·|x|, 2·|y|, 2·|z|, 2·|w| of each candidate
    candidates = torch.stack(
        [
            torch.stack([root[..., 0] ** 2, r01 + r10, r02 + r20, r21 - r12], dim=-1),
            torch.stack([r01 + r10, root[..., 1] ** 2, r12 + r21, r02 - r20], dim=-1),
            torch.stack([r02 + r20, r12 + r21, root[..., 2] ** 2, r10 - r01], dim=-1),
            torch.stack([r21 - r12, r02 - r20, r10 - r01, root[..., 3] ** 2], dim=-1),
        ],
        dim=-2,
    ) / (2 * root[..., None])
    best = sq.argmax(dim=-1)
    quat = candidates.gather(-2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    return torch.where(quat[..., 3:] < 0, -quat, quat)


def pose_encoding_to_cameras(
    pose_enc: torch.Tensor, image_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., 9] → (world-to-camera extrinsics [..., 3, 4], intrinsics [..., 3, 3], centred principal pt)."""
    if pose_enc.shape[-1] != 9:
        raise ValueError(
            f"pose_enc must end in 9 values (t, q_xyzw, fov_h, fov_w), got {tuple(pose_enc.shape)}"
        )
    h, w = image_hw
    extrinsics = torch.cat([quaternion_to_matrix(pose_enc[..., 3:7]), pose_enc[..., :3, None]], dim=-1)
    fy = (h / 2.0) / torch.tan(pose_enc[..., 7] / 2.0)
    fx = (w / 2.0) / torch.tan(pose_enc[..., 8] / 2.0)
    intrinsics = pose_enc.new_zeros(*pose_enc.shape[:-1], 3, 3)
    intrinsics[..., 0, 0] = fx
    intrinsics[..., 1, 1] = fy
    intrinsics[..., 0, 2] = w / 2.0
    intrinsics[..., 1, 2] = h / 2.0
    intrinsics[..., 2, 2] = 1.0
    return extrinsics, intrinsics


def cameras_to_pose_encoding(
    extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of pose_encoding_to_cameras: ([..., 3, 4], [..., 3, 3]) → [..., 9]."""
    if extrinsics.shape[-2:] != (3, 4) or intrinsics.shape[-2:] != (3, 3):
        raise ValueError(
            "extrinsics must be [..., 3, 4] and intrinsics [..., 3, 3], got "
            f"{tuple(extrinsics.shape)} and {tuple(intrinsics.shape)}"
        )
    h, w = image_hw
    fov_h = 2 * torch.atan((h / 2.0) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((w / 2.0) / intrinsics[..., 0, 0])
    quat = matrix_to_quaternion(extrinsics[..., :3, :3])
    return torch.cat([extrinsics[..., :3, 3], quat, fov_h[..., None], fov_w[..., None]], dim=-1)
