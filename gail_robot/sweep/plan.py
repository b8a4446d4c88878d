"""What a sweep is: its arguments, its run directories, their states and the train commands.

A sweep directory ``DIR`` holds ``sweep.json`` (the arguments that define the sweep), one ordinary
run directory per (grid point, seed) — ``DIR/seed_<S>`` without a grid, ``DIR/<k1=v1,k2=v2>/seed_<S>``
with one — and the reports. Everything here is decided from the arguments and the files alone, so
the driver and a task agree on a run without talking (docs/DESIGN.md §9.2).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gail_robot.errors import UserError

SWEEP_FILE = "sweep.json"
ID_FILE = ".sweep-id"
LOCK_FILE = ".sweep.lock"
EVAL_FILE = "eval.json"
LOG_FILE = "train.log"
SWEEP_FORMAT = "gail_robot.sweep"
SWEEP_FORMAT_VERSION = 1

#: deterministic episodes of the final evaluation of every run
EVAL_EPISODES = 10
#: final evaluation episode ``i`` of the run with seed ``S`` resets with ``EVAL_SEED_OFFSET + S + i``;
#: the training's periodic evaluations use ``10_000 + S + i`` (algos/run.py), so these are other starts
EVAL_SEED_OFFSET = 20_000

#: run states, from the files of a run directory (see :func:`run_state`)
FINISHED, EVALUATE, RESUME, FRESH = "finished", "evaluate", "resume", "fresh"

# a path component stays well under the usual 255-byte limit
_MAX_NAME = 120


# ------------------------------------------------------------------------------ arguments


def split_values(text: str) -> list[str]:
    """``"1,2,[64,64]"`` -> ``["1", "2", "[64,64]"]``: commas inside brackets or braces do not split."""
    values, depth, current = [], 0, ""
    for char in text:
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    return values


def parse_grid(items: list[str], sets: list[str]) -> dict[str, list[str]]:
    """``--grid k=v1,v2`` flags as ``{key: [values]}`` with sorted keys (run directories do not depend
    on the order of the flags).

    Raises:
        UserError: no ``=``, an empty key or value, a repeated key or value, a key also in ``--set``.
    """
    set_keys = {text.split("=", 1)[0].strip() for text in sets if "=" in text}
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise UserError(f"--grid expects key=value1,value2,..., got '{item}'")
        values = split_values(raw)
        if any(not v for v in values):
            raise UserError(f"--grid {key}: empty value in '{raw}'")
        if len(set(values)) != len(values):
            raise UserError(f"--grid {key}: a value is repeated in '{raw}'")
        if key in grid:
            raise UserError(f"--grid {key} is given twice: list all its values in one --grid")
        if key in set_keys:
            raise UserError(f"{key} is in both --set and --grid: keep one")
        grid[key] = values
    return dict(sorted(grid.items()))


def resolve_config(config: str) -> Path:
    """A YAML path, else a shipped config name (the train command's rule), else a one-line error."""
    from gail_robot.algos.config import shipped_config_path

    path = Path(config)
    if path.is_file():
        return path.resolve()
    shipped = shipped_config_path(config)
    if shipped is None:
        raise UserError(f"config file not found: {config} (and no shipped config of that name)")
    return shipped


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def config_content_sha256(path: Path) -> str:
    """The hash of a YAML config's parsed contents: comments, key order and layout do not count, so a
    shipped config whose comments were edited still continues its sweeps (docs/DESIGN.md §9.2)."""
    from gail_robot.algos.config import load_yaml  # its one-line errors for a file that does not parse

    canonical = json.dumps(load_yaml(path), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class SweepArgs:
    """The arguments that define a sweep (``sweep.json``); the reference returns are not among them.

    Attributes:
        config: the CONFIG argument as given (a shipped name or a path).
        config_path: the YAML file it resolves to.
        steps: env steps per run.
        seeds: number of seeds.
        seed_start: the first seed (seeds are ``seed_start .. seed_start + seeds - 1``).
        demos: the demo file (absolute), if any.
        sets: ``--set key=value`` overrides for every run.
        grid: ``{key: [values]}``: every run of the cross product gets ``--set key=value`` per key.
    """

    config: str
    config_path: Path
    steps: int
    seeds: int
    seed_start: int = 0
    demos: Path | None = None
    sets: list[str] = field(default_factory=list)
    grid: dict[str, list[str]] = field(default_factory=dict)

    @property
    def config_text(self) -> str:
        return self.config_path.read_text()

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SWEEP_FORMAT,
            "format_version": SWEEP_FORMAT_VERSION,
            "config": self.config,
            "config_path": str(self.config_path),
            "config_sha256": file_sha256(self.config_path),
            "config_content_sha256": config_content_sha256(self.config_path),
            "steps": self.steps,
            "seeds": self.seeds,
            "seed_start": self.seed_start,
            "demos": None if self.demos is None else str(self.demos),
            "set": list(self.sets),
            "grid": {k: list(v) for k, v in self.grid.items()},
        }


def check_compatible(stored: dict[str, Any], new: dict[str, Any], sweep_dir: Path) -> None:
    """Refuse to continue a sweep with other arguments; only ``--seeds`` may grow (adding seeds).

    Raises:
        UserError: one line naming the first argument that differs.
    """
    if stored.get("format") != SWEEP_FORMAT or stored.get("format_version") != SWEEP_FORMAT_VERSION:
        raise UserError(f"{sweep_dir / SWEEP_FILE} is not a gail-robot sweep file of a known version")

    def differs(what: str, old: Any, now: Any) -> UserError:
        return UserError(
            f"{sweep_dir} holds a sweep with {what} {old}, not {now}: use another --out "
            "or the original arguments (only --seeds may grow)"
        )

    # a sweep.json written before the content hash existed compares the file's bytes
    key = "config_content_sha256" if "config_content_sha256" in stored else "config_sha256"
    if stored[key] != new[key]:
        raise differs("config", f"{stored['config']} (other contents)", new["config"])
    for key, flag in (("steps", "--steps"), ("seed_start", "--seed-start"), ("demos", "--demos")):
        if stored[key] != new[key]:
            raise differs(flag, stored[key], new[key])
    if stored["set"] != new["set"]:
        raise differs("--set", " ".join(stored["set"]) or "(none)", " ".join(new["set"]) or "(none)")
    old_grid = {k: sorted(v) for k, v in stored["grid"].items()}
    if old_grid != {k: sorted(v) for k, v in new["grid"].items()}:
        raise differs("--grid", _grid_text(stored["grid"]), _grid_text(new["grid"]))
    if new["seeds"] < stored["seeds"]:
        raise differs("--seeds", stored["seeds"], new["seeds"])


def _grid_text(grid: dict[str, list[str]]) -> str:
    return " ".join(f"{k}={','.join(v)}" for k, v in grid.items()) or "(none)"


# ------------------------------------------------------------------------------ runs


def group_name(overrides: dict[str, str]) -> str:
    """The directory of a grid point: ``k1=v1,k2=v2`` percent-encoded (injective, filesystem-safe),
    shortened with a hash when long; ``""`` without a grid."""
    if not overrides:
        return ""
    name = ",".join(f"{quote(k, safe='._-')}={quote(v, safe='._-+')}" for k, v in overrides.items())
    if len(name) > _MAX_NAME:
        name = f"{name[: _MAX_NAME - 17]}~{hashlib.sha1(name.encode()).hexdigest()[:16]}"
    return name


def group_label(overrides: dict[str, str]) -> str:
    """How a grid point reads in reports: ``k1=v1 k2=v2``, or ``(no overrides)``."""
    return " ".join(f"{k}={v}" for k, v in overrides.items()) or "(no overrides)"


@dataclass(frozen=True)
class RunPlan:
    """One run of the sweep.

    Attributes:
        name: its directory relative to the sweep directory (POSIX separators).
        seed: ``run.seed``.
        overrides: its grid point ``{key: value}`` (values as typed on the command line).
    """

    name: str
    seed: int
    overrides: dict[str, str]

    @property
    def group(self) -> str:
        return group_name(self.overrides)


def grid_points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """The cross product of the grid, in key order and each key's value order (``[{}]`` without one)."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def plan_runs(args: SweepArgs) -> list[RunPlan]:
    """Every run of the sweep: seeds ascending, every grid point (in order) within each seed, so that
    a sweep cut short compares its grid points on the same seeds (docs/DESIGN.md §9.2)."""
    runs = []
    for seed in range(args.seed_start, args.seed_start + args.seeds):
        for point in grid_points(args.grid):
            group = group_name(point)
            name = f"{group}/seed_{seed}" if group else f"seed_{seed}"
            runs.append(RunPlan(name=name, seed=seed, overrides=point))
    return runs


def run_state(run_dir: Path) -> str:
    """:data:`FINISHED` (``eval.json``), :data:`EVALUATE` (``final.pt``, not evaluated yet),
    :data:`RESUME` (a checkpoint to continue from) or :data:`FRESH` (start over)."""
    from gail_robot.policy_io import CHECKPOINT_DIR, FINAL_NAME, LATEST_NAME

    if (run_dir / EVAL_FILE).is_file():
        return FINISHED
    if (run_dir / FINAL_NAME).is_file():
        return EVALUATE
    if (run_dir / CHECKPOINT_DIR / LATEST_NAME).is_file() and (run_dir / "config.yaml").is_file():
        return RESUME
    return FRESH


# ------------------------------------------------------------------------------ train commands


def train_argv(
    config_file: Path,
    run_dir: Path,
    *,
    seed: int,
    steps: int,
    demos: Path | None,
    sets: list[str],
    extra_sets: Sequence[str] = (),
) -> list[str]:
    """``gail-robot`` arguments of a fresh run (``extra_sets`` come last: they win)."""
    argv = ["train", str(config_file), "--out", str(run_dir), "--seed", str(seed), "--steps", str(steps)]
    argv.append("--no-progress")
    if demos is not None:
        argv += ["--demos", str(demos)]
    for text in [*sets, *extra_sets]:
        argv += ["--set", text]
    return argv


def resume_argv(run_dir: Path, *, demos: Path | None) -> list[str]:
    """``gail-robot`` arguments that continue a run; the demo path is given again because a run
    finished on another machine recorded that machine's copy of the file."""
    argv = ["train", "--resume", str(run_dir), "--no-progress"]
    if demos is not None:
        argv += ["--set", f"gail.demos={demos}", "--set", f"bc.demos={demos}"]
    return argv


@dataclass(frozen=True)
class RunCost:
    """What one run occupies on the cluster.

    Attributes:
        task_cpus: CPUs its Ray task reserves (the learner and any worker processes it forks).
        actor_cpus: CPUs its rollout actors reserve besides (``env.vectorization: ray``), else 0.
        pins: ``--set`` overrides that make the run use exactly what was counted.
    """

    task_cpus: int
    actor_cpus: float = 0.0
    pins: tuple[str, ...] = ()

    @property
    def total(self) -> float:
        return self.task_cpus + self.actor_cpus


def cpu_need(config: Any, max_node_cpus: int, cluster_cpus: float) -> RunCost:
    """The CPUs one run of ``config`` occupies, and the worker count pinned to them.

    ``batched`` forks ``min(env.num_workers, env.num_envs)`` worker processes, where 0 means one per
    core: that is pinned to the largest node's CPU count, so a run uses what it reserved on any node
    (capped there, so no task is infeasible). ``async`` forks one process per env. ``sync``, SAC and
    BC run in the learner. ``ray`` runs its rollout workers as actors of their own (``cpus_per_worker``
    each); 0 workers, "as many as the cluster holds", would count the CPU this run's learner already
    holds, so it is pinned to what the rest of the cluster holds.
    """
    env = config.env
    if config.algo in ("sac", "bc") or env.vectorization == "sync":
        return RunCost(1)
    if env.vectorization == "async":
        return RunCost(max(1, min(env.num_envs, max_node_cpus)))
    if env.vectorization == "ray":
        workers = env.num_workers or max(1, min(env.num_envs, int((cluster_cpus - 1) // env.cpus_per_worker)))
        pins = () if env.num_workers else (f"env.num_workers={workers}",)
        return RunCost(1, workers * env.cpus_per_worker, pins)
    need = max(1, min(env.num_workers or max_node_cpus, env.num_envs, max_node_cpus))
    return RunCost(need, 0.0, () if env.num_workers else (f"env.num_workers={need}",))


def build_group_configs(args: SweepArgs, runs: list[RunPlan]) -> dict[str, Any]:
    """The resolved ``TrainConfig`` of every grid point, built by the train command's own rules.

    Parses the exact arguments a run is started with (with a placeholder ``--out``), so a bad
    config, ``--set`` or grid value fails here, before anything runs, with train's one-line error.
    """
    from gail_robot.algos.cli import add_arguments, build_config

    parser = argparse.ArgumentParser(prog="gail-robot train", add_help=False)
    add_arguments(parser)
    placeholder = Path(tempfile.gettempdir()) / f"gail-robot-sweep-check-{uuid.uuid4().hex}"
    configs: dict[str, Any] = {}
    for run in runs:
        if run.group in configs:
            continue
        argv = train_argv(
            args.config_path,
            placeholder,
            seed=run.seed,
            steps=args.steps,
            demos=args.demos,
            sets=[*args.sets, *(f"{k}={v}" for k, v in run.overrides.items())],
        )
        config, _, _ = build_config(parser.parse_args(argv[1:]))
        configs[run.group] = config
    return configs


# ------------------------------------------------------------------------------ files


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and ``os.replace``."""
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"  # open(): the umask's mode, not 0600
    try:
        with tmp.open("x") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
