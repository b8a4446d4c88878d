"""The sweep's reports: ``summary.json``, ``summary.md`` and ``curves.png`` (docs/DESIGN.md §9.2).

Scores are normalised returns ``(R - R0) / (R_expert - R0)``: ``R_expert`` from ``--expert-return``,
else the mean return of the demos (the sum of each demo's ``rewards``); ``R0`` from ``--random-return``
(default 0). A grid point (a "group") aggregates its seeds' final evaluations: mean, IQM with a 95 %
percentile stratified-bootstrap interval (:mod:`gail_robot.sweep.stats`), the fraction of seeds at or
above 0.9, and the median over seeds of the env steps and training wall time at which a run's
periodic evaluation (``eval_return`` rows of its ``metrics.jsonl``) first reached 0.9.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gail_robot.errors import UserError
from gail_robot.sweep.plan import (
    EVAL_EPISODES,
    EVAL_FILE,
    FINISHED,
    RunPlan,
    SweepArgs,
    atomic_write_json,
    atomic_write_text,
    grid_points,
    group_label,
    read_json,
    run_state,
)
from gail_robot.sweep.stats import DEFAULT_REPS, interval_estimate, median_time_to

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
CURVES_PNG = "curves.png"

#: the normalised score counted as "solved" (frac_ge_0.9, median_*_to_0.9)
THRESHOLD = 0.9


@dataclass(frozen=True)
class Reference:
    """The returns a normalised score of 1 and 0 stand for, and where the first came from."""

    expert: float
    random: float
    source: str

    def normalize(self, value: float) -> float:
        return (value - self.random) / (self.expert - self.random)


def demos_mean_return(path: Path) -> tuple[float, int]:
    """Mean over the demos of ``path`` of the sum of each demo's ``rewards``, and the demo count."""
    from gail_robot.data import DemoDataset

    with DemoDataset(path) as demos:
        returns = [float(np.sum(demos.demo(name).rewards, dtype=np.float64)) for name in demos.demo_names]
    if not returns:
        raise UserError(f"{path} holds no demos: give --expert-return")
    return float(np.mean(returns)), len(returns)


def reference_returns(expert_return: float | None, random_return: float, demos: Path | None) -> Reference:
    """The normalisation of the sweep's scores.

    Raises:
        UserError: neither ``--expert-return`` nor demos, a non-finite value, or equal returns.
    """
    if expert_return is not None:
        expert, source = float(expert_return), "--expert-return"
    elif demos is not None:
        expert, count = demos_mean_return(demos)
        source = f"the mean return of {count} demos in {demos}"
    else:
        raise UserError("normalised scores need --expert-return R or --demos FILE (its mean return)")
    if not (math.isfinite(expert) and math.isfinite(random_return)):
        raise UserError("--expert-return and --random-return must be finite numbers")
    if expert == random_return:
        raise UserError(f"the expert return equals the random return ({expert}): scores cannot be normalised")
    return Reference(expert=expert, random=float(random_return), source=source)


# ------------------------------------------------------------------------------ reading runs


@dataclass
class RunResult:
    """A finished run: its final evaluation and its periodic evaluation curve."""

    plan: RunPlan
    evaluation: dict[str, Any]
    curve: list[tuple[float, float | None, float]]  # (env_steps, wall_time, normalised eval_return)

    def first_reach(self, threshold: float = THRESHOLD) -> tuple[float | None, float | None]:
        """Env steps and wall time of the first periodic evaluation at or above ``threshold``."""
        for steps, wall, score in self.curve:
            if score >= threshold:
                return steps, wall
        return None, None


def eval_curve(run_dir: Path, reference: Reference) -> list[tuple[float, float | None, float]]:
    """``(env_steps, wall_time, normalised eval_return)`` of every evaluation row in ``metrics.jsonl``."""
    from gail_robot.plot import read_metrics

    if not (run_dir / "metrics.jsonl").is_file():
        return []
    curve = []
    for row in read_metrics(run_dir):
        value, steps = row.get("eval_return"), row.get("env_steps")
        if isinstance(value, int | float) and isinstance(steps, int | float) and math.isfinite(value):
            wall = row.get("wall_time")
            curve.append(
                (
                    float(steps),
                    float(wall) if isinstance(wall, int | float) else None,
                    reference.normalize(float(value)),
                )
            )
    return curve


