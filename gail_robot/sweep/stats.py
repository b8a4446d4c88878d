"""Aggregate scores over seeds: interquartile mean and percentile stratified-bootstrap intervals.

The method is rliable's (Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of the
Statistical Precipice"; ``rliable.metrics.aggregate_iqm`` and ``rliable.library.get_interval_estimates``
with its defaults ``method="percentile"``, ``task_bootstrap=False``), re-implemented with NumPy so that
the sweep needs neither rliable nor its dependencies (arch, pandas, scipy) at run time:

* **IQM** is the 25 % trimmed mean of all scores (``scipy.stats.trim_mean(x, 0.25, axis=None)``):
  ``k = floor(0.25 * n)`` values are cut from each end of the sorted scores and the rest averaged.
  With fewer than 4 scores nothing is cut and the IQM is the mean.
* **Stratified bootstrap**: scores are a ``(runs, tasks)`` matrix; each resample draws, for every
  task independently, ``runs`` run indices with replacement from that task's own runs (the strata
  are the tasks; runs are never mixed across tasks). A sweep group is one task, so its bootstrap is
  the plain bootstrap over its seeds.
* **Percentile interval**: the ``(1 - size) / 2`` and ``(1 + size) / 2`` quantiles of the statistic
  over the resamples (``numpy.percentile``, linear interpolation, as ``arch``'s ``conf_int`` does).

:data:`DEFAULT_REPS` resamples per interval (rliable's default is 50,000): measured, the Monte-Carlo
standard error of each 95 % bound is then about 3 % of the interval's width with 5 seeds and 1.5 % with
10 (with 3 seeds the bounds are simply the lowest and highest score: three copies of one seed are a
resample of probability 1/27 > 2.5 %), which is small beside the width itself, and keeps the curves
(one interval per step of their grid) cheap. Every function takes a
``seed``: the same scores and seed give the same interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

#: fraction cut from each end for the interquartile mean
IQM_TRIM = 0.25
#: bootstrap resamples per interval
DEFAULT_REPS = 2000
#: coverage of the intervals
DEFAULT_SIZE = 0.95


def trimmed_mean_rows(values: np.ndarray, proportion: float = IQM_TRIM) -> np.ndarray:
    """Trimmed mean of each row of ``values`` (``(rows, n)``): ``scipy.stats.trim_mean(row, proportion)``."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[-1]
    cut = int(proportion * n)  # scipy's lowercut: floor, the same count from both ends
    if n == 0 or cut >= n - cut:
        raise ValueError(f"cannot trim {proportion} from each end of {n} values")
    return np.sort(values, axis=-1)[..., cut : n - cut].mean(axis=-1)


def mean_rows(values: np.ndarray) -> np.ndarray:
    """Mean of each row of ``values``."""
    return np.asarray(values, dtype=np.float64).mean(axis=-1)


#: statistics by name: each maps ``(rows, n)`` to ``(rows,)``
STATISTICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"iqm": trimmed_mean_rows, "mean": mean_rows}


def iqm(scores: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean of all ``scores`` (any shape, flattened), as ``rliable.metrics.aggregate_iqm``."""
    flat = np.asarray(scores, dtype=np.float64).reshape(1, -1)
    return float(trimmed_mean_rows(flat)[0])


def _as_runs_by_tasks(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]  # one task
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"scores must be (runs,) or (runs, tasks) with at least one run, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("scores must be finite")
    return array


def stratified_bootstrap(
    scores: Sequence[float] | np.ndarray,
    statistic: str = "iqm",
    reps: int = DEFAULT_REPS,
    seed: int = 0,
) -> np.ndarray:
    """The bootstrap distribution of ``statistic`` over stratified resamples of ``scores``.

    Args:
        scores: ``(runs,)`` for one task or ``(runs, tasks)``.
        statistic: ``"iqm"`` or ``"mean"`` of all scores of a resample.
        reps: number of resamples.
        seed: seed of the resampling RNG (``numpy.random.default_rng``).

    Returns:
        ``(reps,)`` values of the statistic.
    """
    array = _as_runs_by_tasks(scores)
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    runs, tasks = array.shape
    rng = np.random.default_rng(seed)
    # one run index per (resample, slot, task): task t only ever draws its own column's runs
    index = rng.integers(0, runs, size=(reps, runs, tasks))
    resampled = array[index, np.arange(tasks)]
    return STATISTICS[statistic](resampled.reshape(reps, runs * tasks))


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile bootstrap interval."""

    point: float
    low: float
    high: float


def interval_estimate(
    scores: Sequence[float] | np.ndarray,
    statistic: str = "iqm",
    reps: int = DEFAULT_REPS,
    size: float = DEFAULT_SIZE,
    seed: int = 0,
) -> Interval:
    """``statistic`` of ``scores`` and its ``size`` percentile stratified-bootstrap interval.

    Args:
        scores: ``(runs,)`` for one task or ``(runs, tasks)``.
        statistic: ``"iqm"`` or ``"mean"``.
        reps: bootstrap resamples.
        size: coverage, in (0, 1).
        seed: seed of the resampling RNG.
    """
    if not 0.0 < size < 1.0:
        raise ValueError(f"size must be in (0, 1), got {size}")
    array = _as_runs_by_tasks(scores)
    point = float(STATISTICS[statistic](array.reshape(1, -1))[0])
    values = stratified_bootstrap(array, statistic, reps, seed)
    alpha = (1.0 - size) / 2.0
    low, high = np.percentile(values, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return Interval(point=point, low=float(low), high=float(high))


def median_time_to(times: Sequence[float | None]) -> float | None:
    """Median over runs of the time a threshold was first reached, ``None`` meaning "never".

    A run that never gets there counts as infinitely late, so the median exists while more than
    half of the runs got there (for an even count: both middle runs) and is ``None`` otherwise.
    """
    if not times:
        return None
    values = np.sort(np.array([np.inf if t is None else float(t) for t in times]))
    median = float(np.median(values))
    return median if np.isfinite(median) else None
