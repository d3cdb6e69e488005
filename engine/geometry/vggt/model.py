"""VGGT: aggregator + camera, depth and point heads (no track head)."""

from __future__ import annotations

import math

import torch
from torch import nn

from videogpa.engine.geometry.vggt.aggregator import Aggregator
from videogpa.engine.geometry.vggt.camera_head import CameraHead
from videogpa.engine.geometry.vggt.config import VGGTConfig
from videogpa.engine.geometry.vggt.dpt_head import DPTHead
from videogpa.engine.geometry.vggt.pose import pose_encoding_to_cameras


class VGGT(nn.Module):
    """Images [S, 3, H, W] or [B, S, 3, H, W] in [0, 1] → cameras, depth, world points (batch first)."""

    def __init__(self, config: VGGTConfig | None = None) -> None:
        super().__init__()
        self.config = config or VGGTConfig()
        self.aggregator = Aggregator(self.config)
        self.camera_head = CameraHead(self.config)
        self.point_head = DPTHead(self.config, output_dim=4, activation="inv_log")
        self.depth_head = DPTHead(self.config, output_dim=2, activation="exp")

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The aggregator runs under the caller's autocast; the heads always run in float32."""
        if images.ndim == 4:
            images = images[None]
        patch = self.config.patch_size
        if images.ndim != 5 or images.shape[2] != 3 or images.shape[-1] % patch or images.shape[-2] % patch:
            raise ValueError(
                f"images must be [S, 3, H, W] or [B, S, 3, H, W] with H and W multiples of {patch}, "
                f"got {tuple(images.shape)}"
            )
        image_hw = (images.shape[-2], images.shape[-1])
        tokens = self.aggregator(images, keep={*self.config.dpt_layers, self.config.depth - 1})
        start = self.aggregator.patch_start_idx
        with torch.autocast(images.device.type, enabled=False):
            tokens = [None if t is None else t.float() for t in tokens]
            pose_enc_list = self.camera_head(tokens[-1])
            depth, depth_conf = self.depth_head(tokens, image_hw, start)
            world_points, world_points_conf = self.point_head(tokens, image_hw, start)
            extrinsic, intrinsic = pose_encoding_to_cameras(pose_enc_list[-1], image_hw)
        return {
            "pose_enc": pose_enc_list[-1],
            "pose_enc_list": torch.stack(pose_enc_list),
            "extrinsic": extrinsic,
            "intrinsic": intrinsic,
            "depth": depth,
            "depth_conf": depth_conf,
            "world_points": world_points,
            "world_points_conf": world_points_conf,
        }


RANDOM_FOV = math.pi / 3  # 60°: the field of view of random_vggt's cameras


def random_vggt(config: VGGTConfig | None = None) -> VGGT:
    """A VGGT with random weights (from the current torch seed) whose cameras can be scored: the camera
    head's field-of-view outputs get zero weights and a bias that sums to RANDOM_FOV over its iterations.
    Plain random weights send about half the fields of view through the ReLU to 0, an infinite focal length,
    which scoring rejects. Depth, points and poses stay random: for mechanics (tests, the built-in loop)
    only, its scores mean nothing."""
    model = VGGT(config)
    fc2 = model.camera_head.pose_branch.fc2
    with torch.no_grad():
        fc2.weight[7:].zero_()
        fc2.bias[7:].fill_(RANDOM_FOV / model.config.camera_iterations)
    return model
