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
        --policy airl=RUN/final.pt [--episodes 3] [--gamma 0.99] [--demos demos.hdf5] [--out probe.json]

Prints a Markdown table (one row per policy, means over episodes); ``--out`` also writes every
episode's numbers as JSON. ``--demos FILE`` adds the reward on the demos' transitions, the first 10
steps of each episode apart: below the absorbing state's reward there, a learner that starts from
scratch is paid to fall before it can find the expert's behaviour. It also says, per policy, how far
its mean observation lies from the demos' (the dim with the largest z-score): a behaviour the reward
ranks high far outside the demos is extrapolation, not something the reward learned.
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
        "obs_mean": np.stack(observations).mean(axis=0).tolist(),
    }


def farthest_from_demos(obs_mean: np.ndarray, demo_obs: np.ndarray) -> tuple[int, float]:
    """The observation dim where ``obs_mean`` lies most demo standard deviations from the demos' mean."""
    z = (obs_mean - demo_obs.mean(axis=0)) / np.maximum(demo_obs.std(axis=0), 1e-8)
    dim = int(np.argmax(np.abs(z)))
    return dim, float(z[dim])


def demo_profile(
    reward: Any,
    episodes: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    start_steps: int = 10,
    can_terminate: bool = True,
) -> dict[str, Any]:
    """The learned reward on demo transitions: the first ``start_steps`` of each episode, the rest.

    ``episodes``: (obs, actions, next_obs) per demo. A learner starting from scratch spends its first
    episodes near the reset states; if the reward there is below the absorbing state's, falling at
    once is worth more than staying up, and a learner is paid to fall before it can find the rest.
    """
    start, later = [], []
    for obs, actions, next_obs in episodes:
        r = np.asarray(reward(obs, actions, next_obs), dtype=np.float64)
        start.append(r[:start_steps])
        later.append(r[start_steps:])
    start_all, later_all = np.concatenate(start), np.concatenate(later)
    r_abs = reward.absorbing_reward
    return {
        "demos": len(episodes),
        "start_steps": start_steps,
        "start_mean": float(start_all.mean()),
        "later_mean": float(later_all.mean()) if later_all.size else None,
        "absorbing_reward": None if r_abs is None else float(r_abs),
        # only where an episode can end: on a task that never terminates no one reaches s_abs
        "falling_pays_at_start": None
        if r_abs is None or not can_terminate
        else bool(start_all.mean() < r_abs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reward", required=True, help="reward file (gail-robot export-reward)")
    parser.add_argument("--env", required=True, help="env to run the policies in")
    parser.add_argument(
        "--policy", action="append", default=[], metavar="NAME=PATH", help="a policy (run dir, .pt)"
    )
    parser.add_argument(
        "--demos",
        default=None,
        help="also profile the reward on this demo file's transitions (start vs rest)",
    )
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--out", default=None, help="write every episode's numbers here (JSON)")
    args = parser.parse_args()
    if not args.policy and not args.demos:
        parser.error("give policies to score (--policy NAME=PATH) and/or --demos FILE")

    import gymnasium as gym

    import gail_robot.envs  # noqa: F401  (registers the gail_robot/ envs)
    from gail_robot.policy_io import load_policy
    from gail_robot.reward_io import demo_transitions, load_reward

    reward = load_reward(args.reward)
    policies: dict[str, str] = {}
    for item in args.policy:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--policy wants NAME=PATH, got {item!r}")
        policies[name] = path
    results: dict[str, list[dict[str, Any]]] = {}
    # Gymnasium's walkers that end on a fall say so (HalfCheetah and Swimmer, which never terminate, have
    # no such flag); for other envs, whether any probed episode terminated
    probe_env = gym.make(args.env)
    terminate_flag = getattr(probe_env.unwrapped, "_terminate_when_unhealthy", None)
    probe_env.close()
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
    profile = None
    if args.demos:
        demo_episodes = demo_transitions(args.demos)
        terminated = any(e["terminated"] for episodes in results.values() for e in episodes)
        can_terminate = bool(terminate_flag) if terminate_flag is not None else terminated
        profile = demo_profile(reward, demo_episodes, can_terminate=can_terminate)
        demo_obs = np.concatenate([e[0] for e in demo_episodes])
        for name, episodes in results.items():
            dim, z = farthest_from_demos(np.mean([e["obs_mean"] for e in episodes], axis=0), demo_obs)
            profile.setdefault("farthest_obs_dim", {})[name] = {"dim": dim, "z": z}
            lines.append(
                f"- {name}: mean observation farthest from the demos in dim {dim}, {z:+.1f} demo std"
            )
        later = "no steps" if profile["later_mean"] is None else f"{profile['later_mean']:.3f}"
        lines += [
            "",
            f"On the demos ({args.demos}, {profile['demos']} episodes): learned reward per step "
            f"{profile['start_mean']:.3f} over each episode's first {profile['start_steps']} steps, "
            f"{later} after them; absorbing state {profile['absorbing_reward']}"
            + (" (a learner is paid to fall at the start)" if profile["falling_pays_at_start"] else ""),
        ]
    print("\n".join(lines))
    if args.out:
        payload = {
            "reward": str(args.reward),
            "env": args.env,
            "gamma": args.gamma,
            "absorbing_reward": reward.absorbing_reward,
            "policies": policies,
            "episodes": results,
            "demo_profile": profile,
        }
        Path(args.out).write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
