"""The shared rollout path: SAME_STEP autoreset, final-observation bootstrap, absorbing states."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from gail_robot.algos.rollout import NumpyPolicy, RolloutBuffer, RolloutCollector
from gail_robot.envs.vector import make_vector_env, merge_infos
from gail_robot.envs.wrappers import NormalizedActions, ObsNormalizer
from gail_robot.nets import GaussianActor, NetConfig


class CounterEnv(gym.Env):
    """obs = [steps taken]; reward 1; terminates when the action is > 0.9 after step 2 (optional)."""

    def __init__(self, terminate: bool = False):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
        self.terminate = terminate
        self.t = 0
        self.last_action = np.zeros(1, np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        self.last_action = np.asarray(action, np.float32)
        terminated = self.terminate and self.t == 2
        return np.array([float(self.t)], np.float32), 1.0, terminated, False, {"x_velocity": 0.5}


ENV_ID = "GailRobotTest/Counter-v0"
if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=CounterEnv, max_episode_steps=3)


class TenTimesObs(torch.nn.Module):
    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return 10.0 * obs[:, 0]


def _collect(n_steps: int, num_envs: int = 2, **env_kwargs) -> RolloutBuffer:
    envs = make_vector_env(ENV_ID, num_envs, env_kwargs, mode="sync")
    try:
        normalizer = ObsNormalizer(1, clip=100.0, enabled=False)
        collector = RolloutCollector(envs, normalizer, torch.Generator().manual_seed(0))
        collector.reset(seed=0)
        buffer = RolloutBuffer.empty(n_steps, num_envs, 1, 1)
        torch.manual_seed(0)
        actor = GaussianActor(1, 1)
        collector.collect(actor, TenTimesObs(), buffer)  # type: ignore[arg-type]
        with torch.no_grad():
            expected = actor.log_prob(torch.from_numpy(buffer.obs[:, :]), torch.from_numpy(buffer.actions))
        np.testing.assert_allclose(buffer.log_probs, expected.numpy(), rtol=1e-5, atol=1e-5)
        episode_length = 2 if env_kwargs.get("terminate") else 3
        assert collector.stats.episodes == num_envs * (n_steps // episode_length)
        assert collector.stats.summary()["forward_velocity"] == pytest.approx(0.5)
    finally:
        envs.close()
    return buffer


def test_truncation_bootstraps_from_final_observation():
    buf = _collect(7)
    # SAME_STEP autoreset: step 3 of an episode is truncated, its successor is the final obs [3],
    # and the next row already starts the new episode at obs [0] (no wasted step).
    np.testing.assert_array_equal(buf.obs_raw[:, 0, 0], [0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(buf.next_obs_raw[:, 0, 0], [1, 2, 3, 1, 2, 3, 1])
    np.testing.assert_array_equal(buf.truncated[:, 0], [0, 0, 1, 0, 0, 1, 0])
    assert not buf.terminated.any()
    # V(final obs) = 30, never V(reset obs) = 0; last step bootstraps V(s_T) = 10.
    np.testing.assert_array_equal(buf.next_values[:, 0], [10, 20, 30, 10, 20, 30, 10])
    np.testing.assert_array_equal(buf.values[:, 0], [0, 10, 20, 0, 10, 20, 0])
    buf.compute_advantages(gamma=0.5, lam=1.0)
    # Truncated step 2: delta = 1 + 0.5 * 30 - 20 = -4 and the trace is cut there.
    assert buf.advantages[2, 0] == pytest.approx(-4.0)
    # Step 1: delta = 1 + 0.5 * 20 - 10 = 1; adv = 1 + 0.5 * (-4) = -1.
    assert buf.advantages[1, 0] == pytest.approx(-1.0)
    np.testing.assert_allclose(buf.returns, buf.advantages + buf.values)


def test_termination_does_not_bootstrap_but_absorbing_does():
    buf = _collect(4, terminate=True)
    np.testing.assert_array_equal(buf.terminated[:, 0], [0, 1, 0, 1])
    np.testing.assert_array_equal(buf.next_obs_raw[:, 0, 0], [1, 2, 1, 2])
    buf.compute_advantages(gamma=0.5, lam=1.0)
    assert buf.advantages[1, 0] == pytest.approx(1.0 - 10.0)  # no bootstrap after termination
    buf.compute_advantages(gamma=0.5, lam=1.0, bootstrap_terminal=np.full((4, 2), 8.0, np.float32))
    assert buf.advantages[1, 0] == pytest.approx(1.0 + 0.5 * 8.0 - 10.0)  # absorbing successor's value


def test_normalized_actions_map_and_clip():
    env = NormalizedActions(gym.make(ENV_ID))
    env.reset(seed=0)
    for a, expected in ((-1.0, -2.0), (0.0, 0.0), (0.5, 1.0), (3.0, 2.0)):
        env.step(np.array([a], np.float32))
        assert env.unwrapped.last_action[0] == pytest.approx(expected)  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["async", "batched"])
def test_subprocess_vector_envs_match_sync(mode):
    sync = _collect(5)
    envs = make_vector_env(ENV_ID, 2, {}, mode=mode, num_workers=2)
    try:
        normalizer = ObsNormalizer(1, clip=100.0, enabled=False)
        collector = RolloutCollector(envs, normalizer, torch.Generator().manual_seed(0))
        collector.reset(seed=0)
        buf = RolloutBuffer.empty(5, 2, 1, 1)
        torch.manual_seed(0)
        collector.collect(GaussianActor(1, 1), TenTimesObs(), buf)  # type: ignore[arg-type]
    finally:
        envs.close()
    np.testing.assert_array_equal(buf.next_obs_raw, sync.next_obs_raw)
    np.testing.assert_array_equal(buf.truncated, sync.truncated)
    # every mode computes actions with the same row-by-row kernel: same noise, same bits
    np.testing.assert_array_equal(buf.actions, sync.actions)
    np.testing.assert_array_equal(buf.log_probs, sync.log_probs)
    np.testing.assert_array_equal(buf.obs_raw, sync.obs_raw)


def test_worker_rollouts_continue_across_rollouts_and_count_episodes():
    """Three workers, uneven slices, two rollouts in a row: same transitions as in-process stepping."""
    results = []
    for mode in ("sync", "batched"):
        envs = make_vector_env(ENV_ID, 5, {"terminate": True}, mode=mode, num_workers=3)
        try:
            collector = RolloutCollector(envs, ObsNormalizer(1, clip=100.0, enabled=False), torch.Generator())
            collector.reset(seed=0)
            actor = GaussianActor(1, 1)
            buffers = [RolloutBuffer.empty(3, 5, 1, 1) for _ in range(2)]
            for buf in buffers:
                collector.collect(actor, TenTimesObs(), buf)  # type: ignore[arg-type]
            results.append((buffers, collector.stats.episodes))
        finally:
            envs.close()
    (sync_bufs, sync_eps), (piped_bufs, piped_eps) = results
    assert piped_eps == sync_eps == 5 * 3  # 6 steps per env, episodes of 2 steps
    for a, b in zip(sync_bufs, piped_bufs, strict=True):
        np.testing.assert_array_equal(a.obs_raw, b.obs_raw)
        np.testing.assert_array_equal(a.next_obs_raw, b.next_obs_raw)
        np.testing.assert_array_equal(a.terminated, b.terminated)


def test_merge_infos_handles_keys_missing_in_some_workers():
    a = {"x": np.array([1.0, 2.0]), "_x": np.array([True, False])}
    b = {
        "final_obs": np.array([None, np.ones(2)], dtype=object),
        "_final_obs": np.array([False, True]),
        "final_info": {"is_success": np.array([False, True]), "_is_success": np.array([False, True])},
        "_final_info": np.array([False, True]),
    }
    merged = merge_infos([a, b], [2, 2])
    np.testing.assert_array_equal(merged["x"], [1.0, 2.0, 0.0, 0.0])
    np.testing.assert_array_equal(merged["_x"], [True, False, False, False])
    np.testing.assert_array_equal(merged["_final_obs"], [False, False, False, True])
    assert merged["final_obs"][0] is None and np.all(merged["final_obs"][3] == 1)
    np.testing.assert_array_equal(merged["final_info"]["_is_success"], [False, False, False, True])
    np.testing.assert_array_equal(merged["final_info"]["is_success"], [False, False, False, True])


def test_batched_env_reports_worker_errors():
    envs = make_vector_env(ENV_ID, 2, {}, mode="batched", num_workers=2)
    try:
        with pytest.raises(RuntimeError, match="vector env worker failed"):
            envs.step(np.zeros((2, 1), np.float32))  # step before reset: OrderEnforcing raises in the worker
    finally:
        envs.close()


def test_reward_scaler_tracks_discounted_returns():
    from gail_robot.envs.wrappers import RewardScaler

    scaler = RewardScaler(1, gamma=0.5)
    rewards = np.ones((4, 1), np.float32)
    done = np.array([[False], [True], [False], [False]])
    scaled = scaler(rewards, done)
    tracked = np.array([1.0, 1.5, 1.0, 1.5])  # returns restart after the episode end
    expected_var = np.var(tracked) * 4 / (4 + 1e-4)  # RunningMeanStd's prior count 1e-4 at var 1
    assert scaler.rms.var == pytest.approx(expected_var + 1e-4 / (4 + 1e-4) * 1.0, rel=1e-3)
    np.testing.assert_allclose(scaled, rewards / np.sqrt(scaler.rms.var + 1e-8), rtol=1e-6)


def test_warm_start_statistics_stay_fixed_through_updates_and_resume() -> None:
    """--init-from: BC statistics are kept, so the warm-started actor sees the inputs it was trained on."""
    norm = ObsNormalizer(3)
    norm.update(np.random.default_rng(0).normal(size=(100, 3)))
    assert not norm.frozen
    mean, var = np.array([1.0, 2.0, 3.0]), np.array([1e-6, 4.0, 9.0])  # a nearly constant first dimension
    norm.load_frozen(mean, var)
    norm.update(np.full((5000, 3), 50.0))
    np.testing.assert_array_equal(norm.mean, mean)
    np.testing.assert_array_equal(norm.var, var)
    resumed = ObsNormalizer(3)
    resumed.load_state_dict(norm.state_dict())
    resumed.update(np.full((10, 3), -7.0))
    assert resumed.frozen
    np.testing.assert_array_equal(resumed.mean, mean)


# ------------------------------------------------------------------------------ NumpyPolicy


def _trained_looking(actor: GaussianActor) -> GaussianActor:
    """Actions that span the range, as a trained actor's do (training starts the head at gain 0.01)."""
    torch.nn.init.orthogonal_(actor.mean_net[-1].weight, gain=1.0)
    with torch.no_grad():
        for layer in actor.mean_net[::2]:
            layer.bias.uniform_(-0.5, 0.5)
    return actor


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu", "silu"])
@pytest.mark.parametrize("hidden", [[64, 64], [256, 256], [32]])
def test_numpy_policy_reproduces_the_shipped_actors(activation, hidden):
    actor = _trained_looking(GaussianActor(11, 3, NetConfig(hidden, activation)))
    policy = NumpyPolicy.from_actor(actor, torch.ones(3), ObsNormalizer(11))
    probe = np.random.default_rng(1).uniform(-10.0, 10.0, (128, 11)).astype(np.float32)
    with torch.no_grad():
        expected = actor(torch.from_numpy(probe)).numpy()
    got = policy.mean(probe)
    assert got.dtype == np.float32 and np.abs(expected).max() > 1.0
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert policy.activations == [activation] * len(hidden)


