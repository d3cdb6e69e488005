"""The embedded default's preference set: latent clips whose preference is learnable and checkable.

A winner is a temporally consistent clip: one smooth random latent "scene" seen through a camera that pans
at a constant velocity (every frame is a shifted crop of the same field). Its loser is the same scene with
the geometry broken frame by frame: each frame's crop jumps by a random offset (an inconsistent camera) and
carries independent high-frequency "floaters". Winner and loser share the prompt embedding. Train and
held-out sets come from disjoint seeds, so held-out scenes are never trained on.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from videogpa.engine.config import SyntheticDataConfig
from videogpa.engine.data.preference import PreferenceShardWriter

JITTER = 2  # max per-frame crop jump of a loser, in latent pixels
FLOATERS = 0.5  # std of a loser's per-frame independent noise, relative to the unit-std scene
SMOOTH = 5  # box-filter width that makes the scene field smooth


def _frames_first(shape: Sequence[int], layout: str) -> tuple[int, int, int, int]:
    """(F, C, H, W) of one sample of the given native layout."""
    if layout == "BFCHW":
        f, c, h, w = shape
    elif layout == "BCFHW":
        c, f, h, w = shape
    else:
        raise ValueError(f"unknown latent layout {layout!r}: expected 'BFCHW' or 'BCFHW'")
    return f, c, h, w


def _scene(gen: torch.Generator, c: int, h: int, w: int) -> torch.Tensor:
    """A smooth unit-std random field [C, h, w]."""
    field = torch.randn(1, c, h + SMOOTH - 1, w + SMOOTH - 1, generator=gen)
    field = F.avg_pool2d(field, SMOOTH, stride=1)[0]
    return (field - field.mean()) / field.std()


def make_pair(
    gen: torch.Generator, sample_shape: Sequence[int], layout: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """One (winner, loser) pair of latent clips in the native layout."""
    f, c, h, w = _frames_first(sample_shape, layout)
    margin = JITTER + f  # room for the pan plus the jitter
    scene = _scene(gen, c, h + 2 * margin, w + 2 * margin)
    vy, vx = (torch.randint(-1, 2, (2,), generator=gen)).tolist()
    jitter = torch.randint(-JITTER, JITTER + 1, (f, 2), generator=gen)
    crop = lambda y, x: scene[:, margin + y : margin + y + h, margin + x : margin + x + w]
    winner = torch.stack([crop(vy * i, vx * i) for i in range(f)])
    loser = torch.stack([crop(vy * i + int(jitter[i, 0]), vx * i + int(jitter[i, 1])) for i in range(f)])
    loser = loser + FLOATERS * torch.randn(loser.shape, generator=gen)
    if layout == "BCFHW":
        winner, loser = winner.transpose(0, 1), loser.transpose(0, 1)
    return winner.contiguous(), loser.contiguous()


def make_pairs(
    n: int, seed: int, sample_shape: Sequence[int], layout: str, text_shape: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n pairs: winners [n, *sample], losers [n, *sample], prompt embeddings [n, *text_shape]."""
    if n <= 0:
        raise ValueError(f"synthetic preference set: expected a positive number of pairs, got {n}")
    gen = torch.Generator().manual_seed(seed)
    winners, losers = zip(*(make_pair(gen, sample_shape, layout) for _ in range(n)))
    text = torch.randn(n, *text_shape, generator=gen)
    return torch.stack(winners), torch.stack(losers), text


def write_synthetic_pairs(
    root: str | Path,
    cfg: SyntheticDataConfig,
    latent_shape: Sequence[int],
    layout: str,
    text_shape: Sequence[int],
) -> tuple[Path, Path]:
    """Write the train and held-out sets as preference shards under root/{train,heldout} (replacing any
    previous ones). Scores are the corruption level: 0 for winners, 1 for losers (lower is better)."""
    root = Path(root)
    splits = (("train", cfg.train_pairs, cfg.seed), ("heldout", cfg.heldout_pairs, cfg.seed + 1))
    for split, n, seed in splits:
        shutil.rmtree(root / split, ignore_errors=True)
        winners, losers, text = make_pairs(n, seed, latent_shape, layout, text_shape)
        with PreferenceShardWriter(root / split) as writer:
            for i in range(n):
                writer.add(f"{split}-{i:05d}", winners[i], losers[i], text[i], score_w=0.0, score_l=1.0)
    return root / "train", root / "heldout"
