"""Reference-view choice: which view goes first (and gets the reference camera token) before alternation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

STRATEGIES = ("saddle_balanced", "first", "middle")
MIN_VIEWS = 3  # with fewer views, view 0 is the reference


def saddle_balanced_scores(tokens: torch.Tensor) -> torch.Tensor:
    """[B, S] scores (lowest wins) of token-0 features [B, S, C].

    Three metrics per view: mean cosine similarity to the other views, feature norm, variance of the
    unit-normalised feature over channels; each is min-max normalised over the views (+1e-8) and the
    score is Σ |metric − 0.5|: the view most "in the middle" on all three wins.
    """
    tokens = tokens.float()
    unit = F.normalize(tokens, dim=-1)
    similarity = unit @ unit.transpose(-1, -2)
    n_views = tokens.shape[1]
    mean_similarity = (similarity.sum(-1) - similarity.diagonal(dim1=-2, dim2=-1)) / (n_views - 1)
    metrics = torch.stack([mean_similarity, tokens.norm(dim=-1), unit.var(dim=-1)], dim=-1)  # [B, S, 3]
    low, high = metrics.amin(1, keepdim=True), metrics.amax(1, keepdim=True)
    return ((metrics - low) / (high - low + 1e-8) - 0.5).abs().sum(-1)


def select_reference_view(tokens: torch.Tensor, strategy: str) -> torch.Tensor:
    """Reference view index [B] from token-0 features [B, S, C] (view 0 with fewer than 3 views)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"ref_view_strategy must be one of {STRATEGIES}, got {strategy!r}")
    b, s = tokens.shape[:2]
    if s < MIN_VIEWS or strategy == "first":
        return torch.zeros(b, dtype=torch.long, device=tokens.device)
    if strategy == "middle":
        return torch.full((b,), s // 2, dtype=torch.long, device=tokens.device)
    return saddle_balanced_scores(tokens).argmin(-1)


def reference_first_order(reference: torch.Tensor, n_views: int) -> torch.Tensor:
    """Per batch element the view order [ref, 0, 1, …, ref−1, ref+1, …] as indices [B, S]."""
    views = torch.arange(n_views, device=reference.device).expand(reference.shape[0], -1)
    return torch.where(views == reference[:, None], -1, views).argsort(-1)


def gather_views(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """x [B, S, ...] with its views taken in `order` [B, S]."""
    index = order.view(*order.shape, *(1,) * (x.ndim - 2)).expand_as(x)
    return x.gather(1, index)
