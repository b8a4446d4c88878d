"""The sweep's driver: claim the sweep directory, schedule the unfinished runs on Ray, collect them.

Each unfinished run becomes one Ray task (:func:`gail_robot.sweep.task.execute`) that reserves the
CPUs the run itself uses (:func:`gail_robot.sweep.plan.cpu_need`), so Ray runs as many at once as
the cluster's cores allow. Finished runs (``eval.json``) are never touched; runs with a checkpoint
resume; the others start over in a cleared directory. Interrupting the driver (Ctrl-C, SIGTERM)
cancels every task, which kills its training subprocess (docs/DESIGN.md §9.2).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from gail_robot.errors import UserError
from gail_robot.sweep.plan import (
    EVALUATE,
    FINISHED,
    FRESH,
    ID_FILE,
    LOCK_FILE,
    RESUME,
    SWEEP_FILE,
    RunPlan,
    SweepArgs,
    atomic_write_json,
    atomic_write_text,
    check_compatible,
    cpu_need,
    file_sha256,
    plan_runs,
    read_json,
    run_state,
)
from gail_robot.sweep.report import Reference, write_reports
from gail_robot.sweep.task import ProgressEvents, RunJob, execute, pack_dir, unpack_into

#: where shipped run directories are unpacked before they replace ``DIR/<run>`` in one rename
INCOMING = ".incoming"


@contextlib.contextmanager
def claimed(sweep_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``sweep_dir`` (one driver per sweep directory at a time)."""
    with (sweep_dir / LOCK_FILE).open("a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another gail-robot sweep is running on {sweep_dir}") from None
        yield


