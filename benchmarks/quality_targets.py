"""Every row of every quality table against the target it has to meet: one status board.

``python benchmarks/quality.py --overview`` reads the committed summaries of
:mod:`quality_tables` (``benchmarks/results/<table>/<task>-<row>.json``, nothing is run) and writes
``benchmarks/results/overview.md``: per row and grid point the seeds finished, the IQM and 95 % CI of
the normalised score (and of the success rate on the arm tasks), the row's target and whether the
finished seeds meet it. Rows that no sweep has summarised yet are listed as ``to run``, so the board
also says what is left.

The targets (docs/DESIGN.md §9.3): a walker's GAIL rows (from scratch or from BC, either generator)
IQM ≥ 0.95 and CI lower bound ≥ 0.90; an arm row success IQM ≥ 0.9; the classic-control GAIL rows
IQM ≥ 0.95 on CartPole with 1 demo and ≥ 0.9 on Acrobot and MountainCar with 10; the humanoid from a
random policy (the stretch) IQM ≥ 0.8. BC rows off the arm tasks, the AIRL rows and the other demo counts are
references and have none (status ``—``).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quality_tables import RESULTS, TABLES, Row, method_name, success_estimate

#: Seeds every row is run with (``--seeds`` default of the tables).
SEEDS = 5
WALKER_TABLES = ("hopper", "walkers", "humanoid")


@dataclass(frozen=True)
class Target:
    """What a row's finished seeds must show: IQM of ``metric`` ≥ ``iqm`` (and CI low ≥ ``ci_low``)."""

    iqm: float
    ci_low: float | None = None
    metric: str = "normalised"  # or "success"

    def __str__(self) -> str:
        text = f"{'success ' if self.metric == 'success' else ''}IQM ≥ {self.iqm:.2f}"
        return text + (f", CI low ≥ {self.ci_low:.2f}" if self.ci_low is not None else "")

    def met(self, iqm: float, ci_low: float) -> bool:
        return iqm >= self.iqm and (self.ci_low is None or ci_low >= self.ci_low)


def target(table: str, row: Row, overrides: dict[str, str]) -> Target | None:
    """The issue's target for one grid point of a row, or ``None`` for a reference row."""
    if table == "arm":
        return Target(0.9, metric="success")
    if table in WALKER_TABLES and row.method == "gail":
        return Target(0.8) if row.variant == "from scratch" else Target(0.95, 0.90)
    if table == "classic" and row.method == "gail":
        demos = overrides.get("gail.max_demos")
        if row.task == "CartPole-v1" and demos == "1":
            return Target(0.95)
        if row.task != "CartPole-v1" and demos == "10":
            return Target(0.9)
    return None


def grid_points(row: Row) -> list[dict[str, str]]:
    """Every grid point a row's sweep runs (its generators crossed with its ``grid``), as overrides."""
    axes: list[tuple[str, list[str]]] = []
    if row.method not in ("bc", "expert"):
        axes.append(("gail.generator", list(row.generators)))
    for spec in row.grid:
        key, values = spec.split("=", 1)
        axes.append((key, values.split(",")))
    keys = [key for key, _ in axes]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(v for _, v in axes))]


def _success(summary: dict[str, Any], overrides: dict[str, str]) -> tuple[float, float, float] | None:
    runs = summary.get("runs", [])
    return success_estimate(
        [r["success_rate"] for r in runs if r["overrides"] == overrides and r.get("success_rate") is not None]
    )


def overview_rows(results: Path = RESULTS) -> list[dict[str, Any]]:
    """One entry per table row and grid point: what is finished, its estimate, target and status."""
    entries: list[dict[str, Any]] = []
    for table, rows in TABLES.items():
        for row in rows:
            path = results / table / f"{row.task}-{row.directory}.json"
            summary = json.loads(path.read_text()) if path.is_file() else {}
            groups = {json.dumps(g["overrides"], sort_keys=True): g for g in summary.get("groups", [])}
            for overrides in grid_points(row):
                group = groups.get(json.dumps(overrides, sort_keys=True), {"n": 0})
                goal = target(table, row, overrides)
                entry: dict[str, Any] = {
                    "table": table,
                    "task": row.task,
                    "method": method_name(row, overrides),
                    "n": group["n"],
                    "target": str(goal) if goal else None,
                }
                if group["n"]:
                    entry.update(iqm=group["iqm"], ci_low=group["ci_low"], ci_high=group["ci_high"])
                    entry["success"] = _success(summary, overrides)
                entry["status"] = _status(goal, entry)
                entries.append(entry)
    return entries


def _status(goal: Target | None, entry: dict[str, Any]) -> str:
    n = entry["n"]
    if n == 0:
        return "to run"
    if goal is None:
        return "—" if n >= SEEDS else f"{n} of {SEEDS} seeds"
    if goal.metric == "success":
        if entry["success"] is None:
            return "no success rate"
        iqm, low, _ = entry["success"]
    else:
        iqm, low = entry["iqm"], entry["ci_low"]
    met = goal.met(iqm, low)
    if n < SEEDS:
        return f"{'on track' if met else 'below'}, {n} of {SEEDS} seeds"
    return "**met**" if met else "not met"


def overview_markdown(entries: list[dict[str, Any]]) -> str:
    lines = [
        "| table | task | method | seeds | IQM (normalised) [95 % CI] | success IQM [95 % CI] | target "
        "| status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        score = f"{e['iqm']:.2f} [{e['ci_low']:.2f}, {e['ci_high']:.2f}]" if e["n"] else "—"
        success = e.get("success")
        success_text = f"{success[0]:.2f} [{success[1]:.2f}, {success[2]:.2f}]" if success else "—"
        lines.append(
            f"| {e['table']} | {e['task']} | {e['method']} | {e['n']} of {SEEDS} | {score} | "
            f"{success_text} | {e['target'] or '—'} | {e['status']} |"
        )
    counts = {s: sum(e["status"] == s for e in entries) for s in ("**met**", "not met", "to run")}
    targeted = sum(e["target"] is not None for e in entries)
    lines.append("")
    lines.append(
        f"{len(entries)} rows; {targeted} with a target: {counts['**met**']} met, "
        f"{counts['not met']} not met over {SEEDS} seeds; {counts['to run']} rows not run yet."
    )
    return "\n".join(lines)


def main_overview(results: Path = RESULTS) -> int:
    """Write and print ``overview.md`` from the committed summaries."""
    text = overview_markdown(overview_rows(results))
    (results / "overview.md").write_text(text + "\n")
    print(text + f"\n\n{results / 'overview.md'}")
    return 0
