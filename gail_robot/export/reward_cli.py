"""``gail-robot export-reward RUN --out reward.pt``: the learned reward of an AIRL or GAIL run."""

from __future__ import annotations

import argparse

from gail_robot.export.reward import ABSORBING_RULES, export_reward


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gail-robot export-reward``."""
    parser.add_argument("source", help="run directory or training checkpoint of an airl or gail run")
    parser.add_argument("--out", required=True, help="output TorchScript file (reward.pt)")
    parser.add_argument(
        "--absorbing",
        choices=ABSORBING_RULES,
        default="learned",
        help="the absorbing state's reward in meta.json: the network's value (learned), or the lowest "
        "reward the demos get (demo-min: falling never pays more than any expert step; docs/DESIGN.md §5.2)",
    )
    parser.add_argument(
        "--shaping",
        action="store_true",
        help="AIRL runs: export f = g + gamma h(s') - h(s) instead of g (the same optimal policy on any "
        "dynamics, with the trained potential h as a dense guide; docs/DESIGN.md §5.2)",
    )
    parser.add_argument(
        "--demos", default=None, help="demo file for --absorbing demo-min (default: the run's)"
    )


def main(args: argparse.Namespace) -> int:
    meta = export_reward(args.source, args.out, args.absorbing, args.demos, args.shaping)
    absorbing = meta["absorbing_reward"]
    call = "r(obs)" if meta["inputs"] == "obs" else "r(obs, action, next_obs)"
    print(
        f"exported {meta['reward']} of {meta['env_id']} as {call} to {args.out}"
        + ("" if absorbing is None else f"; absorbing-state reward {absorbing:.4g}")
        + (
            f" (the demos' lowest; learned {meta['absorbing_reward_learned']:.4g})"
            if meta["absorbing_rule"] == "demo-min"
            else ""
        )
    )
    return 0
