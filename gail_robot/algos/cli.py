"""``gail-robot train``: build the config (file < flags < --set), then run BC or the on-policy trainer."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gail_robot.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        nargs="?",
        default=None,
        help="YAML config file, or the name of a shipped config (e.g. Hopper-v5, ArmReach-v0)",
    )
    parser.add_argument(
        "--algo",
        choices=["bc", "gail", "airl", "ppo", "trpo", "sac"],
        help="algorithm (or 'algo' in the config)",
    )
    parser.add_argument("--gen", choices=["ppo", "trpo"], help="GAIL / AIRL generator (gail.generator)")
    parser.add_argument("--env", help="Gymnasium env id (env.id)")
    parser.add_argument(
        "--demos",
        nargs="+",
        metavar="FILE",
        help="demo file(s) for gail / airl / bc (gail.demos, bc.demos); several files must hold one env",
    )
    parser.add_argument(
        "--reward",
        metavar="REWARD.pt",
        help="train ppo / trpo / sac on this learned reward (gail-robot export-reward) instead of the env's",
    )
    parser.add_argument("--steps", type=int, help="env steps to train for (run.total_steps)")
    parser.add_argument("--out", help="run directory to create")
    parser.add_argument("--seed", type=int, help="run.seed")
    parser.add_argument("--num-envs", type=int, help="env.num_envs")
    parser.add_argument("--sync", action="store_true", help="in-process vector env (env.vectorization=sync)")
    parser.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="roll out on this Ray cluster (env.vectorization=ray, env.ray_address; default $RAY_ADDRESS, "
        "else a local Ray); also on --resume",
    )
    parser.add_argument(
        "--init-from",
        metavar="RUN_DIR|CKPT|bc",
        help="warm-start the actor from a run (e.g. BC); 'bc': train BC on the demos first, in RUN/init_bc",
    )
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue an interrupted run from its latest checkpoint"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set ppo.lr=1e-4 (repeatable; values are YAML)",
    )


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The explicit flags as nested config data."""
    data: dict[str, Any] = {}

    def put(path: str, value: Any) -> None:
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    if args.algo:
        put("algo", args.algo)
    if args.gen:
        put("gail.generator", args.gen)
    if args.env:
        put("env.id", args.env)
    if args.demos and len(args.demos) == 1:
        put("gail.demos", args.demos[0])
        put("bc.demos", args.demos[0])
    elif args.demos:  # several files: BC, GAIL and AIRL (checked in main)
        put("gail.demos", list(args.demos))
        put("bc.demos", list(args.demos))
    if args.steps is not None:
        put("run.total_steps", args.steps)
    if args.seed is not None:
        put("run.seed", args.seed)
    if args.num_envs is not None:
        put("env.num_envs", args.num_envs)
    if args.sync:
        put("env.vectorization", "sync")
    if args.ray_address:
        put("env.vectorization", "ray")
        put("env.ray_address", args.ray_address)
    if args.init_from:
        put("init_from", args.init_from)
    if args.reward:
        put("reward", args.reward)
    if args.no_progress:
        put("run.progress", False)
    return data


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def build_config(args: argparse.Namespace) -> tuple[Any, Path, bool]:
    """``(TrainConfig, run_dir, resume)`` from the parsed arguments."""
    from gail_robot.algos.config import apply_overrides, config_from_dict, load_yaml, shipped_config_path

    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "checkpoints" / "latest.pt").is_file() or not (run_dir / "config.yaml").is_file():
            raise UserError(f"cannot resume: {run_dir} has no config.yaml and checkpoints/latest.pt")
        if args.out and Path(args.out).resolve() != run_dir.resolve():
            raise UserError("--resume continues in the run directory itself; drop --out")
        if args.config or args.algo or args.env or args.gen or args.demos or args.init_from or args.reward:
            raise UserError(
                "--resume takes its config from the run; only --steps, --no-progress, --ray-address "
                "and --set apply"
            )
        base = load_yaml(run_dir / "config.yaml")
        resume = True
    else:
        if not args.out:
            raise UserError("--out RUN_DIR is required")
        run_dir = Path(args.out)
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise UserError(f"{run_dir} already exists and is not empty (use --resume or another --out)")
        base = {}
        if args.config:
            path = Path(args.config)
            if not path.is_file():
                shipped = shipped_config_path(args.config)
                if shipped is None:
                    raise UserError(
                        f"config file not found: {args.config} (and no shipped config of that name)"
                    )
                path = shipped
            base = load_yaml(path)
        resume = False
    data = _merge(base, _flag_overrides(args))
    data = apply_overrides(data, args.overrides)
    if not resume and "algo" not in data:
        raise UserError("choose an algorithm: --algo bc|gail|airl|ppo|trpo|sac (or 'algo' in the config)")
    return config_from_dict(data), run_dir, resume


def main(args: argparse.Namespace) -> int:
    config, run_dir, resume = build_config(args)
    if args.demos and len(args.demos) > 1 and config.algo not in ("bc", "gail", "airl"):
        raise UserError(
            f"--algo {config.algo} does not learn from demos; several --demos files are for "
            f"--algo bc, gail or airl"
        )
    if config.init_from == "bc" and not resume:
        from gail_robot.algos.bc import train_bc_warm_start

        train_bc_warm_start(config, run_dir)
    if config.algo == "bc":
        from gail_robot.algos.bc import train_bc

        final = train_bc(config, run_dir)
    elif config.algo == "sac":
        from gail_robot.algos.sac import train_sac

        final = train_sac(config, run_dir, resume=resume)
    else:
        from gail_robot.algos.trainer import OnPolicyTrainer

        final = OnPolicyTrainer(config, run_dir, resume=resume).train()
    print(f"final checkpoint: {final}")
    return 0
