"""``gail-robot export-reward RUN --out reward.pt``: the learned reward of an AIRL or GAIL run."""

from __future__ import annotations

import argparse

from gail_robot.export.reward import export_reward


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gail-robot export-reward``."""
    parser.add_argument("source", help="run directory or training checkpoint of an airl or gail run")
    parser.add_argument("--out", required=True, help="output TorchScript file (reward.pt)")


def main(args: argparse.Namespace) -> int:
    meta = export_reward(args.source, args.out)
    absorbing = meta["absorbing_reward"]
    call = "r(obs)" if meta["inputs"] == "obs" else "r(obs, action, next_obs)"
    print(
        f"exported {meta['reward']} of {meta['env_id']} as {call} to {args.out}"
        + ("" if absorbing is None else f"; absorbing-state reward {absorbing:.4g}")
    )
    return 0
