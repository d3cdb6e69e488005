"""DA3's cameras: the decoder (camera token → pose encoding → w2c, K) and the encoder (known cameras →
tokens)."""

from __future__ import annotations

import torch
from torch import nn

from videogpa.engine.geometry.vggt.layers import Block, Mlp
from videogpa.engine.geometry.vggt.pose import cameras_to_pose_encoding, quaternion_to_matrix

POSE_DIM = 9  # translation (3), quaternion xyzw (4), field of view (h, w)
MIN_TAN = 1e-6  # floor of tan(fov/2) in the focal length
ENCODER_MLP_RATIO = 4.0
ENCODER_LAYERSCALE_INIT = 0.01


def pose_encoding_to_cameras(
    pose_enc: torch.Tensor, image_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., 9] camera-to-world (t, q_xyzw, fov_h, fov_w) → (world-to-camera [..., 3, 4], K [..., 3, 3])."""
    h, w = image_hw
    rot = quaternion_to_matrix(pose_enc[..., 3:7])  # camera-to-world; q need not be unit
    rot_t = rot.transpose(-1, -2)
    extrinsics = torch.cat([rot_t, -rot_t @ pose_enc[..., :3, None]], dim=-1)
    intrinsics = pose_enc.new_zeros(*pose_enc.shape[:-1], 3, 3)
    intrinsics[..., 0, 0] = (w / 2.0) / torch.tan(pose_enc[..., 8] / 2.0).clamp_min(MIN_TAN)
    intrinsics[..., 1, 1] = (h / 2.0) / torch.tan(pose_enc[..., 7] / 2.0).clamp_min(MIN_TAN)
    intrinsics[..., 0, 2] = w / 2.0
    intrinsics[..., 1, 2] = h / 2.0
    intrinsics[..., 2, 2] = 1.0
    return extrinsics, intrinsics


def cameras_to_encoder_input(
    extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_hw: tuple[int, int]
) -> torch.Tensor:
    """World-to-camera [..., 3 or 4, 4] and K [..., 3, 3] → [..., 9]: the camera-to-world pose encoding."""
    if extrinsics.shape[-2] == 3:
        bottom = extrinsics.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(*extrinsics.shape[:-2], 1, 4)
        extrinsics = torch.cat([extrinsics, bottom], dim=-2)
    cam_to_world = torch.linalg.inv(extrinsics.float())[..., :3, :]
    return cameras_to_pose_encoding(cam_to_world, intrinsics.float(), image_hw)


class CameraDec(nn.Module):
    """`cam_dec`: the last out layer's camera token [B, S, D] → pose encoding [B, S, 9] (fov through
    ReLU)."""

    def __init__(self, dim_in: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Linear(dim_in, dim_in), nn.ReLU(), nn.Linear(dim_in, dim_in), nn.ReLU()
        )
        self.fc_t = nn.Linear(dim_in, 3)
        self.fc_qvec = nn.Linear(dim_in, 4)
        self.fc_fov = nn.Sequential(nn.Linear(dim_in, 2), nn.ReLU())

    def forward(self, camera_token: torch.Tensor) -> torch.Tensor:
        x = self.backbone(camera_token)
        return torch.cat([self.fc_t(x), self.fc_qvec(x), self.fc_fov(x)], dim=-1)


class CameraEnc(nn.Module):
    """`cam_enc`: known cameras → one token per view [B, S, C] (an MLP, then a transformer over the
    views)."""

    def __init__(self, dim_out: int, trunk_depth: int, num_heads: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            *(
                Block(dim_out, num_heads, ENCODER_MLP_RATIO, ENCODER_LAYERSCALE_INIT)
                for _ in range(trunk_depth)
            )
        )
        self.token_norm = nn.LayerNorm(dim_out)
        self.trunk_norm = nn.LayerNorm(dim_out)
        self.pose_branch = Mlp(POSE_DIM, dim_out // 2, dim_out)

    def forward(
        self, extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_hw: tuple[int, int]
    ) -> torch.Tensor:
        encoding = cameras_to_encoder_input(extrinsics, intrinsics, image_hw)
        return self.trunk_norm(self.trunk(self.token_norm(self.pose_branch(encoding))))
