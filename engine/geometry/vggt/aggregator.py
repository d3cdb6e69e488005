"""The aggregator: per-frame patch tokens + camera/register tokens, alternating frame and global attention."""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn

from videogpa.engine.geometry.vggt.config import VGGTConfig
from videogpa.engine.geometry.vggt.dinov2 import PatchEmbedViT
from videogpa.engine.geometry.vggt.layers import Block
from videogpa.engine.geometry.vggt.rope import patch_positions, rope_tables

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Aggregator(nn.Module):
    """Images [B, S, 3, H, W] in [0, 1] → `depth` outputs [B, S, P, 2C] (frame ‖ global tokens).

    Frame attention runs on (B·S, P, C), global attention on (B, S·P, C); they alternate in `aa_order`,
    `aa_block_size` blocks of one kind at a time, and output i pairs frame block i with global block i.
    """

    def __init__(self, config: VGGTConfig) -> None:
        super().__init__()
        c = config
        dim = c.embed_dim
        self.patch_size = c.patch_size
        self.num_heads = c.num_heads
        self.rope_freq = c.rope_freq
        self.aa_order = c.aa_order
        self.aa_block_size = c.aa_block_size
        # Slot 0 is frame 0's token, slot 1 every other frame's.
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, c.num_register_tokens, dim))
        self.patch_start_idx = 1 + c.num_register_tokens
        self.patch_embed = PatchEmbedViT(
            c.img_size,
            c.patch_size,
            dim,
            c.patch_embed_depth,
            c.patch_embed_num_heads,
            c.mlp_ratio,
            c.num_register_tokens,
            c.patch_embed_init_values,
        )
        self.frame_blocks = nn.ModuleList(self._block(c) for _ in range(c.depth))
        self.global_blocks = nn.ModuleList(self._block(c) for _ in range(c.depth))

    @staticmethod
    def _block(c: VGGTConfig) -> Block:
        return Block(c.embed_dim, c.num_heads, c.mlp_ratio, c.init_values, qk_norm=c.qk_norm)

    def _special_tokens(self, b: int, s: int, dtype: torch.dtype) -> torch.Tensor:
        """[B·S, 1 + registers, C]: slot 0 for the first frame of each video, slot 1 for the rest."""
        special = torch.cat([self.camera_token, self.register_token], dim=2)  # [1, 2, 1+R, C]
        per_frame = torch.cat([special[:, :1], special[:, 1:].expand(-1, s - 1, -1, -1)], dim=1)
        return per_frame.expand(b, -1, -1, -1).reshape(b * s, *special.shape[2:]).to(dtype)

    def forward(self, images: torch.Tensor, keep: Collection[int] | None = None) -> list[torch.Tensor | None]:
        """All `depth` outputs, or only those whose index is in `keep` (the others are None, saving
        memory)."""
        b, s, _, h, w = images.shape
        mean = images.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = images.new_tensor(IMAGENET_STD).view(3, 1, 1)
        patches = self.patch_embed(((images - mean) / std).flatten(0, 1))  # [B·S, h·w, C]
        tokens = torch.cat([self._special_tokens(b, s, patches.dtype), patches], dim=1)
        p, c = tokens.shape[1:]
        positions = patch_positions(
            h // self.patch_size, w // self.patch_size, self.patch_start_idx, images.device
        )
        frame_rope = rope_tables(positions, c // self.num_heads, self.rope_freq)
        global_rope = tuple(t.repeat(s, 1) for t in frame_rope)
        views = {"frame": (self.frame_blocks, (b * s, p, c), frame_rope)}
        views["global"] = (self.global_blocks, (b, s * p, c), global_rope)
        outputs = []
        for first in range(0, len(self.frame_blocks), self.aa_block_size):
            steps = range(first, first + self.aa_block_size)
            results = {}
            for kind in self.aa_order:
                blocks, shape, rope = views[kind]
                results[kind] = []
                for i in steps:
                    tokens = blocks[i](tokens.reshape(shape), rope)
                    results[kind].append(tokens.reshape(b, s, p, c) if keep is None or i in keep else None)
            for frame_out, global_out in zip(results["frame"], results["global"]):
                outputs.append(None if frame_out is None else torch.cat([frame_out, global_out], dim=-1))
        return outputs