def record_arguments(sweep_dir: Path, args: SweepArgs) -> None:
    """Write ``sweep.json``, after checking that an existing one describes the same sweep."""
    new = args.to_json()
    path = sweep_dir / SWEEP_FILE
    if path.exists():
        check_compatible(read_json(path), new, sweep_dir)
    atomic_write_json(path, new)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt for the block, so both cancel the tasks the same way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def install_shipped(data: bytes, sweep_dir: Path, name: str) -> None:
    """Replace ``sweep_dir/name`` by the shipped run directory in one rename (a rerun sees the old run
    or the new one, never a mix)."""
    incoming = sweep_dir / INCOMING
    staging = incoming / uuid.uuid4().hex
    unpack_into(data, staging)
    target = sweep_dir / name
    target.parent.mkdir(parents=True, exist_ok=True)
    old = incoming / f"{uuid.uuid4().hex}-old"
    if target.exists():
        os.rename(target, old)
    os.rename(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def _max_node_cpus(ray: Any) -> int:
    cpus = [int(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    best = max(cpus, default=0)
    if best < 1:
        raise UserError("the Ray cluster has no node with a CPU")
    return best


def _describe(evaluation: dict[str, Any], reference: Reference) -> str:
    score = reference.normalize(evaluation["mean_return"])
    return f"return {evaluation['mean_return']:.1f} ± {evaluation['std_return']:.1f} (normalised {score:.2f})"


def run_sweep(
    sweep_dir: Path,
    args: SweepArgs,
    configs: dict[str, Any],
    reference: Reference,
    *,
    ray_address: str | None = None,
    progress: bool = True,
    force_ship: bool = False,
    out: TextIO | None = None,
) -> Path:
    """Run (or continue) the sweep in ``sweep_dir`` and write its reports.

    Args:
        sweep_dir: the sweep directory (created).
        args: the sweep's arguments (checked against ``sweep.json`` when it exists).
        configs: the resolved config of every grid point (:func:`~gail_robot.sweep.plan.build_group_configs`).
        reference: the normalisation of scores.
        ray_address: cluster to join (default ``$RAY_ADDRESS``, else a local Ray with all cores).
        progress: show a progress bar over runs (the per-run lines are printed either way).
        force_ship: make every task run in a temporary directory and ship its run back, as on a
            cluster without a shared filesystem (for tests).
        out: where the per-run lines go (default stdout).

    Returns:
        The path of ``summary.json``.

    Raises:
        UserError: another sweep on the directory, other arguments than the sweep there, Ray
            problems, or runs that failed (after the reports of the others are written).
    """
    from tqdm import tqdm

    sweep_dir = sweep_dir.resolve()
    if sweep_dir.is_dir() and not (sweep_dir / SWEEP_FILE).exists():
        # runs without a checkpoint are cleared before they start: never in someone else's directory
        if any(p.name != LOCK_FILE for p in sweep_dir.iterdir()):
            raise UserError(f"{sweep_dir} is not empty and holds no {SWEEP_FILE}: choose another --out")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with claimed(sweep_dir):
        record_arguments(sweep_dir, args)
        runs = plan_runs(args)
        shutil.rmtree(sweep_dir / INCOMING, ignore_errors=True)  # an interrupted install's leftovers
        todo = [r for r in runs if run_state(sweep_dir / r.name) != FINISHED]
        bar = tqdm(
            total=len(runs), initial=len(runs) - len(todo), unit="run", desc="sweep", disable=not progress
        )

        def say(line: str) -> None:
            bar.write(line, file=out)

        say(f"{sweep_dir}: {len(runs)} runs, {len(runs) - len(todo)} finished, {len(todo)} to run")
        failures: list[str] = []
        try:
            if todo:
                failures = _schedule(
                    sweep_dir, args, configs, reference, todo, ray_address, force_ship, say, bar
                )
        finally:
            bar.close()
        summary = write_reports(sweep_dir, args, runs, reference)
    say(f"summary: {summary}")
    if failures:
        raise UserError(
            f"{len(failures)} of {len(runs)} runs failed ({failures[0]}); rerun the same command to retry"
        )
    return summary


def _schedule(
    sweep_dir: Path,
    args: SweepArgs,
    configs: dict[str, Any],
    reference: Reference,
    todo: list[RunPlan],
    ray_address: str | None,
    force_ship: bool,
    say: Callable[[str], None],
    bar: Any,
) -> list[str]:
    """Submit ``todo`` as Ray tasks and wait for them; the failures as one-line messages."""
    from gail_robot.cluster import connected, require_ray

    ray = require_ray()
    # after connecting: ray.init installs its own SIGTERM handler in the driver
    with connected(ray_address) as info, sigterm_interrupts():
        max_cpus = _max_node_cpus(ray)
        # a joined cluster may have nodes that do not see this directory: be ready to ship runs there
        may_ship = force_ship or not info.owned
        run_address = info.address if info.address != "local" else ray.get_runtime_context().gcs_address
        sweep_id = uuid.uuid4().hex
        atomic_write_text(sweep_dir / ID_FILE, sweep_id + "\n")
        demos_sha = file_sha256(args.demos) if args.demos is not None else None
        demos_ref = ray.put(args.demos.read_bytes()) if may_ship and args.demos is not None else None
        events = ray.remote(num_cpus=0)(ProgressEvents).remote()
        remote = ray.remote(execute)
        costs = {run.name: cpu_need(configs[run.group], max_cpus, info.cpus) for run in todo}
        waiting = list(todo)
        pending: dict[Any, RunPlan] = {}
        failures: list[str] = []

        def submit(run: RunPlan) -> None:
            run_dir = sweep_dir / run.name
            mode = run_state(run_dir)
            if mode == FRESH and run_dir.exists():
                shutil.rmtree(run_dir)  # no checkpoint to continue from: start over cleanly
            config, cost = configs[run.group], costs[run.name]
            job = RunJob(
                sweep_dir=str(sweep_dir),
                sweep_id=sweep_id,
                name=run.name,
                seed=run.seed,
                mode=mode,
                config_text=args.config_text,
                steps=args.steps,
                demos=None if args.demos is None else str(args.demos),
                demos_sha256=demos_sha,
                sets=[*args.sets, *(f"{k}={v}" for k, v in run.overrides.items()), *cost.pins],
                ray_address=run_address if config.env.vectorization == "ray" else None,
                cwd=os.getcwd(),
                force_ship=force_ship,
            )
            run_tar = pack_dir(run_dir) if may_ship and mode in (RESUME, EVALUATE) else None
            options = {"num_cpus": cost.task_cpus, "max_retries": 0, "name": f"sweep {run.name}"}
            pending[remote.options(**options).remote(job, run_tar, demos_ref, events)] = run

        try:
            while waiting or pending:
                # Submit what the cluster can hold at once. Ray would queue task CPUs by itself, but a
                # run's rollout actors are placed only after its task started: submitted blindly, the
                # learners of many `ray` runs would take every CPU and no run would get its actors.
                busy = sum(costs[r.name].total for r in pending.values())
                while waiting and (not pending or busy + costs[waiting[0].name].total <= info.cpus):
                    busy += costs[waiting[0].name].total
                    submit(waiting.pop(0))
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                lines = [
                    (at, f"start {name} (seed {seed}) on {node}{'' if here else ', shipped'}")
                    for _, name, seed, node, here, at in ray.get(events.drain.remote())
                ]
                for ref in ready:
                    run = pending.pop(ref)
                    at, line, error = _collect(ray, ref, run, sweep_dir, reference)
                    if error is not None:
                        failures.append(f"{run.name}: {error}")
                    lines.append((at, line))
                for _, line in sorted(lines, key=lambda item: item[0]):  # the order things happened
                    say(line)
                if ready:
                    bar.update(len(ready))
        except BaseException:
            for ref in pending:  # force: kill the worker, and with it the training subprocess
                ray.cancel(ref, force=True)
            raise
        finally:
            ray.kill(events)
        return failures


def _collect(
    ray: Any, ref: Any, run: RunPlan, sweep_dir: Path, reference: Reference
) -> tuple[float, str, str | None]:
    """Take in one finished task (unpack a shipped run): when it ended, the line, the error if any."""
    try:
        result = ray.get(ref)
    except ray.exceptions.RayError as exc:
        lines = str(exc).strip().splitlines()
        error, at = (lines[0] if lines else type(exc).__name__), time.time()
    else:
        if result["tar"] is not None:
            install_shipped(result["tar"], sweep_dir, run.name)
        error, at = result["error"], result["time"]
        if error is None:
            return at, f"done  {run.name} (seed {run.seed}): {_describe(result['eval'], reference)}", None
    return at, f"failed {run.name} (seed {run.seed}): {error}", error