def collect(sweep_dir: Path, runs: Sequence[RunPlan], reference: Reference) -> list[RunResult]:
    """The finished runs among ``runs`` (those with ``eval.json``), in plan order."""
    results = []
    for plan in runs:
        run_dir = sweep_dir / plan.name
        if run_state(run_dir) != FINISHED:
            continue
        results.append(RunResult(plan, read_json(run_dir / EVAL_FILE), eval_curve(run_dir, reference)))
    return results


# ------------------------------------------------------------------------------ summary


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value


def summarize(
    results: Sequence[RunResult],
    groups: Sequence[dict[str, str]],
    reference: Reference,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
) -> dict[str, Any]:
    """The content of ``summary.json``: one record per finished run and one per grid point."""
    runs = []
    for result in results:
        ev = result.evaluation
        runs.append(
            {
                "run_dir": result.plan.name,
                "seed": result.plan.seed,
                "overrides": dict(result.plan.overrides),
                "mean_return": ev["mean_return"],
                "std_return": ev["std_return"],
                "normalized": reference.normalize(ev["mean_return"]),
                "success_rate": ev.get("success_rate"),
                "env_steps": ev.get("env_steps"),
                "wall_s": ev.get("wall_s"),
            }
        )
    out_groups = []
    for point in groups:
        members = [r for r in results if r.plan.overrides == point]
        scores = np.array([reference.normalize(r.evaluation["mean_return"]) for r in members])
        record: dict[str, Any] = {"overrides": dict(point), "n": len(members)}
        if len(members):
            estimate = interval_estimate(scores, "iqm", reps=reps, seed=seed)
            reached = [r.first_reach() for r in members]
            record.update(
                {
                    "mean": float(scores.mean()),
                    "iqm": estimate.point,
                    "ci_low": estimate.low,
                    "ci_high": estimate.high,
                    "frac_ge_0.9": float(np.mean(scores >= THRESHOLD)),
                    "median_steps_to_0.9": median_time_to([steps for steps, _ in reached]),
                    "median_wall_to_0.9": median_time_to(
                        [wall if steps is not None else None for steps, wall in reached]
                    ),
                }
            )
        else:
            for key in ("mean", "iqm", "ci_low", "ci_high", "frac_ge_0.9"):
                record[key] = None
            record["median_steps_to_0.9"] = record["median_wall_to_0.9"] = None
        out_groups.append(record)
    return {"runs": runs, "groups": out_groups}


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _steps(value: Any) -> str:
    return "–" if value is None else f"{int(value):,}"


