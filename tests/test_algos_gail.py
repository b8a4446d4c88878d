"""GAIL's discriminator side: inputs, absorbing states, batch relabelling, state round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gail_robot import core
from gail_robot.algos.config import GAILConfig
from gail_robot.algos.gail import GAIL, reward_kind_for
from gail_robot.algos.rollout import RolloutBuffer
from gail_robot.data import Transitions
from gail_robot.envs.wrappers import ObsNormalizer
from gail_robot.errors import UserError

OBS, ACT = 3, 2
LOW, HIGH = np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32)


def _expert(n: int = 40, terminal_every: int = 10) -> Transitions:
    rng = np.random.default_rng(0)
    obs = rng.normal(1.0, 1.0, size=(n, OBS)).astype(np.float32)
    return Transitions(
        obs=obs,
        actions=np.tile(HIGH, (n, 1)).astype(np.float32),  # +1 in normalised units
        next_obs=obs + 0.1,
        terminated=(np.arange(n) % terminal_every) == terminal_every - 1,
    )


def _buffer(t: int = 16, n: int = 2) -> RolloutBuffer:
    rng = np.random.default_rng(1)
    buf = RolloutBuffer.empty(t, n, OBS, ACT)
    buf.obs_raw[:] = rng.normal(-1.0, 1.0, size=buf.obs_raw.shape)
    buf.next_obs_raw[:] = buf.obs_raw - 0.1
    buf.actions[:] = -1.5  # executed as -1 after clipping
    buf.terminated[3, 0] = True
    return buf


def _gail(**overrides) -> GAIL:
    config = GAILConfig(hidden_sizes=[16, 16], batch_size=16, **overrides)
    return GAIL(
        config, _expert(), ObsNormalizer(OBS), LOW, HIGH, "gail", 0.9, torch.Generator().manual_seed(0)
    )


def test_reward_kind_follows_the_task():
    assert reward_kind_for("Hopper-v5", "auto") == "gail"
    assert reward_kind_for("gail_robot/ArmPush-v0", "auto") == "neg"
    assert reward_kind_for("Hopper-v5", "airl") == "airl"


def test_inputs_normalise_expert_actions_and_clip_policy_actions():
    gail = _gail()
    x, w = gail.inputs(gail.expert)
    assert x.shape == (40, OBS + ACT) and np.all(w == 1)
    np.testing.assert_allclose(x[:, OBS:], 1.0)  # env-unit HIGH -> +1
    policy = gail.policy_transitions(_buffer())
    np.testing.assert_allclose(gail.inputs(policy)[0][:, OBS:], -1.0)
    ss = _gail(disc_input="ss")
    assert ss.inputs(ss.expert)[0].shape == (40, 2 * OBS)


def test_disc_ignore_obs_leaves_those_columns_of_s_and_s_next_out():
    gail = _gail(disc_ignore_obs=[1])
    x, _ = gail.inputs(gail.expert)
    assert x.shape == (40, 2 + ACT) and gail.in_dim == 2 + ACT
    np.testing.assert_allclose(x[:, :2], gail.normalizer(gail.expert.obs)[:, [0, 2]])
    np.testing.assert_allclose(x[:, 2:], 1.0)
    ss = _gail(disc_input="ss", disc_ignore_obs=["1:3"], absorbing=True)
    x, _ = ss.inputs(ss.expert)
    assert x.shape == (40 + 4, 1 + 1 + 1)
    np.testing.assert_allclose(x[:40, 1], ss.normalizer(ss.expert.next_obs)[:, 0])
    assert ss.state_dict()["obs_columns"] == [0]
    with pytest.raises(UserError, match=r"gail\.disc_ignore_obs: '2:4' is not an index or a range"):
        _gail(disc_ignore_obs=["2:4"])
    with pytest.raises(UserError, match="leaves out all 3 observation dims"):
        _gail(disc_ignore_obs=["0:3"])


def test_absorbing_samples_and_their_weights():
    gail = _gail(absorbing=True, demo_subsample=4)
    x, w = gail._expert_inputs()
    # 40 pairs with flag 0, then one absorbing sample (zeros, flag 1) per terminated pair (4)
    assert x.shape == (44, OBS + ACT + 1)
    assert np.all(x[:40, -1] == 0) and np.all(x[40:, -1] == 1) and np.all(x[40:, :-1] == 0)
    np.testing.assert_allclose(w[:40], 1.0)
    np.testing.assert_allclose(w[40:], 0.25)  # one episode end stands for itself, a kept pair for 4


def test_update_separates_and_relabel_uses_core_rewards():
    gail = _gail(updates_per_round=30, lr=3e-3)
    buf = _buffer()
    metrics = {}
    for _ in range(3):
        metrics = gail.update(buf)
    assert metrics["disc_acc_expert"] > 0.9 and metrics["disc_acc_policy"] > 0.9
    assert gail.relabel(buf) is None
    x = np.concatenate(
        [gail.normalizer(gail.policy_transitions(buf).obs), np.clip(buf.actions, -1, 1).reshape(-1, ACT)],
        axis=1,
    )
    logits = gail.trainer.logits(torch.from_numpy(x.astype(np.float32))).numpy()
    np.testing.assert_allclose(buf.rewards.reshape(-1), core.disc_rewards(logits, "gail"), rtol=1e-6)
    assert np.all(buf.rewards >= 0)  # softplus: a survival bonus
    assert np.all(buf.env_rewards == 0)  # the env's own reward is kept apart


def test_absorbing_relabel_returns_absorbing_value():
    gail = _gail(absorbing=True)
    buf = _buffer()
    gail.update(buf)
    bootstrap = gail.relabel(buf)
    assert bootstrap is not None and bootstrap.shape == buf.rewards.shape
    logit = gail.trainer.logits(torch.from_numpy(gail._absorbing(1))).numpy()
    expected = core.disc_rewards(logit, "gail")[0] / (1 - 0.9)
    np.testing.assert_allclose(bootstrap, expected, rtol=1e-5)


def test_state_round_trip_includes_replay():
    gail = _gail(replay_rounds=2)
    buf = _buffer()
    gail.update(buf)
    gail.update(buf)
    other = _gail(replay_rounds=2)
    other.load_state_dict(gail.state_dict())
    assert len(other.replay) == 2
    x = torch.randn(5, OBS + ACT)
    torch.testing.assert_close(other.trainer.logits(x), gail.trainer.logits(x))


@pytest.mark.parametrize("kind", ["gail", "airl", "neg"])
def test_reward_signs(kind):
    gail = GAIL(
        GAILConfig(hidden_sizes=[8]),
        _expert(),
        ObsNormalizer(OBS),
        LOW,
        HIGH,
        kind,
        0.99,
        torch.Generator().manual_seed(0),
    )
    buf = _buffer()
    gail.relabel(buf)
    if kind == "gail":
        assert np.all(buf.rewards >= 0)
    if kind == "neg":
        assert np.all(buf.rewards <= 0)
