"""``gail-robot dagger``: human-gated DAgger rounds (HG-DAgger, Kelly et al. 2019; or IWR).

Round 0 trains BC on the initial demos. Each later round lets the previous round's policy drive for
``--episodes-per-round`` episodes while the person (``--device``; ``scripted``: the task's expert
with the gate of :mod:`gail_robot.teleop.intervention`) takes over, writes that round's intervention
file, and retrains BC from scratch on the aggregate: the initial demos plus every round's file.
``--method hg-dagger`` learns from the intervention steps only, ``iwr`` from every step with
intervention weighting (``bc.intervention_weighting``, docs/DESIGN.md §3).

``--gail-steps N`` adds a GAIL fine-tune after the last round: GAIL (``--gen ppo|trpo``, default the
config's ``gail.generator``) warm-started from the last round's BC policy (``init_from``: its weights
and its observation statistics, kept fixed) on the initial demos plus every round file, whose
person-driven steps are the discriminator's expert samples (docs/DESIGN.md §3.1).

Layout (every round is an ordinary run directory: ``gail-robot eval OUT/round_2`` works)::

    OUT/dagger.json                     what was asked (checked when rerun)
    OUT/summary.json                    one row per finished round
    OUT/round_0/                        BC on the initial demos
    OUT/round_<r>/interventions.hdf5    round r's episodes (round r-1's policy drives)
    OUT/round_<r>/                      BC on the initial demos + round_1..round_r files
    OUT/gail/                           --gail-steps: GAIL from round_<R>'s policy on all the files

Resumable: a rerun with the same arguments skips finished rounds (``final.pt`` present), appends the
missing episodes to a partly recorded round file, retrains a round whose training did not finish and
resumes an interrupted GAIL fine-tune from its latest checkpoint. Once ``gail/`` exists, its settings
(``--gail-steps``, ``--gen``) and ``--rounds`` are fixed: a rerun with others is refused.
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
#: the GAIL fine-tune's run directory, beside the rounds
GAIL_DIR = "gail"
#: plan entries of the GAIL fine-tune: free to change until ``gail/`` exists, fixed after
GAIL_KEYS = ("gail_steps", "gen", "rounds")


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
    parser.add_argument(
        "--gail-steps",
        type=int,
        default=0,
        metavar="N",
        help="after the last round, fine-tune its policy with GAIL for N env steps in OUT/gail (0: none)",
    )
    parser.add_argument(
        "--gen", choices=["ppo", "trpo"], help="generator of the GAIL fine-tune (default gail.generator)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field of every round's BC and of the GAIL fine-tune (values are YAML)",
    )


def _plan(args: argparse.Namespace, demos: list[str], base: dict[str, Any]) -> dict[str, Any]:
    gen = args.gen or base.get("gail", {}).get("generator", "ppo")
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
        "gail_steps": args.gail_steps,
        "gen": gen if args.gail_steps else None,
        "rounds": args.rounds,
    }


def _check_plan(out: Path, before: dict[str, Any], plan: dict[str, Any]) -> None:
    """Refuse a rerun whose arguments differ from the run's (one line naming them).

    ``--rounds`` may grow and the GAIL settings may change until the fine-tune has started (``gail/``
    exists): it started from the last round with those settings.
    """
    before = {"gail_steps": 0, "gen": None, **before}  # dagger.json of runs before --gail-steps
    started = (out / GAIL_DIR).exists()
    changed = sorted(k for k in plan if (started or k not in GAIL_KEYS) and before.get(k, plan[k]) != plan[k])
    if changed:
        raise UserError(
            f"{out} holds a dagger run with other arguments ({', '.join(changed)} differ); "
            f"rerun it as it was or choose another --out"
        )


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


def _gail_config(base: dict[str, Any], files: list[str], init_from: Path, args: argparse.Namespace) -> Any:
    """The fine-tune's config: the CONFIG's GAIL settings (``--set`` applied), every file, BC's start."""
    import copy

    from gail_robot.algos.config import config_from_dict

    data = copy.deepcopy(base)
    data["algo"] = "gail"
    data["init_from"] = str(init_from)
    gail = data.setdefault("gail", {})
    gail["demos"] = list(files)
    if args.gen:
        gail["generator"] = args.gen
    run = data.setdefault("run", {})
    run["seed"] = args.seed
    run["total_steps"] = args.gail_steps
    if args.no_progress:
        run["progress"] = False
    return config_from_dict(data)


