"""Which behaviour does a learned reward prefer? Score policies' episodes by a reward file.

A re-optimised reward can only be as good as the behaviour it ranks highest. This script runs each
given policy for ``--episodes`` deterministic episodes in ``--env`` (reset seeds 0..E-1), and scores
every episode twice: by the env's own return and by the reward file (``gail-robot export-reward``):
the mean learned reward per step, its sum, and the discounted value from the first state,
``sum_t gamma^t r_t`` plus, after a true termination, the absorbing state's value
``gamma^T r_abs / (1 - gamma)`` (the bootstrap the learners use, docs/DESIGN.md §5.2).

If a policy that stands still gets a higher value than the expert's episodes, a learner that
optimises the reward well will stand still: the failure is the reward's, not the learner's.

Usage:
    python benchmarks/reward_probe.py --reward runs/airl_transfer/seed_0/reward.pt \\
        --env gail_robot/HopperHeavy-v0 --policy expert=datasets/experts/Hopper-v5/policy.pt \\
        --policy airl=RUN/final.pt [--episodes 3] [--gamma 0.99] [--out probe.json]

Prints a Markdown table (one row per policy, means over episodes); ``--out`` also writes every
episode's numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def probe_episode(policy: Any, reward: Any, env: Any, seed: int, gamma: float) -> dict[str, Any]:
    """One deterministic episode: env return and the learned reward's per-step mean, sum, value."""
    obs, _ = env.reset(seed=seed)
    observations, actions, successors = [], [], []
    env_return, terminated, truncated = 0.0, False, False
    while not (terminated or truncated):
        obs32 = np.asarray(obs, dtype=np.float32)
        action = np.asarray(policy.act(obs32[None])[0])
        next_obs, env_reward, terminated, truncated, _ = env.step(action)
        observations.append(obs32)
        actions.append(action if action.dtype.kind in "iu" else action.astype(np.float32))
        successors.append(np.asarray(next_obs, dtype=np.float32))
        env_return += float(env_reward)
        obs = next_obs
    # one call for the whole episode: the reward of a transition does not depend on the others
    r = reward(np.stack(observations), np.stack(actions), np.stack(successors)).astype(np.float64)
    value = float(np.sum(gamma ** np.arange(len(r)) * r))
    r_abs = reward.absorbing_reward
    if terminated and r_abs is not None:
        value += gamma ** len(r) * float(r_abs) / (1.0 - gamma)
    return {
        "seed": seed,
        "length": len(r),
        "terminated": bool(terminated),
        "env_return": env_return,
        "learned_mean": float(r.mean()),
        "learned_sum": float(r.sum()),
        "learned_value": value,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reward", required=True, help="reward file (gail-robot export-reward)")
    parser.add_argument("--env", required=True, help="env to run the policies in")
    parser.add_argument(
        "--policy", action="append", required=True, metavar="NAME=PATH", help="a policy (run dir, .pt)"
    )
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--out", default=None, help="write every episode's numbers here (JSON)")
    args = parser.parse_args()

    import gymnasium as gym

    import gail_robot.envs  # noqa: F401  (registers the gail_robot/ envs)
    from gail_robot.policy_io import load_policy
    from gail_robot.reward_io import load_reward

    reward = load_reward(args.reward)
    policies: dict[str, str] = {}
    for item in args.policy:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--policy wants NAME=PATH, got {item!r}")
        policies[name] = path
    results: dict[str, list[dict[str, Any]]] = {}
    for name, path in policies.items():
        policy = load_policy(path)
        env = gym.make(args.env)
        try:
            results[name] = [probe_episode(policy, reward, env, s, args.gamma) for s in range(args.episodes)]
        finally:
            env.close()

    lines = [
        f"Reward {args.reward} on {args.env} (absorbing reward {reward.absorbing_reward}, "
        f"gamma {args.gamma}, {args.episodes} deterministic episodes per policy, "
        f"reset seeds 0..{args.episodes - 1})",
        "",
        "| policy | length | env return | learned reward per step | learned sum | learned value from s0 |",
        "|---|---|---|---|---|---|",
    ]
    for name, episodes in results.items():

        def mean(key: str, episodes: list[dict[str, Any]] = episodes) -> float:
            return float(np.mean([e[key] for e in episodes]))

        lines.append(
            f"| {name} | {mean('length'):.0f} | {mean('env_return'):.0f} | {mean('learned_mean'):.3f} | "
            f"{mean('learned_sum'):.0f} | {mean('learned_value'):.1f} |"
        )
    print("\n".join(lines))
    if args.out:
        payload = {
            "reward": str(args.reward),
            "env": args.env,
            "gamma": args.gamma,
            "absorbing_reward": reward.absorbing_reward,
            "policies": policies,
            "episodes": results,
        }
        Path(args.out).write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
