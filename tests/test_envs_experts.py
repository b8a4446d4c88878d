"""Scripted experts: the contract, and success rates over seeded episodes."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import gail_robot.envs
from gail_robot.envs.experts import DEMO_NOISE, has_scripted_expert, make_expert
from gail_robot.errors import UserError

ARM_IDS = list(gail_robot.envs.ARM_TASKS)


def success_rate(env_id: str, episodes: int, noise: float, terminate_on_success: bool = True) -> float:
    """Fraction of seeded episodes (seeds 0..episodes-1) the expert ends successfully."""
    env = gym.make(env_id, terminate_on_success=terminate_on_success)
    expert = make_expert(env, noise=noise, seed=1234)
    successes = 0
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        expert.reset()
        terminated = truncated = False
        while not (terminated or truncated):
            obs, _, terminated, truncated, info = env.step(expert(obs))
        successes += bool(info["is_success"])
    env.close()
    return successes / episodes


def test_has_scripted_expert() -> None:
    for env_id in ARM_IDS:
        assert has_scripted_expert(env_id)
    assert not has_scripted_expert("Pendulum-v1")
    assert not has_scripted_expert("gail_robot/ArmStack-v0")


def test_make_expert_refuses_other_envs_and_bad_noise() -> None:
    with pytest.raises(UserError, match="no scripted expert for Pendulum-v1"):
        make_expert(gym.make("Pendulum-v1"))
    with pytest.raises(UserError, match="noise must be a non-negative number"):
        make_expert(gym.make("gail_robot/ArmReach-v0"), noise=-0.1)


def test_expert_reads_only_the_observation() -> None:
    env = gym.make("gail_robot/ArmPickPlace-v0")
    obs, _ = env.reset(seed=0)
    live, offline = make_expert(env), make_expert(env)
    recorded = []
    for _ in range(20):
        recorded.append(obs)
        obs, *_ = env.step(live(obs))
    # the same actions from recorded observations alone, e.g. when relabelling a demo file
    live.reset()
    for obs in recorded:
        np.testing.assert_array_equal(offline(obs), live(obs))
    action = offline(recorded[0])
    assert action.shape == (4,) and action.dtype == np.float32
    with pytest.raises(ValueError, match=r"shape \(49,\)"):
        offline(np.zeros(10))


def test_noise_is_seeded_and_bounded() -> None:
    env = gym.make("gail_robot/ArmPush-v0")
    obs, _ = env.reset(seed=0)
    a1 = [make_expert(env, noise=0.5, seed=3)(obs) for _ in range(2)]
    np.testing.assert_array_equal(a1[0], a1[1])
    noisy = make_expert(env, noise=5.0, seed=0)
    actions = np.array([noisy(obs) for _ in range(50)])
    assert np.all(actions >= -1) and np.all(actions <= 1) and actions.std() > 0.3


@pytest.mark.parametrize("env_id", ARM_IDS)
def test_expert_succeeds_quick(env_id: str) -> None:
    assert success_rate(env_id, episodes=10, noise=0.0) == 1.0
    assert success_rate(env_id, episodes=10, noise=DEMO_NOISE) >= 0.9


@pytest.mark.parametrize("env_id", ARM_IDS)
def test_expert_success_rate_100_episodes(env_id: str) -> None:
    """The acceptance bar with the default env settings (about 15 s for all three tasks)."""
    assert success_rate(env_id, 100, noise=0.0) >= 0.95
    assert success_rate(env_id, 100, noise=DEMO_NOISE) > 0.85


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ARM_IDS)
def test_expert_success_rate_100_episodes_without_termination(env_id: str) -> None:
    """Full-horizon episodes: the expert must also keep the goal reached until the time limit."""
    assert success_rate(env_id, 100, noise=0.0, terminate_on_success=False) >= 0.95
    assert success_rate(env_id, 100, noise=DEMO_NOISE, terminate_on_success=False) > 0.85