def markdown(
    summary: dict[str, Any],
    args: SweepArgs,
    reference: Reference,
    results: Sequence[RunResult],
    missing: Sequence[RunPlan],
    reps: int = DEFAULT_REPS,
) -> str:
    """``summary.md``: one table row per grid point, then one per run."""
    lines = [
        f"# Sweep: {args.config}, {args.seeds} seeds × {len(summary['groups'])} grid point(s), "
        f"{args.steps:,} env steps per run",
        "",
        f"Normalised score = (return − R0) / (R_expert − R0) with R_expert = {reference.expert:g} (from "
        f"{reference.source}) and R0 = {reference.random:g}. Final evaluation: {EVAL_EPISODES} deterministic "
        "episodes per run. IQM: interquartile mean over seeds (25 % trimmed mean; with fewer than 4 seeds "
        f"nothing is trimmed). 95 % CI: percentile stratified bootstrap over seeds, {reps} resamples. "
        f"Median steps to {THRESHOLD}: first periodic evaluation at or above it (seeds that never get "
        "there count as never; – when half or more never do).",
        "",
        "| overrides | n | IQM | 95 % CI | mean | frac ≥ 0.9 | success | median steps to 0.9 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for group in summary["groups"]:
        members = [r for r in summary["runs"] if r["overrides"] == group["overrides"]]
        success = [r["success_rate"] for r in members if r["success_rate"] is not None]
        ci = "–" if group["ci_low"] is None else f"[{group['ci_low']:.2f}, {group['ci_high']:.2f}]"
        lines.append(
            f"| {group_label(group['overrides'])} | {group['n']} | {_fmt(group['iqm'])} | {ci} | "
            f"{_fmt(group['mean'])} | {_fmt(group['frac_ge_0.9'])} | "
            f"{_fmt(float(np.mean(success)) if success else None)} | {_steps(group['median_steps_to_0.9'])} |"
        )
    lines += [
        "",
        "| run | seed | return | normalised | success | env steps | wall s | first ≥ 0.9 at |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for record, result in zip(summary["runs"], results, strict=True):
        reached, _ = result.first_reach()
        lines.append(
            f"| {record['run_dir']} | {record['seed']} | {record['mean_return']:.1f} ± "
            f"{record['std_return']:.1f} | {record['normalized']:.2f} | {_fmt(record['success_rate'])} | "
            f"{_steps(record['env_steps'])} | {_fmt(record['wall_s'], 0)} | {_steps(reached)} |"
        )
    if missing:
        lines += [
            "",
            "Not finished (rerun the same command to resume them): " + ", ".join(p.name for p in missing),
        ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ curves


def group_curve(
    curves: Sequence[Sequence[tuple[float, float | None, float]]], reps: int = DEFAULT_REPS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """IQM over runs of normalised periodic evaluations and its 95 % bootstrap band, on a common grid.

    The grid is every evaluation step of the runs inside the range all runs cover; each run is
    interpolated linearly onto it. Returns ``(steps, iqm, low, high)`` (empty without a common range).
    """
    curves = [c for c in curves if c]
    if not curves:
        empty = np.zeros(0)
        return empty, empty, empty, empty
    start = max(c[0][0] for c in curves)
    stop = min(c[-1][0] for c in curves)
    grid = np.unique([s for c in curves for s, _, _ in c if start <= s <= stop])
    values = np.stack(
        [np.interp(grid, [s for s, _, _ in c], [v for _, _, v in c]) for c in curves], axis=1
    )  # (points, runs)
    estimates = [interval_estimate(row, "iqm", reps=reps, seed=seed) for row in values]
    return (
        grid,
        np.array([e.point for e in estimates]),
        np.array([e.low for e in estimates]),
        np.array([e.high for e in estimates]),
    )


def plot_curves(
    path: Path, results: Sequence[RunResult], groups: Sequence[dict[str, str]], reps: int = DEFAULT_REPS
) -> Path:
    """``curves.png``: per grid point, the IQM over seeds of the normalised periodic evaluation return
    against env steps, with its 95 % bootstrap band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    drawn = 0
    for point in groups:
        members = [r for r in results if r.plan.overrides == point]
        steps, mid, low, high = group_curve([r.curve for r in members], reps=reps)
        if not len(steps):
            continue
        label = f"{group_label(point)} (n={len(members)})"
        (line,) = ax.plot(steps, mid, label=label, marker="o" if len(steps) < 20 else None, markersize=3)
        if len(members) > 1:
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        drawn += 1
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.axhline(THRESHOLD, color="grey", linewidth=0.8, linestyle="--")
    if not drawn:
        ax.text(0.5, 0.5, "no periodic evaluations yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("env steps")
    ax.set_ylabel("normalised evaluation return")
    ax.set_title("periodic evaluations: IQM over seeds, 95 % stratified-bootstrap band", fontsize=10)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_reports(
    sweep_dir: Path, args: SweepArgs, runs: Sequence[RunPlan], reference: Reference, reps: int = DEFAULT_REPS
) -> Path:
    """Write ``summary.json``, ``summary.md`` and ``curves.png`` from the finished runs; the JSON's path."""
    results = collect(sweep_dir, runs, reference)
    finished = {r.plan.name for r in results}
    groups = grid_points(args.grid)
    summary = summarize(results, groups, reference, reps=reps)
    atomic_write_json(sweep_dir / SUMMARY_JSON, summary)
    missing = [p for p in runs if p.name not in finished]
    atomic_write_text(sweep_dir / SUMMARY_MD, markdown(summary, args, reference, results, missing, reps))
    plot_curves(sweep_dir / CURVES_PNG, results, groups, reps=reps)
    return sweep_dir / SUMMARY_JSON
