"""``gail-robot sweep``: K seeds (× a grid) of one config as run directories on Ray, then a summary.

Every argument is checked (config, ``--set`` and grid values by the train command's own rules,
the demo file, the normalisation) before anything is written or Ray is started.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from gail_robot.errors import UserError

if TYPE_CHECKING:
    from gail_robot.sweep.plan import RunPlan, SweepArgs
    from gail_robot.sweep.report import Reference


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file, or the name of a shipped config (e.g. Hopper-v5)")
    parser.add_argument("--seeds", type=int, required=True, metavar="K", help="number of seeds")
    parser.add_argument(
        "--seed-start", type=int, default=0, metavar="S", help="first seed (seeds S .. S+K-1; default 0)"
    )
    parser.add_argument("--steps", type=int, required=True, metavar="N", help="env steps per run")
    parser.add_argument("--out", required=True, metavar="DIR", help="sweep directory (rerun it to resume)")
    parser.add_argument("--demos", metavar="FILE", help="demo file for gail / bc (and the expert return)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field in every run, as for train (repeatable)",
    )
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="run every seed for each value (repeatable: the cross product of all --grid keys)",
    )
    parser.add_argument(
        "--ray-address", metavar="ADDRESS", help="Ray cluster to run on (default $RAY_ADDRESS, else local)"
    )
    parser.add_argument(
        "--expert-return",
        type=float,
        metavar="R",
        help="return of a normalised score of 1 (default: the demos')",
    )
    parser.add_argument(
        "--random-return", type=float, default=0.0, metavar="R0", help="return of a score of 0 (default 0)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (run lines stay)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite summary.json/.md and curves.png from the runs finished so far; start nothing",
    )


def main(args: argparse.Namespace) -> int:
    from gail_robot.cluster import require_ray
    from gail_robot.sweep.plan import SweepArgs, build_group_configs, parse_grid, plan_runs, resolve_config
    from gail_robot.sweep.report import reference_returns
    from gail_robot.sweep.runner import run_sweep

    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    if args.seed_start < 0:
        raise UserError(f"--seed-start must be >= 0, got {args.seed_start}")
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    demos = None
    if args.demos is not None:
        demos = Path(args.demos)
        if not demos.is_file():
            raise UserError(f"demo file not found: {demos}")
        demos = demos.resolve()
    sweep_args = SweepArgs(
        config=args.config,
        config_path=resolve_config(args.config),
        steps=args.steps,
        seeds=args.seeds,
        seed_start=args.seed_start,
        demos=demos,
        sets=list(args.overrides),
        grid=parse_grid(args.grid, args.overrides),
    )
    runs = plan_runs(sweep_args)
    configs = build_group_configs(sweep_args, runs)
    if demos is None:  # demos named in the config itself also give the expert return
        first = next(iter(configs.values()))
        named = {"gail": first.gail.demos, "bc": first.bc.demos}.get(first.algo)
        if isinstance(named, list):  # bc over several files: the first gives the expert return
            named = named[0] if named else None
        demos = Path(named) if named else None
    reference = reference_returns(args.expert_return, args.random_return, demos)
    if args.report_only:
        return _report_only(out, sweep_args, runs, reference)
    require_ray()  # a missing extra is one line before anything is written
    run_sweep(
        out,
        sweep_args,
        configs,
        reference,
        ray_address=args.ray_address,
        progress=not args.no_progress,
    )
    return 0


def _report_only(out: Path, sweep_args: SweepArgs, runs: list[RunPlan], reference: Reference) -> int:
    """The reports of a sweep that may still be running elsewhere (each file is written atomically)."""
    from gail_robot.sweep.plan import EVAL_FILE
    from gail_robot.sweep.report import write_reports

    finished = sum((out / run.name / EVAL_FILE).is_file() for run in runs)
    if not finished:
        raise UserError(f"{out}: no finished run of this sweep to report on")
    path = write_reports(out, sweep_args, runs, reference)
    print(f"{path} ({finished} of {len(runs)} runs finished)")
    return 0
