"""Preference pairs from scored candidate videos: per prompt, best (lowest 3DCS) vs worst.

The paper's rule: drop failed scores and static videos (camera-motion score < 0.001), then per prompt
pair the best and the worst remaining candidate, kept when worst - best ≥ 0.05.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

DEFAULT_MIN_GAP = 0.05
DEFAULT_MIN_MOTION = 0.001
DROP_REASONS = ("failed", "static", "too_few_candidates", "small_gap")


@dataclass(frozen=True)
class Candidate:
    """One scored video of one prompt (score: lower is more 3D-consistent; None when scoring failed)."""

    prompt: str
    video: str
    score: float | None
    motion: float | None
    extra: dict = field(default_factory=dict, compare=False)  # carried into the pair index unchanged

    @property
    def failed(self) -> bool:
        return self.score is None or not math.isfinite(self.score)


@dataclass(frozen=True)
class Pair:
    pair_id: str
    prompt: str
    winner: Candidate
    loser: Candidate

    @property
    def gap(self) -> float:
        return self.loser.score - self.winner.score

    def to_row(self) -> dict:
        return {"pair_id": self.pair_id, "prompt": self.prompt, "gap": self.gap,
                "winner": asdict(self.winner), "loser": asdict(self.loser)}  # fmt: skip


@dataclass
class SelectionReport:
    """Counts of what was kept and why the rest was dropped (videos for failed/static, prompts otherwise)."""

    prompts: int = 0
    candidates: int = 0
    pairs: int = 0
    dropped: Counter = field(default_factory=Counter)
    gaps: list[float] = field(default_factory=list)  # every prompt's best-worst gap, kept or not

    def to_dict(self) -> dict:
        return {"prompts": self.prompts, "candidates": self.candidates, "pairs": self.pairs,
                "dropped": {r: self.dropped.get(r, 0) for r in DROP_REASONS}}  # fmt: skip


def select_pairs(
    candidates: Iterable[Candidate], min_gap: float = DEFAULT_MIN_GAP, min_motion: float = DEFAULT_MIN_MOTION
) -> tuple[list[Pair], SelectionReport]:
    """Best-vs-worst pair per prompt; deterministic (ties go to the lexically first video)."""
    if min_gap < 0 or min_motion < 0:
        raise ValueError(f"select_pairs: min_gap and min_motion must be ≥ 0, got {min_gap}, {min_motion}")
    report = SelectionReport()
    by_prompt: dict[str, list[Candidate]] = defaultdict(list)
    seen_prompts = set()
    for c in candidates:
        report.candidates += 1
        seen_prompts.add(c.prompt)
        if c.failed:
            report.dropped["failed"] += 1
        elif c.motion is None or not math.isfinite(c.motion) or c.motion < min_motion:
            report.dropped["static"] += 1
        else:
            by_prompt[c.prompt].append(c)
    report.prompts = len(seen_prompts)
    report.dropped["too_few_candidates"] = len(seen_prompts) - sum(len(v) >= 2 for v in by_prompt.values())
    pairs = []
    for prompt in sorted(by_prompt):
        group = by_prompt[prompt]
        if len(group) < 2:
            continue
        best = min(group, key=lambda c: (c.score, c.video))
        worst = min(group, key=lambda c: (-c.score, c.video))
        report.gaps.append(worst.score - best.score)
        if worst.score - best.score < min_gap:
            report.dropped["small_gap"] += 1
            continue
        pairs.append(Pair(f"pair{len(pairs):06d}", prompt, best, worst))
    report.pairs = len(pairs)
    return pairs, report
