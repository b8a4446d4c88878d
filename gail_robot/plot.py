"""``gail-robot plot``: learning curves of one or more run directories from their metrics.jsonl."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from gail_robot.errors import UserError

# (metric, panel title); panels without data in any run are skipped.
PANELS: list[tuple[str, str]] = [
    ("episode_return", "training episode return (true env reward)"),
    ("eval_return", "deterministic evaluation return"),
    ("episode_length", "training episode length"),
    ("forward_velocity", "forward velocity (m/s)"),
    ("success_rate", "training success rate"),
    ("disc_acc_expert", "discriminator accuracy on expert"),
    ("disc_acc_policy", "discriminator accuracy on policy"),
    ("disc_loss", "discriminator loss"),
    ("approx_kl", "KL(old || new)"),
    ("entropy", "policy entropy"),
    ("value_loss", "value loss"),
    ("steps_per_s", "env steps per second"),
    ("valid_nll", "BC validation NLL"),
]


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of ``run_dir/metrics.jsonl`` (skipping a torn last line of a live run)."""
    path = Path(run_dir)
    path = path / "metrics.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"{run_dir}: no metrics.jsonl (is it a run directory?)")
    rows = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break  # the last line of a run still being written
            raise UserError(f"{path}:{number}: corrupt metrics line") from exc
    return rows


def plot_runs(
    run_dirs: list[str], out: str | Path, x_axis: str = "env_steps", metrics: list[str] | None = None
) -> Path:
    """Write one PNG with a panel per metric, one line per run.

    Args:
        run_dirs: run directories.
        out: PNG path.
        x_axis: ``env_steps``, ``wall_time`` or (BC) ``epoch``.
        metrics: metric names to plot (default: every known metric present).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {str(r): read_metrics(r) for r in run_dirs}
    wanted = [(m, t) for m, t in PANELS if metrics is None or m in metrics]
    if metrics:
        known = {m for m, _ in PANELS}
        wanted += [(m, m) for m in metrics if m not in known]
    panels = [
        (m, t)
        for m, t in wanted
        if any(isinstance(row.get(m), int | float) for rows in runs.values() for row in rows)
    ]
    if not panels:
        raise UserError("no plottable metrics in the given runs")
    cols = min(3, len(panels))
    rows_n = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.2 * cols, 3.6 * rows_n), squeeze=False)
    for ax, (metric, title) in zip(axes.flat, panels, strict=False):
        for name, rows in runs.items():
            points = [
                (row[x_axis], row[metric])
                for row in rows
                if isinstance(row.get(metric), int | float) and isinstance(row.get(x_axis), int | float)
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, label=Path(name).name, marker="o" if len(xs) < 20 else None, markersize=3)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(x_axis.replace("_", " "))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if len(runs) > 1 and handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(runs)), fontsize=9)
    fig.tight_layout(rect=(0, 0.05 if len(runs) > 1 else 0, 1, 1))
    out = Path(out)
    if not out.parent.exists():
        raise UserError(f"output directory does not exist: {out.parent}")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (with metrics.jsonl)")
    parser.add_argument("--out", required=True, metavar="FILE.png", help="output image")
    parser.add_argument(
        "--x", default="env_steps", choices=["env_steps", "wall_time", "epoch"], help="x axis"
    )
    parser.add_argument(
        "--metric", action="append", default=None, help="plot only these metrics (repeatable)"
    )


def main(args: argparse.Namespace) -> int:
    out = plot_runs(args.runs, args.out, x_axis=args.x, metrics=args.metric)
    print(f"wrote {out}")
    return 0
