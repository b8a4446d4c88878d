"""One run of a sweep as one Ray task: train in a subprocess, evaluate ``final.pt``, write ``eval.json``.

A task runs **in place** (in ``DIR/<run>``) when it sees the driver's ``DIR/.sweep-id`` with this
sweep's uuid at the same absolute path: the filesystem is shared. Otherwise it runs in a temporary
directory seeded from the tarball of the run directory the driver sent (to resume it) and returns the
finished run directory as a tarball for the driver to unpack (docs/DESIGN.md §9.2).

The training subprocess is ``python -m gail_robot.cli train ...`` with its output in
``RUN/train.log``; on Linux it is killed with the task's process (``PR_SET_PDEATHSIG``), so a
cancelled or killed task leaves nothing writing into the sweep directory.
"""

from __future__ import annotations

import ctypes
import io
import math
import os
import select
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from gail_robot.sweep.plan import (
    EVAL_EPISODES,
    EVAL_FILE,
    EVAL_SEED_OFFSET,
    EVALUATE,
    FRESH,
    ID_FILE,
    LOG_FILE,
    atomic_write_json,
    file_sha256,
    resume_argv,
    train_argv,
)

EVAL_FORMAT = "gail_robot.sweep.eval"

# <linux/prctl.h>: deliver a signal to this process when the thread that forked it exits
_PR_SET_PDEATHSIG = 1


@dataclass
class RunJob:
    """Everything a task needs, as plain data (it crosses to another machine).

    Attributes:
        sweep_dir: the sweep directory on the driver's machine (absolute).
        sweep_id: the uuid the driver wrote to ``DIR/.sweep-id`` for this invocation.
        name: the run directory relative to ``sweep_dir``.
        seed: the run seed.
        mode: ``fresh``, ``resume`` or ``evaluate`` (see :func:`gail_robot.sweep.plan.run_state`).
        config_text: the YAML of the sweep's config file.
        steps: env steps (``--steps``).
        demos: the demo file on the driver's machine, if any.
        demos_sha256: its checksum (a copy elsewhere is used only when it matches).
        sets: every ``--set`` of a fresh run (sweep-wide, grid point, pinned worker count).
        ray_address: passed to ``train --ray-address`` (runs with ``env.vectorization: ray``).
        cwd: the driver's working directory (relative paths in the config are relative to it).
        force_ship: run in a temporary directory and ship the result even on a shared filesystem.
    """

    sweep_dir: str
    sweep_id: str
    name: str
    seed: int
    mode: str
    config_text: str
    steps: int
    demos: str | None = None
    demos_sha256: str | None = None
    sets: list[str] = field(default_factory=list)
    ray_address: str | None = None
    cwd: str = "/"
    force_ship: bool = False


def shares_sweep_dir(sweep_dir: Path, sweep_id: str) -> bool:
    """Whether ``sweep_dir/.sweep-id`` holds ``sweep_id``: this machine sees the driver's directory."""
    try:
        return (sweep_dir / ID_FILE).read_text().strip() == sweep_id
    except OSError:
        return False


# ------------------------------------------------------------------------------ tarballs


def pack_dir(directory: Path) -> bytes:
    """``directory``'s contents as an uncompressed tarball (checkpoints do not compress much)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for child in sorted(directory.iterdir()):
            tar.add(child, arcname=child.name)
    return buffer.getvalue()


def unpack_into(data: bytes, directory: Path) -> None:
    """Extract a :func:`pack_dir` tarball into ``directory`` (created), refusing paths outside it."""
    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(directory, filter="data")


# ------------------------------------------------------------------------------ training subprocess


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when this process dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork: the child only calls it
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


class _RunLog:
    """Appends the training output to ``RUN/train.log``.

    A fresh run's directory must not exist (or be empty) when ``train --out`` checks it, so output
    is held in memory until the trainer has created the directory, then written through.
    """

    def __init__(self, run_dir: Path, header: str):
        self.run_dir = run_dir
        self.pending = [header.encode()]
        self.fh: BinaryIO | None = None

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` (may be empty: then only open the file once the directory exists)."""
        if self.fh is None and self.run_dir.is_dir():
            self._open()
        if self.fh is None:
            self.pending.append(chunk)
        elif chunk:
            self.fh.write(chunk)
            self.fh.flush()

    def _open(self) -> None:
        self.fh = (self.run_dir / LOG_FILE).open("ab")
        self.fh.write(b"".join(self.pending))
        self.fh.flush()
        self.pending = []

    def close(self) -> None:
        if self.fh is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._open()
        assert self.fh is not None
        self.fh.close()


