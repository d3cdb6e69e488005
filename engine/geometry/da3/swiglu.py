"""SwiGLU feed-forward of the Giant ViT: w3(silu(a) · b) with (a, b) = w12(x) split in two."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def swiglu_hidden(dim: int) -> int:
    """Hidden width of the SwiGLU that replaces a 4·dim MLP: 2/3 of it, rounded up to a multiple of 8."""
    return (int(4 * dim * 2 / 3) + 7) // 8 * 8


class SwiGLU(nn.Module):
    """w12: dim → 2·hidden, w3: hidden → dim (both with bias)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = swiglu_hidden(dim)
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)
