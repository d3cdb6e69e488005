"""The single-chain DPT heads: depth + sky of DA3Mono/DA3Metric, and the weights of Giant's Gaussian head."""

from __future__ import annotations

import torch
from torch import nn

from videogpa.engine.geometry.vggt.dpt_head import (
    OUTPUT_HIDDEN,
    Scratch,
    conv3x3,
    make_resize_layers,
    token_levels,
    upsample,
)

GS_MERGER_WIDTHS = (3, 32, 64, 128)  # the Gaussian head's image-merger convs


class PlainDPT(nn.Module):
    """projects, resize_layers and scratch of a DPT without a token norm or position embedding (residual
    units adding the plain skip, as in DA3's DualDPT)."""

    def __init__(self, dim_in: int, features: int, out_channels: tuple[int, ...], output_dim: int) -> None:
        super().__init__()
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, c, kernel_size=1) for c in out_channels)
        self.resize_layers = make_resize_layers(out_channels)
        self.scratch = Scratch(out_channels, features, output_dim, rectified_skip=False)


class MonoDPT(PlainDPT):
    """`head` of DA3Mono/DA3Metric: patch features [B, S, h·w, C] → depth and sky [B, S, H, W].

    Written from the architecture description; no reference output of these models was available, so
    unlike the any-view network this forward is not checked against the official code.
    """

    def __init__(self, dim_in: int, features: int, out_channels: tuple[int, ...], output_dim: int) -> None:
        super().__init__(dim_in, features, out_channels, output_dim)
        self.scratch.sky_output_conv2 = nn.Sequential(
            conv3x3(features // 2, OUTPUT_HIDDEN), nn.ReLU(), nn.Conv2d(OUTPUT_HIDDEN, 1, kernel_size=1)
        )

    def forward(
        self, features: list[torch.Tensor], image_hw: tuple[int, int], patch_size: int
    ) -> dict[str, torch.Tensor]:
        b, s = features[0].shape[:2]
        grid_hw = (image_hw[0] // patch_size, image_hw[1] // patch_size)
        tokens = [x.flatten(0, 1) for x in features]
        levels = token_levels(tokens, self.projects, self.resize_layers, grid_hw, image_hw, False)
        fused = upsample(self.scratch.fuse(levels), image_hw)
        depth = self.scratch.output_conv2(fused)[:, 0].unflatten(0, (b, s))
        sky = self.scratch.sky_output_conv2(fused)[:, 0].unflatten(0, (b, s))
        return {"depth": depth.exp(), "sky": sky.relu()}


class GaussianHeadWeights(PlainDPT):
    """`gs_head` of DA3-Giant: its parameters only, so that the Giant checkpoint loads strictly.

    The 3D-Gaussian output (the official `infer_gs=True` branch) is not implemented; nothing calls this
    module.
    """

    def __init__(self, dim_in: int, features: int, out_channels: tuple[int, ...], output_dim: int) -> None:
        super().__init__(dim_in, features, out_channels, output_dim)
        self.images_merger = nn.Module()
        for i, (cin, cout) in enumerate(zip(GS_MERGER_WIDTHS, GS_MERGER_WIDTHS[1:])):
            self.images_merger.add_module(str(2 * i), conv3x3(cin, cout))
