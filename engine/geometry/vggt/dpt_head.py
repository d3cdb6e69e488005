"""DPT head: four aggregator outputs fused coarse-to-fine into a dense per-pixel prediction and confidence."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from videogpa.engine.geometry.vggt.config import VGGTConfig

POS_EMBED_RATIO = 0.1
OUTPUT_HIDDEN = 32  # width of the last 3×3 conv before the 1×1 output conv


def uv_grid(height: int, width: int, aspect: float, device: torch.device | None = None) -> torch.Tensor:
    """Centred (x, y) grid [H, W, 2] normalised by the image diagonal (aspect = image W / H)."""
    diag = (aspect**2 + 1.0) ** 0.5
    span_x, span_y = aspect / diag, 1.0 / diag
    xs = torch.linspace(-span_x * (width - 1) / width, span_x * (width - 1) / width, width, device=device)
    ys = torch.linspace(
        -span_y * (height - 1) / height, span_y * (height - 1) / height, height, device=device
    )
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)


def sincos_embedding(grid: torch.Tensor, channels: int, omega_0: float = 100.0) -> torch.Tensor:
    """[H, W, 2] → [channels, H, W]: [sin, cos](p·ω_k), ω_k = ω₀^(−k/(C/4)), x then y,
    float64 → float32."""
    quarter = channels // 4
    omega = 1.0 / omega_0 ** (torch.arange(quarter, dtype=torch.float64, device=grid.device) / quarter)
    angles = grid.to(torch.float64)[..., None] * omega  # [H, W, 2, C/4]
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # x: sin, cos; y: sin, cos
    return emb.to(torch.float32).permute(2, 0, 1)


@functools.lru_cache(maxsize=32)
def _position_embedding(h: int, w: int, channels: int, aspect: float, device: torch.device) -> torch.Tensor:
    """0.1 · sin-cos embedding [C, h, w], made once per size and device (the heads call it per level)."""
    return POS_EMBED_RATIO * sincos_embedding(uv_grid(h, w, aspect, device), channels)


def add_position_embedding(x: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """x [N, C, h, w] + 0.1 · sin-cos embedding of its uv grid."""
    emb = _position_embedding(*x.shape[-2:], x.shape[1], image_hw[1] / image_hw[0], x.device)
    return x + emb.to(x.dtype)


def conv3x3(cin: int, cout: int, bias: bool = True, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=bias)


def upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of [N, C, h, w] to `size` with align_corners=True (every DPT resize)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def make_resize_layers(out_channels: tuple[int, ...]) -> nn.ModuleList:
    """Per level: 4× and 2× transposed convs, identity, a stride-2 3×3 conv (the checkpoint's
    resize_layers)."""
    oc = out_channels
    return nn.ModuleList(
        [
            nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
            nn.Identity(),
            conv3x3(oc[3], oc[3], stride=2),
        ]
    )


def token_levels(
    tokens: list[torch.Tensor],
    projects: nn.ModuleList,
    resize_layers: nn.ModuleList,
    grid_hw: tuple[int, int],
    image_hw: tuple[int, int],
    position_embedding: bool = True,
) -> list[torch.Tensor]:
    """Four token sets [N, h·w, C] → maps: 1×1 projection, (+0.1·sin-cos embedding), per-level resize."""
    levels = []
    for x, project, resize in zip(tokens, projects, resize_layers):
        x = project(x.transpose(1, 2).reshape(x.shape[0], -1, *grid_hw))
        levels.append(resize(add_position_embedding(x, image_hw) if position_embedding else x))
    return levels


class ResidualUnit(nn.Module):
    """conv(ReLU(conv(ReLU(x)))) + ReLU(x) with `rectified_skip` (VGGT's in-place ReLU also rectifies the
    skip), else + x (Depth Anything 3)."""

    def __init__(self, features: int, rectified_skip: bool = True) -> None:
        super().__init__()
        self.conv1 = conv3x3(features, features)
        self.conv2 = conv3x3(features, features)
        self.rectified_skip = rectified_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rectified = F.relu(x)
        return self.conv2(F.relu(self.conv1(rectified))) + (rectified if self.rectified_skip else x)


class FusionBlock(nn.Module):
    """[skip + residual(skip input)] → residual → bilinear resize (align_corners) → 1×1 conv."""

    def __init__(self, features: int, has_skip: bool, rectified_skip: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)
        if has_skip:
            self.resConfUnit1 = ResidualUnit(features, rectified_skip)
        self.resConfUnit2 = ResidualUnit(features, rectified_skip)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int] | None
    ) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            size = (2 * x.shape[-2], 2 * x.shape[-1])
        return self.out_conv(upsample(x, size))


class Scratch(nn.Module):
    """Container named as in the checkpoint: per-level 3×3 convs, fusion blocks, output convs."""

    def __init__(
        self, out_channels: tuple[int, ...], features: int, output_dim: int, rectified_skip: bool = True
    ) -> None:
        super().__init__()
        for i, channels in enumerate(out_channels, start=1):
            self.add_module(f"layer{i}_rn", conv3x3(channels, features, bias=False))
        for i in range(1, 5):
            self.add_module(f"refinenet{i}", FusionBlock(features, i != 4, rectified_skip))
        self.output_conv1 = conv3x3(features, features // 2)
        self.output_conv2 = nn.Sequential(
            conv3x3(features // 2, OUTPUT_HIDDEN),
            nn.ReLU(),
            nn.Conv2d(OUTPUT_HIDDEN, output_dim, kernel_size=1),
        )

    def project(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        """Four maps (fine → coarse) → the same maps with `features` channels (the layer*_rn convs)."""
        return [getattr(self, f"layer{i}_rn")(x) for i, x in enumerate(levels, start=1)]

    def refine(self, maps: list[torch.Tensor], suffix: str = "") -> torch.Tensor:
        """Projected maps → fused by refinenet4{suffix} … refinenet1{suffix}, at twice the finest size."""
        block = lambda i: getattr(self, f"refinenet{i}{suffix}")
        out = block(4)(maps[3], None, maps[2].shape[-2:])
        out = block(3)(out, maps[2], maps[1].shape[-2:])
        out = block(2)(out, maps[1], maps[0].shape[-2:])
        return block(1)(out, maps[0], None)

    def fuse(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """Four maps (fine → coarse) → fused map [N, features/2, 2·h1, 2·w1]."""
        return self.output_conv1(self.refine(self.project(levels)))


class DPTHead(nn.Module):
    """Aggregator outputs → (prediction [B, S, H, W, output_dim−1], confidence [B, S, H, W])."""

    def __init__(self, config: VGGTConfig, output_dim: int, activation: str) -> None:
        super().__init__()
        if activation not in ("exp", "inv_log"):
            raise ValueError(f"DPTHead activation must be 'exp' or 'inv_log', got {activation!r}")
        dim_in, oc = config.head_dim_in, config.dpt_out_channels
        self.patch_size = config.patch_size
        self.layers = config.dpt_layers
        self.activation = activation
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, c, kernel_size=1) for c in oc)
        self.resize_layers = make_resize_layers(oc)
        self.scratch = Scratch(oc, config.dpt_features, output_dim)

    def forward(
        self,
        tokens: list[torch.Tensor | None],
        image_hw: tuple[int, int],
        patch_start_idx: int,
        frames_chunk_size: int = 8,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, s = tokens[self.layers[0]].shape[:2]
        selected = [tokens[i][:, :, patch_start_idx:].flatten(0, 1) for i in self.layers]  # [B·S, h·w, 2C]
        chunks = [
            self._dense([x[i : i + frames_chunk_size] for x in selected], image_hw)
            for i in range(0, b * s, frames_chunk_size)
        ]
        out = torch.cat(chunks).permute(0, 2, 3, 1).unflatten(0, (b, s))  # [B, S, H, W, output_dim]
        values, conf = out[..., :-1], out[..., -1]
        values = values.exp() if self.activation == "exp" else values.sign() * values.abs().expm1()
        return values, 1 + conf.exp()

    def _dense(self, selected: list[torch.Tensor], image_hw: tuple[int, int]) -> torch.Tensor:
        """Patch tokens of the four layers for some frames → raw output [N, output_dim, H, W]."""
        grid_h, grid_w = image_hw[0] // self.patch_size, image_hw[1] // self.patch_size
        levels = token_levels(
            [self.norm(x) for x in selected], self.projects, self.resize_layers, (grid_h, grid_w), image_hw
        )
        out = upsample(self.scratch.fuse(levels), (grid_h * self.patch_size, grid_w * self.patch_size))
        return self.scratch.output_conv2(add_position_embedding(out, image_hw))