def run_train(argv: list[str], run_dir: Path, cwd: Path, header: str) -> int:
    """Run ``gail-robot ARGV`` in a subprocess with its output in ``run_dir/train.log``; its exit code."""
    command = [sys.executable, "-m", "gail_robot.cli", *argv]
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # a live log, not one flushed at exit
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    log = _RunLog(run_dir, f"# gail-robot sweep {stamp}: {header}\n# {' '.join(command)}\n")
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env,
        preexec_fn=_die_with_parent(),
    )
    try:
        stdout = typing.cast(io.BufferedReader, proc.stdout)
        while True:
            # wake up now and then even when the trainer is silent (--no-progress): the log file
            # appears as soon as the run directory does, not at the trainer's first output
            readable, _, _ = select.select([stdout], [], [], 0.5)
            chunk = stdout.read1(1 << 16) if readable else None  # whatever is there, not a full block
            if chunk == b"":
                break
            log.write(chunk or b"")
        return proc.wait()
    finally:
        if proc.poll() is None:  # the task is being cancelled: take the trainer down with it
            proc.kill()
            proc.wait()
        log.close()


# ------------------------------------------------------------------------------ evaluation


def last_metrics(run_dir: Path) -> dict[str, Any]:
    """The last row of ``metrics.jsonl`` (``{}`` when there is none)."""
    from gail_robot.plot import read_metrics

    try:
        rows = read_metrics(run_dir)
    except Exception:  # a run without metrics (BC) still has a final evaluation
        return {}
    return rows[-1] if rows else {}


def evaluate_run(run_dir: Path, seed: int) -> dict[str, Any]:
    """The final evaluation of ``run_dir/final.pt``: :data:`EVAL_EPISODES` deterministic episodes,
    episode ``i`` reset with ``EVAL_SEED_OFFSET + seed + i``."""
    import torch

    from gail_robot.evaluate import evaluate_policy
    from gail_robot.policy_io import FINAL_NAME, load_policy

    torch.set_num_threads(1)  # one small MLP, one env: more threads only contend with other runs
    policy = load_policy(run_dir / FINAL_NAME)
    result = evaluate_policy(policy, EVAL_EPISODES, seed=EVAL_SEED_OFFSET + seed)
    last = last_metrics(run_dir)
    env_steps = policy.meta.get("env_steps", last.get("env_steps"))
    wall = last.get("wall_time")
    return {
        "format": EVAL_FORMAT,
        "format_version": 1,
        "seed": seed,
        "eval_seed": EVAL_SEED_OFFSET + seed,
        "episodes": result.episodes,
        "mean_return": result.mean_return,
        "std_return": result.std_return,
        "success_rate": None if math.isnan(result.success_rate) else result.success_rate,
        "mean_length": result.mean_length,
        "returns": result.returns,
        "lengths": result.lengths,
        "env_steps": None if env_steps is None else int(env_steps),
        "wall_s": None if wall is None else float(wall),
    }


