"""The DA3 backbone: a DINOv2 ViT/14 with a camera token, alternating frame/global attention, qk-norm
and RoPE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videogpa.engine.geometry.da3.config import DA3Config
from videogpa.engine.geometry.da3.reference_view import (
    gather_views,
    reference_first_order,
    select_reference_view,
)
from videogpa.engine.geometry.da3.swiglu import SwiGLU
from videogpa.engine.geometry.vggt.dinov2 import PatchConv
from videogpa.engine.geometry.vggt.layers import Block, Rope
from videogpa.engine.geometry.vggt.rope import patch_positions, rope_tables

POS_EMBED_OFFSET = 0.1  # added to the patch grid before it becomes the position table's scale factor
BLOCK_EPS = 1e-6
FINAL_NORM_EPS = 1e-5
MLP_RATIO = 4.0
LAYERSCALE_INIT = 1.0


class DA3ViT(nn.Module):
    """`backbone.pretrained`: normalised images [B, S, 3, H, W] → (local output, block output) of every
    out layer.

    Blocks before alt_start attend within a view; from alt_start on, odd blocks attend across all views of a
    video. Just before block alt_start − 1 the views are re-ordered reference first; just before block
    alt_start token 0 (the cls slot) of every view is overwritten by the camera token (or by the camera
    encoder's tokens, which also skip the re-ordering). The out-layer outputs come back in the input order.
    """

    def __init__(self, config: DA3Config) -> None:
        super().__init__()
        c = self.config = config
        dim = c.embed_dim
        self.grid = c.img_size // c.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if c.alt_start >= 0:
            self.camera_token = nn.Parameter(torch.zeros(1, 2, dim))  # slot 0: reference view, 1: the others
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid * self.grid, dim))
        self.patch_embed = PatchConv(c.patch_size, dim)
        self.blocks = nn.ModuleList(self._block(i) for i in range(c.depth))
        self.norm = nn.LayerNorm(dim, eps=FINAL_NORM_EPS)

    def _block(self, i: int) -> Block:
        c = self.config
        return Block(
            c.embed_dim,
            c.num_heads,
            MLP_RATIO,
            LAYERSCALE_INIT,
            qk_norm=0 <= c.qknorm_start <= i,
            eps=BLOCK_EPS,
            ffn=SwiGLU(c.embed_dim) if c.ffn == "swiglu" else None,
        )

    def position_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """[1, 1 + h·w, C] float32: the table, its grid part resized bicubically by
        ((h+0.1)/M, (w+0.1)/M)."""
        table = self.pos_embed.float()
        if (grid_h, grid_w) == (self.grid, self.grid):
            return table
        grid = table[:, 1:].reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        scale = ((grid_h + POS_EMBED_OFFSET) / self.grid, (grid_w + POS_EMBED_OFFSET) / self.grid)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False, antialias=False)
        if grid.shape[-2:] != (grid_h, grid_w):
            raise ValueError(
                f"position table resized to {tuple(grid.shape[-2:])}, expected {(grid_h, grid_w)}"
            )
        return torch.cat([table[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)

    def _ropes(self, grid_hw: tuple[int, int], n_views: int, device: torch.device) -> tuple[Rope, Rope]:
        """RoPE tables of a local block (patches at (row+1, col+1)) and of a global one (every patch at
        (1, 1), so global attention carries no patch position); token 0 is at (0, 0) in both."""
        head_dim, base = self.config.embed_dim // self.config.num_heads, self.config.rope_freq
        local = patch_positions(*grid_hw, 1, device)
        flat = torch.cat([torch.zeros_like(local[:1]), torch.ones_like(local[1:])]).repeat(n_views, 1)
        return rope_tables(local, head_dim, base), rope_tables(flat, head_dim, base)

    def _camera_tokens(self, b: int, s: int, given: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """[B, S, C]: the encoder's tokens, else slot 0 for the first (reference) view and slot 1 for the
        rest."""
        if given is not None:
            return given.to(dtype)
        token = self.camera_token
        per_view = torch.cat([token[:, :1], token[:, 1:].expand(-1, s - 1, -1)], dim=1)
        return per_view.expand(b, -1, -1).to(dtype)

    def forward(
        self,
        images: torch.Tensor,
        camera_tokens: torch.Tensor | None = None,
        ref_view_strategy: str = "saddle_balanced",
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """([(last local output, block output) [B, S, 1 + h·w, C] per out layer], reference view [B])."""
        c = self.config
        b, s, _, h, w = images.shape
        grid_hw = (h // c.patch_size, w // c.patch_size)
        x = self.patch_embed(images.flatten(0, 1))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        x = (x + self.position_embedding(*grid_hw).to(x.dtype)).unflatten(0, (b, s))
        local_rope, global_rope = self._ropes(grid_hw, s, images.device)
        reference = torch.zeros(b, dtype=torch.long, device=images.device)
        restore = None  # inverse of the reference-first order, once the views are re-ordered
        local_x, outputs = x, []
        for i, block in enumerate(self.blocks):
            if i == c.alt_start - 1 and camera_tokens is None:
                reference = select_reference_view(x[:, :, 0], ref_view_strategy)
                order = reference_first_order(reference, s)
                x, local_x, restore = gather_views(x, order), gather_views(local_x, order), order.argsort(-1)
            if i == c.alt_start:
                token0 = self._camera_tokens(b, s, camera_tokens, x.dtype)
                x = torch.cat([token0[:, :, None], x[:, :, 1:]], dim=2)
            n, dim = x.shape[2:]
            is_global = c.is_global(i)
            rope = (global_rope if is_global else local_rope) if 0 <= c.rope_start <= i else None
            x = block(x.reshape(-1, s * n if is_global else n, dim), rope).reshape(b, s, n, dim)
            if not is_global:
                local_x = x
            if i in c.out_layers:
                outputs.append((local_x, x))
        if restore is not None:
            outputs = [(gather_views(local_x, restore), gather_views(x, restore)) for local_x, x in outputs]
        return outputs, reference


class Backbone(nn.Module):
    """`backbone`: the ViT and the features the heads read from its out layers."""

    def __init__(self, config: DA3Config) -> None:
        super().__init__()
        self.cat_token = config.cat_token
        self.pretrained = DA3ViT(config)

    def forward(
        self,
        images: torch.Tensor,
        camera_tokens: torch.Tensor | None = None,
        ref_view_strategy: str = "saddle_balanced",
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """(patch features [B, S, h·w, D] and camera tokens [B, S, D] per out layer, reference view [B]).

        With cat_token, D = 2C: [last local output ‖ block output], the final norm applied to the second
        half of the patch features only, the camera token left raw; otherwise D = C, the normed output.
        """
        outputs, reference = self.pretrained(images, camera_tokens, ref_view_strategy)
        norm = self.pretrained.norm
        if not self.cat_token:
            return [norm(x[:, :, 1:]) for _, x in outputs], [x[:, :, 0] for _, x in outputs], reference
        patches = [torch.cat([local_x[:, :, 1:], norm(x[:, :, 1:])], dim=-1) for local_x, x in outputs]
        tokens = [torch.cat([local_x[:, :, 0], x[:, :, 0]], dim=-1) for local_x, x in outputs]
        return patches, tokens, reference
