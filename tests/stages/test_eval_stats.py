"""Evaluation statistics: win rates and the bootstrap confidence interval of a mean difference."""

import numpy as np
import pytest

from videogpa.engine.core.eval_stats import bootstrap_ci, paired_metric, win_rate


def test_win_rate_counts_ties_half_and_respects_the_direction():
    assert win_rate([1.0, 2.0, 3.0, 4.0], [0.5, 2.0, 4.0, 3.0], lower_is_better=True) == pytest.approx(
        2.5 / 4
    )
    assert win_rate([1.0, 2.0, 3.0, 4.0], [0.5, 2.0, 4.0, 3.0], lower_is_better=False) == pytest.approx(
        1.5 / 4
    )
    with pytest.raises(ValueError, match="equally long"):
        win_rate([1.0], [1.0, 2.0], True)


def test_zero_difference_gives_a_zero_interval():
    assert bootstrap_ci([0.0] * 12) == (0.0, 0.0)
    assert bootstrap_ci([0.25]) == (0.25, 0.25)


def test_interval_covers_the_true_difference_about_95_percent_of_the_time():
    """Differences drawn from N(0.3, 1): the 95% interval of 40-sample means should contain 0.3 in ~95% of
    200 independent data sets (binomial: 88%-99% holds with overwhelming probability if it is calibrated)."""
    rng = np.random.default_rng(7)
    hits, widths = 0, []
    for k in range(200):
        low, high = bootstrap_ci(rng.normal(0.3, 1.0, 40), resamples=1000, seed=k)
        hits += low <= 0.3 <= high
        widths.append(high - low)
    assert 0.88 <= hits / 200 <= 0.99
    # the width tracks 2·1.96·σ/√n ≈ 0.62
    assert np.mean(widths) == pytest.approx(2 * 1.96 / np.sqrt(40), rel=0.15)


def test_interval_is_deterministic_and_excludes_zero_for_a_clear_shift():
    d = np.random.default_rng(1).normal(-0.5, 0.2, 30)
    assert bootstrap_ci(d, seed=3) == bootstrap_ci(d, seed=3)
    low, high = bootstrap_ci(d)
    assert high < 0 and low < d.mean() < high
    with pytest.raises(ValueError, match="finite"):
        bootstrap_ci([0.1, float("nan")])


def test_paired_metric_averages_seeds_per_prompt_first():
    base = {("a", 0): {"epi": 0.4}, ("a", 1): {"epi": 0.2}, ("b", 0): {"epi": 0.3}, ("c", 0): {"epi": None}}
    tuned = {("a", 0): {"epi": 0.1}, ("a", 1): {"epi": 0.3}, ("b", 0): {"epi": 0.5}, ("c", 0): {"epi": 0.1}}
    out = paired_metric(base, tuned, "epi", lower_is_better=True)
    # a: 0.3 -> 0.2 (-0.1, won), b: 0.3 -> 0.5 (+0.2, lost), c: no base value (left out)
    assert out["prompts_compared"] == 2 and out["delta"] == pytest.approx(0.05)
    assert out["prompt_win_rate"] == pytest.approx(0.5)
    assert out["ci"][0] == pytest.approx(-0.1) and out["ci"][1] == pytest.approx(0.2)
    assert paired_metric(base, tuned, "missing", True) == {
        "delta": None,
        "ci": None,
        "prompt_win_rate": None,
        "prompts_compared": 0,
    }
