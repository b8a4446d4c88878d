"""``gail-robot dagger``: human-gated DAgger rounds (HG-DAgger, Kelly et al. 2019; or IWR).

Round 0 trains BC on the initial demos. Each later round lets the previous round's policy drive for
``--episodes-per-round`` episodes while the person (``--device``; ``scripted``: the task's expert
with the gate of :mod:`gail_robot.teleop.intervention`) takes over, writes that round's intervention
file, and retrains BC from scratch on the aggregate: the initial demos plus every round's file.
``--method hg-dagger`` learns from the intervention steps only, ``iwr`` from every step with
intervention weighting (``bc.intervention_weighting``, docs/DESIGN.md §3).

Layout (every round is an ordinary run directory: ``gail-robot eval OUT/round_2`` works)::

    OUT/dagger.json                     what was asked (checked when rerun)
    OUT/summary.json                    one row per finished round
    OUT/round_0/                        BC on the initial demos
    OUT/round_<r>/interventions.hdf5    round r's episodes (round r-1's policy drives)
    OUT/round_<r>/                      BC on the initial demos + round_1..round_r files

Resumable: a rerun with the same arguments skips finished rounds (``final.pt`` present), appends the
missing episodes to a partly recorded round file and retrains a round whose training did not finish.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from gail_robot.errors import UserError

METHODS = ("hg-dagger", "iwr")
ROUND_FILE = "interventions.hdf5"
#: reset seeds of round r start at seed + r * ROUND_SEED_STRIDE (disjoint from the initial demos')
ROUND_SEED_STRIDE = 100_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gail_robot.teleop.intervention import INTERVENE_DEVICES

    parser.add_argument(
        "config", help="train config (YAML file or shipped name, e.g. ArmPush-v0); algo is bc"
    )
    parser.add_argument("--demos", nargs="+", metavar="FILE", help="initial demos (default: bc.demos)")
    parser.add_argument("--rounds", type=int, required=True, help="intervention rounds after round 0")
    parser.add_argument("--episodes-per-round", type=int, required=True, help="episodes recorded per round")
    parser.add_argument("--device", choices=INTERVENE_DEVICES, default="scripted", help="who takes over")
    parser.add_argument("--method", choices=METHODS, default="hg-dagger", help="what BC learns from")
    parser.add_argument("--out", default="runs/dagger", help="directory of the rounds (default runs/dagger)")
    parser.add_argument("--seed", type=int, default=0, help="training seed and base of the reset seeds")
    parser.add_argument("--noise", type=float, default=0.0, help="scripted person's action noise")
    parser.add_argument(
        "--takeover-threshold",
        type=float,
        default=0.5,
        metavar="D",
        help="scripted: take over when ||policy - expert action|| > D (default 0.5)",
    )
    parser.add_argument(
        "--stall-steps",
        type=int,
        default=20,
        metavar="N",
        help="scripted: take over after N steps without progress (0: never; default 20)",
    )
    parser.add_argument(
        "--handback-steps",
        type=int,
        default=10,
        metavar="K",
        help="scripted: hand back after K steps (default 10)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field of every round's BC (values are YAML)",
    )


def _plan(args: argparse.Namespace, demos: list[str]) -> dict[str, Any]:
    return {
        "config": args.config,
        "demos": [str(Path(d).resolve()) for d in demos],
        "episodes_per_round": args.episodes_per_round,
        "device": args.device,
        "method": args.method,
        "seed": args.seed,
        "noise": args.noise,
        "takeover_threshold": args.takeover_threshold,
        "stall_steps": args.stall_steps,
        "handback_steps": args.handback_steps,
        "overrides": list(args.overrides),
    }


def _base_config(args: argparse.Namespace) -> dict[str, Any]:
    from gail_robot.algos.config import apply_overrides, load_yaml, shipped_config_path

    path = Path(args.config)
    if not path.is_file():
        shipped = shipped_config_path(args.config)
        if shipped is None:
            raise UserError(f"config file not found: {args.config} (and no shipped config of that name)")
        path = shipped
    data = apply_overrides(load_yaml(path), args.overrides)
    data["algo"] = "bc"
    return data


def _round_config(base: dict[str, Any], files: list[str], args: argparse.Namespace) -> Any:
    import copy

    from gail_robot.algos.config import config_from_dict

    data = copy.deepcopy(base)
    bc = data.setdefault("bc", {})
    bc["demos"] = list(files)
    bc["intervention_weighting"] = args.method == "iwr"
    run = data.setdefault("run", {})
    run["seed"] = args.seed
    if args.no_progress:
        run["progress"] = False
    return config_from_dict(data)


def _clear_partial_run(run_dir: Path) -> None:
    """Remove what an interrupted BC left (BC is not resumable); the round's file stays."""
    for name in ("config.yaml", "metrics.jsonl"):
        (run_dir / name).unlink(missing_ok=True)
    for name in ("tb", "checkpoints"):
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)


