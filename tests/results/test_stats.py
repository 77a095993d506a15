"""Bootstrap CIs of accuracy, and the paired difference that says whether TTT beats global."""

import numpy as np
import pytest

from tttlab.results import (
    Estimate,
    accuracy_table,
    binomial_se,
    bootstrap_ci,
    paired_bootstrap_diff,
)


def correct(n: int, rate: float, seed: int) -> np.ndarray:
    """0/1 correctness of n test points, each right with probability `rate`."""
    return (np.random.default_rng(seed).random(n) < rate).astype(float)


def test_ci_contains_the_mean_and_narrows_with_more_points():
    small = bootstrap_ci(correct(200, 0.8, seed=1))
    large = bootstrap_ci(correct(20_000, 0.8, seed=1))
    for est in (small, large):
        assert est.low <= est.mean <= est.high
    assert large.high - large.low < (small.high - small.low) / 5


def test_same_seed_same_ci_other_seed_other_ci():
    values = correct(500, 0.7, seed=2)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)


def test_known_rate_is_covered():
    est = bootstrap_ci(correct(5000, 0.9, seed=5), level=0.99)
    assert est.low < 0.9 < est.high


def test_level_sets_the_width():
    values = correct(1000, 0.6, seed=6)
    wide, narrow = bootstrap_ci(values, level=0.99), bootstrap_ci(values, level=0.5)
    assert wide.low < narrow.low and narrow.high < wide.high


def test_many_points_many_resamples_stay_fast_and_bounded():
    # 10k points x 1000 resamples is drawn in chunks, never as one 10M-index matrix.
    est = bootstrap_ci(correct(10_000, 0.81, seed=7), n_boot=1000)
    assert isinstance(est, Estimate) and est.high - est.low < 0.02


def test_paired_diff_of_identical_methods_is_exactly_zero():
    a = correct(300, 0.75, seed=8)
    assert paired_bootstrap_diff(a, a.copy()) == Estimate(0.0, 0.0, 0.0)


def test_paired_diff_detects_a_small_consistent_gain():
    # b is a with 2% of its errors fixed: two separate CIs overlap, the paired one excludes 0.
    a = correct(5000, 0.8, seed=9)
    b = a.copy()
    wrong = np.flatnonzero(a == 0)
    b[wrong[: len(a) // 50]] = 1
    diff = paired_bootstrap_diff(b, a)
    assert diff.mean == pytest.approx(0.02)
    assert diff.low > 0
    assert bootstrap_ci(a).high > bootstrap_ci(b).low


def test_accuracy_table_per_method():
    labels = np.array([0, 1, 2, 1, 0, 2, 1, 1])
    records = {"global": np.array([0, 1, 2, 0, 0, 2, 1, 0]), "majority": np.ones(8, dtype=int)}
    table = accuracy_table(records, labels, n_boot=200)
    assert table["global"]["accuracy"] == 0.75
    assert table["majority"]["accuracy"] == 0.5
    assert table["global"]["n"] == 8
    assert table["majority"]["se"] == np.sqrt(0.5 * 0.5 / 8)
    for row in table.values():
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"]


def test_the_binomial_standard_error_is_the_papers_error_bar():
    # MNIST: global 98.57 +- 0.12 and TTT 99.01 +- 0.10 on the 10,000 test points.
    assert round(100 * binomial_se(0.9857, 10_000), 2) == 0.12
    assert round(100 * binomial_se(0.9901, 10_000), 2) == 0.10
    # About a quarter of the bootstrap 95% CI's width, as a normal approximation says.
    correct = (np.arange(10_000) % 50 != 0).astype(float)  # 98% of points right
    ci = bootstrap_ci(correct, n_boot=2000)
    assert abs((ci.high - ci.low) / (2 * 1.96) - binomial_se(0.98, 10_000)) < 2e-4
    with pytest.raises(ValueError, match="n must be a whole number >= 1"):
        binomial_se(0.5, 0)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: bootstrap_ci(np.array([])), "empty"),
        (lambda: bootstrap_ci(np.array([1.0, np.nan])), "NaN"),
        (lambda: bootstrap_ci(np.ones((2, 2))), "1-D"),
        (lambda: bootstrap_ci(np.ones(3), level=1.0), "level"),
        (lambda: bootstrap_ci(np.ones(3), level=0.0), "level"),
        (lambda: bootstrap_ci(np.ones(3), n_boot=0), "n_boot"),
        (lambda: paired_bootstrap_diff(np.ones(3), np.ones(4)), "same test points"),
        (lambda: accuracy_table({"ttt": np.ones(3)}, np.ones(4)), "'ttt'"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
