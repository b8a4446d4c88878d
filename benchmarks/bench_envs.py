"""Env steps per second of the arm tasks, beside Gymnasium's Pusher-v5 measured in the same run.

Usage::

    python benchmarks/bench_envs.py [--steps 3000] [--seed 0]

Each env takes uniformly random actions for ``--steps`` steps (resetting when an episode ends; resets
are included in the time, as in training). One env, one process: this measures the per-step cost of
the simulation, controller and observation. Pusher-v5 (a 7-joint arm pushing a puck; 5 substeps of
10 ms per step, no Python controller) is the reference; the ratio column is ``steps/s / Pusher's``.
The arm tasks do 25 physics substeps of 2 ms plus 5 differential-IK solves per step.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

import gail_robot.envs

REFERENCE = "Pusher-v5"


def steps_per_second(env_id: str, steps: int, seed: int) -> tuple[float, float]:
    """``(env steps/s, physics substeps/s)`` over ``steps`` random-action steps."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(steps)]
    env.reset(seed=seed)
    for action in actions[:50]:  # warm-up: first-call allocations, caches
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    env.reset(seed=seed)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    substeps = getattr(env.unwrapped, "frame_skip", 1)
    env.close()
    return steps / elapsed, steps * substeps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000, help="env steps per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs per env")
    args = parser.parse_args()

    env_ids = [REFERENCE, *gail_robot.envs.ARM_TASKS]
    results = {}
    for env_id in env_ids:
        runs = [steps_per_second(env_id, args.steps, args.seed) for _ in range(args.repeats)]
        results[env_id] = max(runs)  # best of n: least disturbed by other processes
    reference = results[REFERENCE][0]
    print(f"{'env':<28} {'steps/s':>9} {'substeps/s':>11} {'vs ' + REFERENCE:>14}")
    for env_id in env_ids:
        rate, physics_rate = results[env_id]
        print(f"{env_id:<28} {rate:>9.0f} {physics_rate:>11.0f} {rate / reference:>13.2f}x")
    print(f"({args.steps} random-action steps per env, best of {args.repeats}, numpy {np.__version__})")


if __name__ == "__main__":
    main()
