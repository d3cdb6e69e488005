"""Best-vs-worst pair selection with the paper's gap and static-video rules."""

import random

import pytest

from videogpa.engine.stages.pairs import ScoredVideo, select_pairs


def _c(prompt, video, score, motion=0.5):
    return ScoredVideo(prompt=prompt, video=video, score=score, motion=motion)


def test_best_and_worst_per_prompt_with_drop_reasons():
    candidates = [
        _c("a", "a0", 0.30),
        _c("a", "a1", 0.10),
        _c("a", "a2", 0.50),  # gap 0.4: kept (a1 vs a2)
        _c("b", "b0", 0.20),
        _c("b", "b1", 0.22),  # gap 0.02 < 0.05: small_gap
        _c("c", "c0", 0.20),
        _c("c", "c1", None),  # one failed -> 1 left: too few
        _c("d", "d0", 0.10, motion=0.0005),
        _c("d", "d1", 0.90),  # one static -> too few
        _c("e", "e0", float("nan")),
        _c("e", "e1", 0.1, motion=float("nan")),  # failed + static
    ]
    pairs, report = select_pairs(candidates)
    assert [(p.prompt, p.winner.video, p.loser.video) for p in pairs] == [("a", "a1", "a2")]
    assert pairs[0].gap == pytest.approx(0.4)
    assert report.to_dict() == {
        "prompts": 5,
        "candidates": 11,
        "pairs": 1,
        "dropped": {"failed": 2, "static": 2, "too_few_candidates": 3, "small_gap": 1},
    }


def test_thresholds_are_configurable_and_validated():
    candidates = [_c("a", "a0", 0.20), _c("a", "a1", 0.22, motion=0.01)]
    assert len(select_pairs(candidates, min_gap=0.01)[0]) == 1
    assert len(select_pairs(candidates, min_gap=0.01, min_motion=0.1)[0]) == 0
    with pytest.raises(ValueError, match="min_gap"):
        select_pairs(candidates, min_gap=-1)


def test_selection_is_deterministic_and_order_independent():
    rng = random.Random(0)
    candidates = [_c(f"p{i % 7}", f"v{i:03d}", round(rng.random(), 1)) for i in range(60)]  # many ties
    pairs, _ = select_pairs(candidates)
    shuffled = candidates[:]
    rng.shuffle(shuffled)
    again, _ = select_pairs(shuffled)
    assert [p.to_row() for p in pairs] == [p.to_row() for p in again]
    for p in pairs:
        group = [c for c in candidates if c.prompt == p.prompt]
        assert p.winner.score == min(c.score for c in group)
        assert p.loser.score == max(c.score for c in group)
        assert p.winner.video == min(c.video for c in group if c.score == p.winner.score)
        assert p.loser.video == min(c.video for c in group if c.score == p.loser.score)
