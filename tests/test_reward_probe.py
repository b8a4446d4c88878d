"""benchmarks/reward_probe.py: an episode's learned value, checked by hand (with and without termination)."""

from __future__ import annotations

import numpy as np
import pytest
from benchmark_modules import load_benchmark

reward_probe = load_benchmark("reward_probe")


class CountingEnv:
    """obs = [t]; env reward 1 per step; ends after ``length`` steps, terminated or truncated."""

    def __init__(self, length: int, terminates: bool):
        self.length, self.terminates, self.t = length, terminates, 0

    def reset(self, seed: int):
        self.t = seed  # the seed shifts the start so that it is visible in the learned rewards
        return np.array([self.t], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t >= self.length
        return (
            np.array([self.t], dtype=np.float32),
            1.0,
            done and self.terminates,
            done and not self.terminates,
            {},
        )


class Policy:
    def act(self, obs):
        return 2.0 * obs  # action = 2 t


class Reward:
    absorbing_reward = -3.0

    def __call__(self, obs, actions, next_obs):
        # r = t + a + t' = t + 2t + (t + 1) = 4t + 1
        return (obs[:, 0] + actions[:, 0] + next_obs[:, 0]).astype(np.float32)


@pytest.mark.parametrize("terminates", [True, False])
def test_probe_episode_by_hand(terminates: bool) -> None:
    gamma = 0.5
    out = reward_probe.probe_episode(Policy(), Reward(), CountingEnv(3, terminates), seed=0, gamma=gamma)
    rewards = [1.0, 5.0, 9.0]  # t = 0, 1, 2
    value = 1.0 + 0.5 * 5.0 + 0.25 * 9.0
    if terminates:
        value += 0.125 * -3.0 / (1 - gamma)  # the absorbing state after the true termination
    assert out["length"] == 3 and out["terminated"] is terminates and out["env_return"] == 3.0
    assert out["learned_sum"] == pytest.approx(sum(rewards))
    assert out["learned_mean"] == pytest.approx(5.0)
    assert out["learned_value"] == pytest.approx(value)
    shifted = reward_probe.probe_episode(Policy(), Reward(), CountingEnv(3, terminates), seed=1, gamma=gamma)
    assert shifted["length"] == 2 and shifted["learned_sum"] == pytest.approx(5.0 + 9.0)


def test_demo_profile_by_hand() -> None:
    """r = 4t + 1 on obs [t]: the first 2 steps of each demo apart from the rest, against r_abs = -3."""
    demos = []
    for length in (3, 4):
        obs = np.arange(length, dtype=np.float32)[:, None]
        demos.append((obs, 2.0 * obs, obs + 1.0))
    out = reward_probe.demo_profile(Reward(), demos, start_steps=2)
    # start: t = 0, 1 of both demos -> 1, 5, 1, 5; later: t = 2 (first), t = 2, 3 (second) -> 9, 9, 13
    assert out["demos"] == 2 and out["start_mean"] == pytest.approx(3.0)
    assert out["later_mean"] == pytest.approx(31.0 / 3.0)
    assert out["absorbing_reward"] == -3.0 and out["falling_pays_at_start"] is False

    class Low(Reward):
        absorbing_reward = 4.0  # above the start's mean 3: falling at once pays

    assert reward_probe.demo_profile(Low(), demos, start_steps=2)["falling_pays_at_start"] is True
    # a task that never terminates (HalfCheetah): no one reaches the absorbing state, nothing to say
    never = reward_probe.demo_profile(Low(), demos, start_steps=2, can_terminate=False)
    assert never["falling_pays_at_start"] is None and never["start_mean"] == pytest.approx(3.0)


def test_farthest_from_demos_by_hand() -> None:
    demo_obs = np.array([[0.0, 10.0], [2.0, 10.0], [0.0, 14.0], [2.0, 14.0]])  # means 1, 12; stds 1, 2
    assert reward_probe.farthest_from_demos(np.array([1.5, 12.0]), demo_obs) == (0, 0.5)
    assert reward_probe.farthest_from_demos(np.array([1.5, 4.0]), demo_obs) == (1, -4.0)