def _train(config: Any, run_dir: Path) -> dict[str, Any]:
    from gail_robot.algos.bc import train_bc

    _clear_partial_run(run_dir)
    train_bc(config, run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    evals = [r for r in rows if "eval_success_rate" in r or "eval_return" in r]
    return evals[-1] if evals else {}


def _record_round(args: argparse.Namespace, config: Any, policy_dir: Path, file: Path, r: int) -> None:
    """Record the missing episodes of round ``r`` into ``file`` (appending to what is there)."""
    from gail_robot.data.reader import DemoDataset
    from gail_robot.data.writer import DemoWriter
    from gail_robot.envs.make import ensure_registered
    from gail_robot.teleop.devices import make_device
    from gail_robot.teleop.intervention import load_driving_policy, make_intervention_device
    from gail_robot.teleop.recorder import StatusLine, record

    have = 0
    if file.exists():
        with DemoDataset(file) as ds:
            have = len(ds)
    missing = args.episodes_per_round - have
    if missing <= 0:
        return
    import gymnasium as gym

    ensure_registered(config.env.id)
    env = gym.make(config.env.id, **config.env.kwargs)
    seed = args.seed + r * ROUND_SEED_STRIDE + have
    try:
        policy = load_driving_policy(str(policy_dir), env)
        with DemoWriter(file, env, mode="a") as writer:
            person = make_device(args.device, env, noise=args.noise, seed=seed)
            device = make_intervention_device(
                args.device,
                env,
                policy,
                person,
                threshold=args.takeover_threshold,
                stall_steps=args.stall_steps,
                handback_steps=args.handback_steps,
            )
            try:
                status = StatusLine(stream=sys.stderr)
                record(env, device, writer, episodes=missing, seed=seed, status=status)
            finally:
                device.close()
    finally:
        env.close()


def _round_row(r: int, run_dir: Path, files: list[str], evaluation: dict[str, Any]) -> dict[str, Any]:
    """Steps labelled by the expert so far (initial demos + intervention steps) and the evaluation."""
    from gail_robot.data.reader import DemoDataset

    labelled = taken = policy_steps = 0
    for f in files:
        with DemoDataset(f) as ds:
            t, recorded = ds.intervention_counts()
            labelled += ds.num_steps - recorded + t
            taken += t
            policy_steps += recorded - t
    return {
        "round": r,
        "run_dir": str(run_dir),
        "expert_labelled_steps": labelled,
        "intervention_steps": taken,
        "policy_steps": policy_steps,
        "eval_success_rate": evaluation.get("eval_success_rate"),
        "eval_return": evaluation.get("eval_return"),
    }


def main(args: argparse.Namespace) -> int:
    if args.rounds < 0:
        raise UserError(f"--rounds must be >= 0, got {args.rounds}")
    if args.episodes_per_round < 1:
        raise UserError(f"--episodes-per-round must be >= 1, got {args.episodes_per_round}")
    base = _base_config(args)
    demos = list(args.demos or [])
    if not demos:
        named = base.get("bc", {}).get("demos")
        demos = [named] if isinstance(named, str) else list(named or [])
    if not demos:
        raise UserError("dagger needs initial demos: --demos FILE [FILE ...] (or bc.demos in the config)")
    for d in demos:
        if not Path(d).is_file():
            raise UserError(f"{d}: no such file")
    out = Path(args.out)
    plan = _plan(args, demos)
    plan_file = out / "dagger.json"
    if plan_file.is_file():
        before = json.loads(plan_file.read_text())
        changed = sorted(k for k in plan if before.get(k) != plan[k])
        if changed:
            raise UserError(
                f"{out} holds a dagger run with other arguments ({', '.join(changed)} differ); "
                f"rerun it as it was or choose another --out"
            )
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not a dagger run directory (choose another --out)")
    out.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps(plan, indent=2) + "\n")

    rows: list[dict[str, Any]] = []
    files = list(plan["demos"])
    for r in range(args.rounds + 1):
        run_dir = out / f"round_{r}"
        if r > 0:
            file = run_dir / ROUND_FILE
            files.append(str(file))
        config = _round_config(base, files, args)
        if (run_dir / "final.pt").is_file():
            metrics = run_dir / "metrics.jsonl"
            lines = metrics.read_text().splitlines() if metrics.is_file() else []
            evals = [json.loads(x) for x in lines if "eval_success_rate" in x or "eval_return" in x]
            rows.append(_round_row(r, run_dir, files, evals[-1] if evals else {}))
            print(f"round {r}: done before ({run_dir})", file=sys.stderr)
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        if r > 0:
            print(f"round {r}: {out / f'round_{r - 1}'} drives, {args.device} takes over", file=sys.stderr)
            _record_round(args, config, out / f"round_{r - 1}", run_dir / ROUND_FILE, r)
        evaluation = _train(config, run_dir)
        row = _round_row(r, run_dir, files, evaluation)
        rows.append(row)
        (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
        success = row["eval_success_rate"]
        print(
            f"round {r}: {row['expert_labelled_steps']} expert-labelled steps "
            f"({row['intervention_steps']} from interventions), "
            f"eval success {success if success is not None else '-'}",
            file=sys.stderr,
        )
    (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"dagger: {args.rounds + 1} rounds in {out}; the last policy is {out / f'round_{args.rounds}'}")
    return 0