def _relabel_demos(run_dir: Path, local: Path, original: str) -> None:
    """Point ``config.yaml`` back at the driver's demo file after training on a local copy of it."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    data = yaml.safe_load(path.read_text()) or {}
    for section in ("gail", "bc"):
        if isinstance(data.get(section), dict) and data[section].get("demos") == str(local):
            data[section]["demos"] = original
    path.write_text(yaml.safe_dump(data, sort_keys=False))


# ------------------------------------------------------------------------------ the task


def _local_demos(job: RunJob, shipped: bytes | None, scratch: Path) -> Path | None:
    """The demo file on this machine: the driver's path when it holds the same bytes, else the
    copy the driver shipped, written to ``scratch``."""
    if job.demos is None:
        return None
    path = Path(job.demos)
    if path.is_file() and (job.demos_sha256 is None or file_sha256(path) == job.demos_sha256):
        return path
    if shipped is None:
        raise FileNotFoundError(f"{job.demos} is not on {socket.gethostname()} and was not shipped")
    copy = scratch / path.name
    copy.write_bytes(shipped)
    return copy


class ProgressEvents:
    """A Ray actor's body: tasks ``put`` progress messages without waiting, the driver ``drain``s them.

    Tasks never wait on it: a task blocked in ``ray.get`` lends its CPUs back to the scheduler,
    which would start another run on them.
    """

    def __init__(self) -> None:
        self.items: list[tuple[Any, ...]] = []

    def put(self, item: tuple[Any, ...]) -> None:
        self.items.append(item)

    def drain(self) -> list[tuple[Any, ...]]:
        items, self.items = self.items, []
        return items


def job_argv(job: RunJob, run_dir: Path, config_file: Path, demos: Path | None) -> list[str]:
    """The ``gail-robot`` arguments that train (``fresh``) or continue (``resume``) the job's run."""
    if job.mode == FRESH:
        argv = train_argv(config_file, run_dir, seed=job.seed, steps=job.steps, demos=demos, sets=job.sets)
    else:
        argv = resume_argv(run_dir, demos=demos)
    if job.ray_address:  # env.vectorization: ray: the run's rollout workers join the sweep's cluster
        argv += ["--ray-address", job.ray_address]
    return argv


def _notify(events: Any, message: tuple[Any, ...]) -> None:
    if events is not None:
        events.put.remote(message)  # fire and forget (see ProgressEvents)


def execute(
    job: RunJob, run_tar: bytes | None = None, demos_bytes: bytes | None = None, events: Any = None
) -> dict[str, Any]:
    """Run one sweep run to its evaluation (the body of the Ray task).

    Args:
        job: the run.
        run_tar: the run directory to resume or evaluate as a :func:`pack_dir` tarball, used when
            this task does not share the sweep directory (None: nothing to resume, or never shipped).
        demos_bytes: the demo file, used when this machine has no identical copy at its path.
        events: a :class:`ProgressEvents` actor for the driver's progress lines
            (``("start", name, seed, node, in_place, time)``), or None.

    The driver passes the two payloads as task arguments, so Ray fetches them before the task
    starts instead of the task blocking on ``ray.get`` (which would lend its CPUs to another run).

    Returns:
        ``{"name", "node", "in_place", "eval"}`` (the evaluation, or None on failure), ``"error"``
        (one line, or None), ``"tar"`` (the run directory as a tarball when not in place) and
        ``"time"`` (when it finished).
    """
    sweep_dir = Path(job.sweep_dir)
    in_place = not job.force_ship and shares_sweep_dir(sweep_dir, job.sweep_id)
    node = socket.gethostname()
    with tempfile.TemporaryDirectory(prefix="gail-robot-sweep-") as tmp:
        scratch = Path(tmp)
        if in_place:
            run_dir = sweep_dir / job.name
        else:
            run_dir = scratch / "run"
            if run_tar is not None:
                unpack_into(run_tar, run_dir)
        _notify(events, ("start", job.name, job.seed, node, in_place, time.time()))
        result: dict[str, Any] = {"name": job.name, "node": node, "in_place": in_place}
        result.update(eval=None, error=None, tar=None)
        try:
            demos = _local_demos(job, demos_bytes, scratch)
            if job.mode != EVALUATE:
                cwd = Path(job.cwd) if Path(job.cwd).is_dir() else scratch
                config_file = scratch / "config.yaml"
                config_file.write_text(job.config_text)
                argv = job_argv(job, run_dir, config_file, demos)
                code = run_train(argv, run_dir, cwd, f"{job.mode} run {job.name} on {node}")
                if demos is not None and job.demos is not None and demos != Path(job.demos):
                    _relabel_demos(run_dir, demos, job.demos)
                if code != 0:
                    result["error"] = f"train exited with code {code} (see {job.name}/{LOG_FILE})"
            if result["error"] is None:
                evaluation = {**evaluate_run(run_dir, job.seed), "node": node, "in_place": in_place}
                atomic_write_json(run_dir / EVAL_FILE, evaluation)
                result["eval"] = evaluation
        except Exception as exc:  # reported as the run's one-line failure; the sweep goes on
            text = str(exc).strip().splitlines()
            result["error"] = f"{type(exc).__name__}: {text[0] if text else ''}"
        if not in_place and run_dir.is_dir():
            result["tar"] = pack_dir(run_dir)
        result["time"] = time.time()
        return result
