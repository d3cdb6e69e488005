"""DualDPT: the any-view head; one DPT trunk, two fusion chains: depth + confidence and rays + confidence."""

from __future__ import annotations

import torch
from torch import nn

from videogpa.engine.geometry.vggt.dpt_head import (
    OUTPUT_HIDDEN,
    FusionBlock,
    Scratch,
    add_position_embedding,
    conv3x3,
    make_resize_layers,
    token_levels,
    upsample,
)

RAY_DIM = 6  # direction (3) and origin (3) per pixel, plus one confidence channel
LEVELS = 4
FRAMES_PER_CHUNK = 8


class ChannelsLast(nn.Module):
    """[N, C, H, W] ↔ [N, H, W, C], so that a LayerNorm normalises over channels."""

    def __init__(self, last: bool) -> None:
        super().__init__()
        self.order = (0, 2, 3, 1) if last else (0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.order)


def aux_refinement(features: int) -> nn.Sequential:
    """Five 3×3 convs with no activation between them: F → F/2 → F → F/2 → F → F/2."""
    widths = [features, features // 2] * 3
    return nn.Sequential(*(conv3x3(widths[i], widths[i + 1]) for i in range(5)))


def aux_output(features: int, norm: nn.LayerNorm) -> nn.Sequential:
    """3×3 conv F/2 → 32, LayerNorm over channels (one module shared by all levels), ReLU, 1×1 conv →
    7."""
    return nn.Sequential(
        conv3x3(features // 2, OUTPUT_HIDDEN),
        ChannelsLast(True),
        norm,
        ChannelsLast(False),
        nn.ReLU(),
        nn.Conv2d(OUTPUT_HIDDEN, RAY_DIM + 1, kernel_size=1),
    )


class DualScratch(Scratch):
    """The depth chain of Scratch plus the ray chain (`*_aux`) with its own fusion blocks and output convs.

    Unlike VGGT's, DA3's residual units add the skip input itself, not its ReLU.
    """

    def __init__(self, out_channels: tuple[int, ...], features: int, output_dim: int) -> None:
        super().__init__(out_channels, features, output_dim, rectified_skip=False)
        for i in range(1, LEVELS + 1):
            self.add_module(f"refinenet{i}_aux", FusionBlock(features, i != LEVELS, rectified_skip=False))
        self.output_conv1_aux = nn.ModuleList(aux_refinement(features) for _ in range(LEVELS))
        shared = nn.LayerNorm(OUTPUT_HIDDEN)
        self.output_conv2_aux = nn.ModuleList(aux_output(features, shared) for _ in range(LEVELS))


class DualDPT(nn.Module):
    """`head`: patch features of 4 out layers [B, S, h·w, D] → depth, depth_conf [B, S, H, W] and
    ray [B, S, 8h, 8w, 6], ray_conf [B, S, 8h, 8w] (the rays stay at 8× the patch grid).

    Only the finest level of the ray chain is used; the checkpoint's other ray output convs are not run.
    """

    def __init__(self, dim_in: int, features: int, out_channels: tuple[int, ...], output_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, c, kernel_size=1) for c in out_channels)
        self.resize_layers = make_resize_layers(out_channels)
        self.scratch = DualScratch(out_channels, features, output_dim)

    def forward(
        self, features: list[torch.Tensor], image_hw: tuple[int, int], patch_size: int
    ) -> dict[str, torch.Tensor]:
        b, s = features[0].shape[:2]
        flat = [self.norm(x.flatten(0, 1)) for x in features]
        chunks = [
            self._dense([x[i : i + FRAMES_PER_CHUNK] for x in flat], image_hw, patch_size)
            for i in range(0, b * s, FRAMES_PER_CHUNK)
        ]
        depth, rays = (torch.cat(parts).permute(0, 2, 3, 1).unflatten(0, (b, s)) for parts in zip(*chunks))
        return {
            "depth": depth[..., 0].exp(),
            "depth_conf": 1 + depth[..., 1].exp(),
            "ray": rays[..., :RAY_DIM],
            "ray_conf": 1 + rays[..., RAY_DIM].exp(),
        }

    def _dense(
        self, tokens: list[torch.Tensor], image_hw: tuple[int, int], patch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normed tokens of some frames → raw (depth [N, 2, H, W], rays [N, 7, 8h, 8w])."""
        grid_hw = (image_hw[0] // patch_size, image_hw[1] // patch_size)
        scratch = self.scratch
        maps = scratch.project(token_levels(tokens, self.projects, self.resize_layers, grid_hw, image_hw))
        depth = upsample(scratch.output_conv1(scratch.refine(maps)), image_hw)
        depth = scratch.output_conv2(add_position_embedding(depth, image_hw))
        rays = scratch.output_conv1_aux[-1](scratch.refine(maps, "_aux"))
        return depth, scratch.output_conv2_aux[-1](add_position_embedding(rays, image_hw))
