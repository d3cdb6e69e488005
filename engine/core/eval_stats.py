"""Paired before/after statistics for the evaluation table: per-prompt win rates and percentile-bootstrap
confidence intervals of the mean difference (prompts resampled with replacement, fixed seed)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


def win_rate(before: Sequence[float], after: Sequence[float], lower_is_better: bool) -> float:
    """Fraction of items where `after` is better than `before` (ties count half)."""
    if len(before) != len(after) or not before:
        raise ValueError(
            f"win_rate: need equally long, non-empty sequences, got {len(before)} and {len(after)}"
        )
    wins = sum((a < b) if lower_is_better else (a > b) for b, a in zip(before, after))
    ties = sum(a == b for b, a in zip(before, after))
    return (wins + 0.5 * ties) / len(before)


def bootstrap_ci(
    differences: Sequence[float], *, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of `differences` (deterministic in seed)."""
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or d.size == 0 or not np.isfinite(d).all():
        raise ValueError("bootstrap_ci: need a non-empty 1-D sequence of finite differences")
    if not 0 < level < 1:
        raise ValueError(f"bootstrap_ci: level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def paired_metric(
    base: dict[tuple[str, int], dict],
    tuned: dict[tuple[str, int], dict],
    metric: str,
    lower_is_better: bool | None,
    *,
    seed: int = 0,
) -> dict:
    """Per-prompt comparison of one metric over the videos (prompt_id, seed) scored in both runs: the mean
    per-prompt difference (LoRA − base) with its bootstrap CI over prompts, and the prompts the LoRA
    wins."""
    by_prompt = defaultdict(lambda: ([], []))
    for key in sorted(set(base) & set(tuned)):
        before, after = base[key].get(metric), tuned[key].get(metric)
        if _finite(before) and _finite(after):
            by_prompt[key[0]][0].append(before)
            by_prompt[key[0]][1].append(after)
    if not by_prompt:
        return {"delta": None, "ci": None, "prompt_win_rate": None, "prompts_compared": 0}
    before = [sum(b) / len(b) for b, _ in by_prompt.values()]
    after = [sum(a) / len(a) for _, a in by_prompt.values()]
    differences = [a - b for b, a in zip(before, after)]
    low, high = bootstrap_ci(differences, seed=seed)
    return {
        "delta": sum(differences) / len(differences),
        "ci": [low, high],
        "prompt_win_rate": None if lower_is_better is None else win_rate(before, after, lower_is_better),
        "prompts_compared": len(differences),
    }