def test_numpy_policy_refuses_a_layer_norm():
    actor = GaussianActor(5, 2, NetConfig([16]))
    first, act, head = actor.mean_net
    actor.mean_net = torch.nn.Sequential(first, torch.nn.LayerNorm(16), act, head)
    with pytest.raises(ValueError, match=r"LayerNorm at position 1.*vectorization=sync"):
        NumpyPolicy.from_actor(actor, torch.ones(2), ObsNormalizer(5))


def test_numpy_policy_refuses_an_unknown_activation_and_a_missing_head():
    actor = GaussianActor(5, 2, NetConfig([16]))
    actor.mean_net[1] = torch.nn.GELU()
    with pytest.raises(ValueError, match="GELU at position 1"):
        NumpyPolicy.from_actor(actor, torch.ones(2), ObsNormalizer(5))
    actor = GaussianActor(5, 2, NetConfig([16]))
    actor.mean_net = actor.mean_net[:2]  # ends in an activation
    with pytest.raises(ValueError, match="ending in a Linear layer"):
        NumpyPolicy.from_actor(actor, torch.ones(2), ObsNormalizer(5))


def test_numpy_policy_refuses_an_actor_whose_forward_it_does_not_know():
    class ScaledHead(GaussianActor):
        """Same layers, a different head: only the probe batch can tell."""

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return 2.0 * self.mean_net(obs)

    actor = _trained_looking(ScaledHead(5, 2, NetConfig([16])))
    with pytest.raises(ValueError, match="does not reproduce ScaledHead"):
        NumpyPolicy.from_actor(actor, torch.ones(2), ObsNormalizer(5))
