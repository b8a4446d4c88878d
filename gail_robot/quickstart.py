"""``gail-robot quickstart``: the whole pipeline on a built-in default, nothing to fetch.

Records scripted-expert demos of ``gail_robot/ArmReach-v0``, trains GAIL (PPO generator) on them
with the shipped config, evaluates the learned policy and exports it to TorchScript. It composes
the real subcommands, so it exercises exactly what a user runs by hand. The exported policy runs in
the C++ controller too (the summary's ``cpp`` line: ``gail-robot controller build``, then ``run``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gail_robot.errors import UserError

DEFAULT_ENV = "gail_robot/ArmReach-v0"
DEFAULT_CONFIG = "ArmReach-v0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/quickstart", help="directory for demos, run and policy")
    parser.add_argument("--demos", type=int, default=20, help="scripted demos to record (default 20)")
    parser.add_argument("--steps", type=int, default=150_000, help="GAIL env steps (default 150000)")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of recording and training")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _stage(title: str) -> None:
    print(f"\n== {title}", file=sys.stderr, flush=True)


def _run(argv: list[str]) -> None:
    from gail_robot.cli import main as cli_main

    code = cli_main(argv)
    if code != 0:
        raise UserError(f"step failed: gail-robot {' '.join(argv)} (exit {code})")


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} already exists and is not empty (choose another --out)")
    out.mkdir(parents=True, exist_ok=True)
    demos, run_dir, policy = out / "demos.hdf5", out / "run", out / "policy.pt"
    started = time.monotonic()
    progress = ["--no-progress"] if args.no_progress else []

    _stage(f"1/4 record {args.demos} scripted demos of {DEFAULT_ENV} -> {demos}")
    _run(
        [
            "record",
            "--env",
            DEFAULT_ENV,
            "--device",
            "scripted",
            "--noise",
            "0.1",
            "--only-success",
            "--episodes",
            str(args.demos),
            "--seed",
            str(args.seed),
            "--out",
            str(demos),
        ]
    )

    _stage(f"2/4 train GAIL-PPO for {args.steps} env steps -> {run_dir}")
    _run(
        [
            "train",
            DEFAULT_CONFIG,
            "--algo",
            "gail",
            "--gen",
            "ppo",
            "--demos",
            str(demos),
            "--steps",
            str(args.steps),
            "--seed",
            str(args.seed),
            "--out",
            str(run_dir),
            *progress,
        ]
    )

    _stage(f"3/4 evaluate the learned policy over {args.episodes} episodes")
    _run(["eval", str(run_dir), "--episodes", str(args.episodes), "--json"])

    _stage(f"4/4 export TorchScript -> {policy} (verified in a fresh process)")
    _run(["export", str(run_dir), "--out", str(policy), "--verify"])

    summary = {
        "out": str(out),
        "demos": str(demos),
        "run": str(run_dir),
        "policy": str(policy),
        "wall_s": round(time.monotonic() - started, 1),
        "cpp": f"gail-robot controller build; gail-robot controller run {policy} --episodes {args.episodes}",
    }
    print(json.dumps(summary), file=sys.stderr)
    return 0
