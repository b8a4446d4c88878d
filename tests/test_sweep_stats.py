"""IQM and percentile stratified-bootstrap intervals (gail_robot.sweep.stats): hand-computed cases,
and rliable itself (the method's reference implementation) when it is installed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gail_robot.sweep.stats import (
    DEFAULT_REPS,
    interval_estimate,
    iqm,
    median_time_to,
    stratified_bootstrap,
    trimmed_mean_rows,
)


def test_iqm_cuts_a_quarter_from_each_end_by_hand() -> None:
    assert iqm([8, 1, 7, 2, 6, 3, 5, 4]) == 4.5  # 2 cut from each end: mean(3, 4, 5, 6)
    assert iqm([0, 0, 0, 10]) == 0.0  # 1 cut from each end: mean(0, 0)
    assert iqm([1, 2, 9]) == 4.0  # floor(0.75) = 0 cut: the mean
    assert iqm([[1, 100], [2, 3], [4, -50]]) == 2.5  # all values of a (runs, tasks) matrix: cut 1 each end
    assert iqm([0.3]) == 0.3


def test_trimmed_mean_rows_is_one_trimmed_mean_per_row() -> None:
    rows = np.array([[5.0, 1.0, 3.0, 100.0], [0.0, 0.0, 1.0, 1.0]])
    np.testing.assert_array_equal(trimmed_mean_rows(rows), [4.0, 0.5])


def test_percentile_interval_of_an_enumerable_bootstrap() -> None:
    """Scores [0, 0, 3]: the IQM of a resample (nothing trimmed at n=3) is the number of 3s drawn,
    Binomial(3, 1/3): P = 8/27, 12/27, 6/27, 1/27 for 0..3. The exact 2.5 % quantile is 0; the 97.5 %
    quantile is 3 because P(<= 2) = 26/27 < 0.975."""
    scores = [0.0, 0.0, 3.0]
    resample_stats = sorted(iqm(list(r)) for r in itertools.product(scores, repeat=3))
    probability = {v: resample_stats.count(v) / 27 for v in set(resample_stats)}
    assert probability == {0.0: 8 / 27, 1.0: 12 / 27, 2.0: 6 / 27, 3.0: 1 / 27}
    estimate = interval_estimate(scores, reps=DEFAULT_REPS, seed=0)
    assert (estimate.point, estimate.low, estimate.high) == (1.0, 0.0, 3.0)
    values = stratified_bootstrap(scores, reps=20_000, seed=1)
    for v, p in probability.items():  # the resampling itself: frequencies within 4 sigma
        assert abs(np.mean(values == v) - p) < 4 * np.sqrt(p * (1 - p) / 20_000)


def test_degenerate_scores_give_a_point_interval() -> None:
    for scores in ([0.7] * 5, [0.4]):
        estimate = interval_estimate(scores)
        assert estimate.low == estimate.point == estimate.high == pytest.approx(scores[0], abs=1e-15)


def test_bootstrap_is_stratified_by_task_and_seedable() -> None:
    """Task 0 scores 0 and task 1 scores 100 in every run: a resample that mixed runs across tasks
    could move the mean off 50; stratified, every resample keeps each task's column."""
    scores = np.array([[0.0, 100.0], [0.0, 100.0], [0.0, 100.0]])
    assert set(stratified_bootstrap(scores, "mean", reps=500, seed=3)) == {50.0}
    noisy = np.random.default_rng(0).normal(size=(6, 2))
    a = interval_estimate(noisy, seed=5)
    assert a == interval_estimate(noisy, seed=5)
    assert a != interval_estimate(noisy, seed=6)
    assert a.low <= a.point <= a.high


def test_bad_scores_are_refused() -> None:
    with pytest.raises(ValueError):
        interval_estimate([])
    with pytest.raises(ValueError):
        interval_estimate([1.0, float("nan")])
    with pytest.raises(ValueError):
        interval_estimate([1.0], size=1.0)


def test_median_time_to_counts_never_as_infinitely_late() -> None:
    assert median_time_to([100, None, 300]) == 300
    assert median_time_to([100, 200, 300, None]) == 250
    assert median_time_to([100, None]) is None
    assert median_time_to([100, 200, None, None]) is None
    assert median_time_to([None]) is None
    assert median_time_to([]) is None


@pytest.mark.parametrize("shape", [(10, 1), (5, 3)])
def test_matches_rliable(shape: tuple[int, int]) -> None:
    """IQM to round-off (summation order) and the 95 % interval within Monte-Carlo error of
    ``rliable.library.get_interval_estimates`` (its defaults: percentile, no task bootstrap)."""
    library = pytest.importorskip("rliable.library")
    metrics = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(sum(shape))
    scores = rng.normal(size=shape) * np.arange(1, shape[1] + 1) * 10  # tasks on other scales
    assert iqm(scores) == pytest.approx(float(metrics.aggregate_iqm(scores)), rel=1e-12, abs=1e-12)
    np.random.seed(0)  # noqa: NPY002 (rliable's StratifiedBootstrap draws from NumPy's global RNG)
    points, intervals = library.get_interval_estimates(
        {"x": scores}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=10_000
    )
    ours = interval_estimate(scores, reps=200_000, seed=0)
    low, high = intervals["x"][:, 0]
    width = high - low
    # Monte-Carlo error of a 2.5 % quantile at 10,000 resamples: about 1 % of the width (measured)
    assert ours.low == pytest.approx(low, abs=0.04 * width)
    assert ours.high == pytest.approx(high, abs=0.04 * width)
    assert ours.point == pytest.approx(float(points["x"][0]), rel=1e-12, abs=1e-12)