def _run_gail(config: Any, run_dir: Path) -> None:
    """Train (or resume, from ``checkpoints/latest.pt``) the GAIL fine-tune into ``run_dir``."""
    from gail_robot.algos.trainer import OnPolicyTrainer

    resume = (run_dir / "checkpoints" / "latest.pt").is_file() and (run_dir / "config.yaml").is_file()
    if not resume:
        _clear_partial_run(run_dir)
    OnPolicyTrainer(config, run_dir, resume=resume).train()


def _last_eval(run_dir: Path) -> dict[str, Any]:
    """The last metrics row with an evaluation (``{}`` when there is none)."""
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    evals = [json.loads(x) for x in lines if "eval_success_rate" in x or "eval_return" in x]
    return evals[-1] if evals else {}


def _gail_row(run_dir: Path, last: dict[str, Any], config: Any) -> dict[str, Any]:
    """The fine-tune's summary row: its final evaluation and env steps beside the last round's."""
    from gail_robot.policy_io import load_checkpoint

    evaluation = _last_eval(run_dir)
    meta = load_checkpoint(run_dir / "final.pt")["meta"]
    return {
        "stage": "gail",
        "round": None,
        "run_dir": str(run_dir),
        "init_from": last["run_dir"],
        "generator": config.generator,
        "env_steps": int(meta["env_steps"]),
        "expert_labelled_steps": last["expert_labelled_steps"],
        "intervention_steps": last["intervention_steps"],
        "policy_steps": last["policy_steps"],
        "eval_success_rate": evaluation.get("eval_success_rate"),
        "eval_return": evaluation.get("eval_return"),
    }


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
    return _last_eval(run_dir)


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
        "stage": "bc",
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
    if args.gail_steps < 0:
        raise UserError(f"--gail-steps must be >= 0, got {args.gail_steps}")
    if args.gen and not args.gail_steps:
        raise UserError("--gen is the GAIL fine-tune's generator: give --gail-steps N as well")
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
    plan = _plan(args, demos, base)
    plan_file = out / "dagger.json"
    if plan_file.is_file():
        _check_plan(out, json.loads(plan_file.read_text()), plan)
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
            rows.append(_round_row(r, run_dir, files, _last_eval(run_dir)))
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
    last_dir = out / f"round_{args.rounds}"
    if args.gail_steps:
        config = _gail_config(base, files, last_dir, args)
        gail_dir = out / GAIL_DIR
        if (gail_dir / "final.pt").is_file():
            print(f"gail: done before ({gail_dir})", file=sys.stderr)
        else:
            print(
                f"gail: GAIL-{config.generator} from {last_dir} for {args.gail_steps} env steps "
                f"on {len(files)} demo files",
                file=sys.stderr,
            )
            _run_gail(config, gail_dir)
        row = _gail_row(gail_dir, rows[-1], config)
        rows.append(row)
        (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
        success, before = row["eval_success_rate"], rows[-2]["eval_success_rate"]
        print(
            f"gail: {row['env_steps']} env steps, eval success {success if success is not None else '-'} "
            f"(round {args.rounds}: {before if before is not None else '-'})",
            file=sys.stderr,
        )
        print(f"dagger: {args.rounds + 1} rounds + GAIL fine-tune in {out}; the last policy is {gail_dir}")
        return 0
    print(f"dagger: {args.rounds + 1} rounds in {out}; the last policy is {last_dir}")
    return 0
