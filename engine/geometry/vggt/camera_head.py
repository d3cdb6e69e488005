"""Camera head: iterative refinement of the 9-d pose encoding from each frame's camera token."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videogpa.engine.geometry.vggt.config import VGGTConfig
from videogpa.engine.geometry.vggt.layers import Block, Mlp

POSE_DIM = 9  # translation (3), quaternion xyzw (3+1), field of view (h, w)


class CameraHead(nn.Module):
    """Camera tokens of the last aggregator output [B, S, 2C] → activated pose encoding per iteration."""

    def __init__(self, config: VGGTConfig) -> None:
        super().__init__()
        dim = config.head_dim_in
        self.iterations = config.camera_iterations
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_DIM))
        self.trunk = nn.Sequential(
            *(
                Block(dim, config.camera_num_heads, config.mlp_ratio, config.init_values)
                for _ in range(config.camera_trunk_depth)
            )
        )
        self.token_norm = nn.LayerNorm(dim)
        self.trunk_norm = nn.LayerNorm(dim)
        self.embed_pose = nn.Linear(POSE_DIM, dim)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
        self.adaln_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim, dim // 2, POSE_DIM)

    def forward(self, last_tokens: torch.Tensor) -> list[torch.Tensor]:
        base = self.token_norm(last_tokens[:, :, 0])  # [B, S, 2C]; attention runs across frames
        normed = self.adaln_norm(base)
        encoding = None  # pre-activation, accumulated over iterations
        activated = []
        for _ in range(self.iterations):
            if encoding is None:
                condition = self.embed_pose(self.empty_pose_tokens.expand(*base.shape[:2], -1))
            else:
                condition = self.embed_pose(encoding.detach())
            shift, scale, gate = self.poseLN_modulation(condition).chunk(3, dim=-1)
            x = gate * (normed * (1 + scale) + shift) + base
            delta = self.pose_branch(self.trunk_norm(self.trunk(x)))
            encoding = delta if encoding is None else encoding + delta
            activated.append(activate_pose(encoding))
        return activated


def activate_pose(encoding: torch.Tensor) -> torch.Tensor:
    """Translation and quaternion pass through; the fields of view go through ReLU."""
    return torch.cat([encoding[..., :7], F.relu(encoding[..., 7:])], dim=-1)
