"""Discrete action spaces end to end: the categorical actor, Gumbel-max rollouts, PPO / TRPO / BC /
GAIL on int64 actions, recording, validation, evaluation and export (docs/DESIGN.md §3, §5, §9)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch
from cli_runner import one_line_error, run_cli

from gail_robot.algos.bc import fit_bc
from gail_robot.algos.config import (
    GAILConfig,
    PPOConfig,
    TRPOConfig,
    config_from_dict,
    load_yaml,
    shipped_config_path,
)
from gail_robot.algos.gail import GAIL, one_hot
from gail_robot.algos.ppo import PPO
from gail_robot.algos.rollout import NumpyPolicy, RolloutBuffer, RolloutCollector
from gail_robot.algos.trainer import OnPolicyTrainer
from gail_robot.algos.trpo import TRPO
from gail_robot.data import DemoDataset, DemoWriter, Transitions
from gail_robot.data.convert import convert
from gail_robot.data.validate import validate_file
from gail_robot.envs.make import check_action_space, make_env, policy_actions
from gail_robot.envs.vector import make_vector_env
from gail_robot.envs.wrappers import ObsNormalizer
from gail_robot.errors import UserError
from gail_robot.evaluate import evaluate_policy
from gail_robot.export import export_policy, load_exported
from gail_robot.nets import CategoricalActor, Critic, NetConfig, actor_from_spec
from gail_robot.policy_io import load_policy
from gail_robot.teleop.devices import RandomDevice, make_device
from gail_robot.teleop.recorder import StatusLine, record

REPO = Path(__file__).resolve().parents[1]
CARTPOLE_DEMOS = REPO / "datasets" / "experts" / "CartPole-v1" / "demos.hdf5"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small networks, as the trainers run them (run.torch_threads: 1): a busy machine's thread pool
    would otherwise spin (50 BC epochs took 17 s instead of 0.5 s with another job running)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fixed_logits_actor(logits: list[float], obs_dim: int = 2) -> CategoricalActor:
    """A categorical actor whose logits are ``logits`` in every state (zero weights, set biases)."""
    actor = CategoricalActor(obs_dim, len(logits), NetConfig([4]))
    with torch.no_grad():
        for p in actor.parameters():
            p.zero_()
        actor.logits_net[-1].bias.copy_(torch.tensor(logits))
    return actor


# -- the categorical actor ------------------------------------------------------------------------


def test_log_prob_and_entropy_by_hand() -> None:
    # logits (0, ln 2, ln 3): softmax = (1, 2, 3) / 6
    actor = _fixed_logits_actor([0.0, math.log(2.0), math.log(3.0)])
    obs = torch.zeros(3, 2)
    log_prob, entropy = actor.log_prob_and_entropy(obs, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(log_prob, torch.log(torch.tensor([1 / 6, 2 / 6, 3 / 6])))
    p = np.array([1, 2, 3]) / 6
    assert entropy.item() == pytest.approx(float(-(p * np.log(p)).sum()), abs=1e-6)  # 1.0114 nats
    assert entropy.item() == pytest.approx(1.0114042, abs=1e-6)
    assert actor.act(obs).tolist() == [2, 2, 2] and actor.act(obs).dtype == torch.int64


def test_categorical_kl_by_hand_and_spec_round_trip() -> None:
    old = _fixed_logits_actor([0.0, 0.0])  # (1/2, 1/2)
    new = _fixed_logits_actor([0.0, math.log(3.0)])  # (1/4, 3/4)
    obs = torch.zeros(5, 2)
    kl = new.kl_from(old.frozen(obs), obs).item()
    # KL(old || new) = 1/2 ln(2) + 1/2 ln(2/3)
    assert kl == pytest.approx(0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0), abs=1e-6)
    assert new.kl_from(new.frozen(obs), obs).item() == pytest.approx(0.0, abs=1e-7)
    rebuilt = actor_from_spec(new.spec())
    rebuilt.load_state_dict(new.state_dict())
    assert isinstance(rebuilt, CategoricalActor) and rebuilt.n_actions == 2
    torch.testing.assert_close(rebuilt(obs), new(obs))


def test_gumbel_max_samples_follow_the_softmax() -> None:
    probs = np.array([0.1, 0.2, 0.7])
    actor = _fixed_logits_actor(np.log(probs).tolist())
    noise = actor.draw_noise((400, 100), torch.Generator().manual_seed(0))  # 40 000 draws
    assert noise.shape == (400, 100, 3) and torch.isfinite(noise).all()
    policy = NumpyPolicy.from_actor(actor, None, ObsNormalizer(2))
    actions = policy.act(np.zeros((40_000, 2), np.float32), noise.numpy().reshape(-1, 3))
    assert actions.dtype == np.int64
    freq = np.bincount(actions, minlength=3) / len(actions)
    # 4 standard errors of a binomial proportion at n = 40 000 are below 0.01
    np.testing.assert_allclose(freq, probs, atol=0.01)
    # the torch path takes the same argmax
    torch_actions = actor.noisy_action(torch.zeros(40_000, 2), noise.reshape(-1, 3))
    np.testing.assert_array_equal(torch_actions.numpy(), actions)


# -- one rollout path, bit for bit ----------------------------------------------------------------


def _cartpole_rollouts(mode: str, rounds: int = 2) -> list[RolloutBuffer]:
    envs = make_vector_env("CartPole-v1", 4, {}, mode=mode, num_workers=2)  # type: ignore[arg-type]
    try:
        normalizer = ObsNormalizer(4)
        collector = RolloutCollector(envs, normalizer, torch.Generator().manual_seed(3))
        collector.reset(seed=0)
        torch.manual_seed(0)
        actor, critic = CategoricalActor(4, 2), Critic(4)
        with torch.no_grad():  # larger logits than at init: actions depend on the state
            actor.logits_net[-1].weight.mul_(100.0)
        buffers = []
        for _ in range(rounds):
            buffer = RolloutBuffer.empty(64, 4, 4, 0, discrete=True)
            collector.collect(actor, critic, buffer)
            buffers.append(buffer)
        return buffers
    finally:
        envs.close()


def test_categorical_rollouts_are_bit_identical_in_sync_and_batched_modes() -> None:
    sync, batched = _cartpole_rollouts("sync"), _cartpole_rollouts("batched")
    for a, b in zip(sync, batched, strict=True):
        assert a.actions.dtype == np.int64 and a.actions.shape == (64, 4)
        for key in ("obs_raw", "next_obs_raw", "actions", "log_probs", "terminated", "truncated", "values"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
    both = np.concatenate([b.actions.ravel() for b in sync])
    assert 0.2 < both.mean() < 0.8  # both actions are taken
    assert sync[0].terminated.any()  # episodes end (and autoreset) inside the rollout


def test_rollout_log_probs_are_the_actor_log_softmax() -> None:
    (buffer,) = _cartpole_rollouts("sync", rounds=1)
    torch.manual_seed(0)
    actor = CategoricalActor(4, 2)
    with torch.no_grad():
        actor.logits_net[-1].weight.mul_(100.0)
        expected = actor.log_prob(
            torch.from_numpy(buffer.obs.reshape(-1, 4)), torch.from_numpy(buffer.actions.ravel())
        )
    np.testing.assert_allclose(buffer.log_probs.ravel(), expected.numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("algo", ["ppo", "trpo"])
def test_ppo_and_trpo_raise_the_probability_of_advantaged_actions(algo: str) -> None:
    """One state, two actions, action 1 always has the higher advantage: its probability must rise."""
    torch.manual_seed(0)
    actor, critic = CategoricalActor(2, 2, NetConfig([8])), Critic(2, NetConfig([8]))
    buffer = RolloutBuffer.empty(64, 2, 2, 0, discrete=True)
    buffer.obs[:] = 0.5
    buffer.actions[:] = np.arange(128).reshape(64, 2) % 2
    with torch.no_grad():
        buffer.log_probs[:] = (
            actor.log_prob(
                torch.from_numpy(buffer.obs.reshape(-1, 2)), torch.from_numpy(buffer.actions.ravel())
            )
            .numpy()
            .reshape(64, 2)
        )
    buffer.advantages[:] = np.where(buffer.actions == 1, 1.0, -1.0)
    buffer.returns[:] = buffer.advantages
    rng = torch.Generator().manual_seed(0)
    update = (
        PPO(actor, critic, PPOConfig(lr=1e-2, epochs=4, minibatches=4), rng)
        if algo == "ppo"
        else TRPO(actor, critic, TRPOConfig(max_kl=0.01), rng)
    )
    before = actor.log_prob(torch.full((1, 2), 0.5), torch.tensor([1])).exp().item()
    metrics = update.update(buffer, progress=0.0)
    after = actor.log_prob(torch.full((1, 2), 0.5), torch.tensor([1])).exp().item()
    assert before == pytest.approx(0.5, abs=0.01) and after > before + 0.03
    assert 0.0 < metrics["entropy"] <= math.log(2.0) + 1e-6
    if algo == "trpo":
        assert metrics["step_accepted"] == 1.0 and metrics["approx_kl"] <= 0.01


# -- BC and GAIL ----------------------------------------------------------------------------------


def test_bc_cross_entropy_reaches_the_entropy_of_the_expert_actions() -> None:
    """One state, the expert takes action 2 three times as often as action 0: the optimum is
    p = (1/4, 0, 3/4) and the cross-entropy there is H = -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.5623 nats."""
    obs = np.zeros((400, 3), np.float32)
    actions = np.array([0, 2, 2, 2] * 100, np.int64)
    torch.manual_seed(0)
    actor = CategoricalActor(3, 3, NetConfig([16]))
    seen: list[float] = []
    best = fit_bc(
        actor, obs, actions, None, None, lr=1e-2, batch_size=400, max_epochs=400, patience=400,
        on_epoch=lambda epoch, m: seen.append(m["train_nll"]),
    )  # fmt: skip
    optimum = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert seen[0] == pytest.approx(math.log(3.0), abs=0.01)  # near-uniform start
    assert best["train_nll"] == pytest.approx(optimum, abs=2e-3)
    probs = actor(torch.zeros(1, 3)).softmax(-1)[0].detach().numpy()
    np.testing.assert_allclose(probs, [0.25, 0.0, 0.75], atol=0.01)
    held_out = fit_bc(CategoricalActor(3, 3), obs, actions, obs[:8], actions[:8], max_epochs=2)
    assert 0.0 <= held_out["valid_accuracy"] <= 1.0


def test_discriminator_sees_one_hot_actions() -> None:
    np.testing.assert_array_equal(one_hot(np.array([2, 0, 1]), 3), [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(10, 4)).astype(np.float32)
    expert = Transitions(obs, np.arange(10, dtype=np.int64) % 2, obs + 1, np.zeros(10, bool))
    normalizer = ObsNormalizer(4, enabled=False)
    empty = np.zeros(0, np.float32)
    config = GAILConfig(hidden_sizes=[8], batch_size=8, absorbing=True)
    gail = GAIL(config, expert, normalizer, empty, empty, "gail", 0.99, torch.Generator(), n_actions=2)
    x, _ = gail.inputs(gail.expert)
    assert gail.in_dim == 4 + 2 + 1 and x.shape == (10, 7)
    np.testing.assert_array_equal(x[:, :4], obs)
    np.testing.assert_array_equal(x[:, 4:6], one_hot(expert.actions, 2))
    buffer = RolloutBuffer.empty(5, 2, 4, 0, discrete=True)
    buffer.obs_raw[:] = rng.normal(size=buffer.obs_raw.shape)
    buffer.actions[:] = [[0, 1]] * 5
    assert np.isfinite(list(gail.update(buffer).values())).all()
    gail.relabel(buffer)
    assert np.all(buffer.rewards >= 0)  # kind gail
    restored = GAIL(config, expert, normalizer, empty, empty, "gail", 0.99, torch.Generator(), n_actions=2)
    restored.load_state_dict(gail.state_dict())
    assert restored.replay[0].actions.dtype == np.int64


# -- recording, the file, evaluation and export ---------------------------------------------------


def test_record_writes_int64_actions_and_the_discrete_space(tmp_path: Path) -> None:
    out = tmp_path / "cartpole.hdf5"
    env = gym.make("CartPole-v1")
    with DemoWriter(out, env, mode="w", durable=False) as writer:
        device = RandomDevice(env, 0.0, 0, False)
        stats = record(env, device, writer, episodes=3, seed=5, status=StatusLine(io.StringIO()))
    env.close()
    assert len(stats.saved) == 3
    assert validate_file(out) == []
    with h5py.File(out) as f:
        assert int(f["data"].attrs["format_version"]) == 2
        assert json.loads(f["data"].attrs["action_space"]) == {"type": "Discrete", "n": 2}
        actions = f["data/demo_0/actions"]
        assert actions.dtype == np.int64 and actions.ndim == 1
        assert f["data/demo_0/states"].shape[1] == 0  # no MuJoCo physics: not replayable from states
    # the same random actions in the same env give the same episode: the file holds what was done
    demo = DemoDataset(out).demo("demo_0")
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=5)
    for t, action in enumerate(demo.actions):
        np.testing.assert_array_equal(obs, demo.obs["state"][t])
        obs, *_ = env.step(action)
    transitions = DemoDataset(out).transitions()
    assert transitions.actions.dtype == np.int64 and set(np.unique(transitions.actions)) == {0, 1}


def test_validate_names_an_action_outside_the_space_and_old_files_still_load(tmp_path: Path) -> None:
    out = tmp_path / "cartpole.hdf5"
    env = gym.make("CartPole-v1")
    with DemoWriter(out, env, mode="w", durable=False) as writer:
        record(env, RandomDevice(env, 0.0, 0, False), writer, episodes=1, status=StatusLine(io.StringIO()))
    env.close()
    with h5py.File(out, "r+") as f:
        f["data/demo_0/actions"][3] = 7
    assert validate_file(out) == ["demo_0: actions[3] is 7, outside the Discrete(2) action space"]
    with h5py.File(out, "r+") as f:
        f["data"].attrs["format_version"] = 1
    with pytest.raises(UserError, match=r"format_version 1 does not match its Discrete\(2\) action space"):
        DemoDataset(out)
    # schema v1 files (continuous actions) keep loading
    reach = DemoDataset(REPO / "datasets" / "experts" / "ArmReach-v0" / "demos.hdf5")
    assert reach.transitions().actions.dtype == np.float32


def test_converters_refuse_discrete_files_in_one_line(tmp_path: Path) -> None:
    for to, out in (("npz", "d.npz"), ("robomimic", "rm.hdf5")):
        with pytest.raises(UserError, match=f"Discrete.2. action space cannot be converted to {to}"):
            convert(str(CARTPOLE_DEMOS), str(tmp_path / out), to=to)


def test_cli_trains_evaluates_and_records_on_cartpole(tmp_path: Path) -> None:
    for env_id in ("CartPole-v1", "Acrobot-v1", "MountainCar-v0"):  # the experts' configs
        path = shipped_config_path(f"ppo/{env_id}")
        assert path is not None and config_from_dict(load_yaml(path)).env.id == env_id
    run = tmp_path / "run"
    result = run_cli(
        "train", "--algo", "ppo", "--env", "CartPole-v1", "--steps", "512", "--num-envs", "2", "--sync",
        "--out", str(run), "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    evaluation = json.loads(run_cli("eval", str(run), "--episodes", "2", "--json").stdout)
    assert evaluation["episodes"] == 2 and evaluation["mean_return"] >= 8
    out = tmp_path / "demos.hdf5"
    result = run_cli(
        "record", "--env", "CartPole-v1", "--device", "policy", "--policy", str(run), "--episodes", "2",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert DemoDataset(out).transitions().actions.dtype == np.int64


def test_bc_mse_loss_refuses_discrete_actions_in_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "train", "--algo", "bc", "--env", "CartPole-v1", "--demos", str(CARTPOLE_DEMOS),
        "--set", "bc.loss=mse", "--out", str(tmp_path / "run"), "--no-progress",
    )  # fmt: skip
    assert one_line_error(result) == (
        "gail-robot train: error: bc.loss=mse needs continuous actions; "
        "Discrete actions train with bc.loss=nll"
    )


def test_recording_refuses_non_integer_actions_and_teleop_devices(tmp_path: Path) -> None:
    env = gym.make("CartPole-v1")
    with DemoWriter(tmp_path / "x.hdf5", env, mode="w", durable=False) as writer:
        writer.start_episode(seed=0, source="test")
        obs, _ = env.reset(seed=0)
        for bad, match in (
            (0.5, "expected one integer"),
            (np.array([1]), "expected one integer"),
            (2, "outside"),
        ):
            with pytest.raises(ValueError, match=match):
                writer.add_step(obs, bad, 1.0, obs, False, False, np.zeros(0))
        writer.discard_episode()
    with pytest.raises(UserError, match="--device keyboard drives continuous actions"):
        make_device("keyboard", env)
    with pytest.raises(UserError, match="take no noise"):
        make_device("random", env, noise=0.1)
    env.close()


def test_export_returns_the_argmax_as_int64(tmp_path: Path) -> None:
    torch.manual_seed(0)
    actor = CategoricalActor(4, 2, NetConfig([16]))
    with torch.no_grad():
        actor.logits_net[-1].weight.mul_(100.0)
    from gail_robot.policy_io import PolicyBundle

    empty = np.zeros(0, np.float32)
    bundle = PolicyBundle(
        actor,
        np.full(4, 0.1),
        np.full(4, 2.0),
        10.0,
        empty,
        empty,
        "CartPole-v1",
        {},
        {"algo": "test"},
        n_actions=2,
    )
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    expected = bundle.act(obs)
    assert expected.dtype == np.int64 and expected.shape == (64,) and 0 < expected.mean() < 1
    meta = export_policy(bundle, tmp_path / "policy.pt")
    assert meta["action_space"] == {"type": "Discrete", "n": 2} and meta["n_actions"] == 2
    assert meta["observation_layout"] is None and "continuous-control" in meta["controller_note"]
    from gail_robot import controller

    with pytest.raises(
        UserError, match=r"runs continuous-control policies; this one has Discrete\(2\) actions"
    ):
        controller.controller_command(tmp_path / "policy.pt")  # refused in Python, before any C++
    loaded = load_exported(tmp_path / "policy.pt")
    got = loaded.fn(obs)
    assert got.dtype == np.int64 and got.shape == (64,)
    np.testing.assert_array_equal(got, expected)
    again = load_policy(tmp_path / "policy.pt")  # the exported file as a PolicyBundle
    assert again.n_actions == 2
    np.testing.assert_array_equal(again.act(obs), expected)
    result = evaluate_policy(again, 2)
    assert result.episodes == 2 and result.mean_length >= 1


# -- bad action spaces ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "space",
    [
        gym.spaces.MultiDiscrete([3, 2]),
        gym.spaces.MultiBinary(4),
        gym.spaces.Dict({"a": gym.spaces.Discrete(2)}),
        gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Box(-1, 1, (2,)))),
        gym.spaces.Box(0, 255, (8, 8, 3), np.uint8),
        gym.spaces.Discrete(3, start=-1),
    ],
    ids=["multidiscrete", "multibinary", "dict", "tuple", "image", "discrete-start"],
)
def test_unsupported_action_spaces_are_one_line(space: gym.Space) -> None:
    with pytest.raises(UserError) as info:
        check_action_space("Some-v0", space)
    line = str(info.value)
    assert "\n" not in line and line.startswith("Some-v0 has action space ")
    assert line.endswith("supported action spaces: a continuous Box (a float vector) or Discrete(n)")


def test_policy_actions_of_a_discrete_env() -> None:
    env = make_env("Acrobot-v1")
    actions = policy_actions(env)
    assert isinstance(env.action_space, gym.spaces.Discrete)  # not wrapped
    assert actions.discrete and actions.n_actions == 3 and actions.act_dim == 0
    env.close()


# -- learning -------------------------------------------------------------------------------------


def _gail_cartpole(tmp_path: Path, steps: int, generator: str = "ppo") -> OnPolicyTrainer:
    config = config_from_dict(
        {
            "algo": "gail",
            "env": {"id": "CartPole-v1", "num_envs": 8, "vectorization": "sync"},
            "rollout": {"n_steps": 128},
            "ppo": {"lr": 1e-3, "epochs": 10, "minibatches": 4},
            "gail": {
                "demos": str(CARTPOLE_DEMOS), "max_demos": 1, "generator": generator,
                "hidden_sizes": [64, 64], "batch_size": 256, "grad_penalty": 1.0,
            },
            "run": {"total_steps": steps, "eval_interval": 0, "eval_episodes": 10, "seed": 0,
                    "progress": False, "tensorboard": False},
        }
    )  # fmt: skip
    trainer = OnPolicyTrainer(config, tmp_path / "run")
    trainer.train()
    return trainer


def test_gail_ppo_on_cartpole_from_one_demo_beats_random_quickly(tmp_path: Path) -> None:
    """A random policy scores 26 on CartPole; 20k steps of GAIL-PPO from one 500-step demo clearly more."""
    trainer = _gail_cartpole(tmp_path, 20_480)
    result = evaluate_policy(trainer.bundle(), 10, seed=1000)
    assert result.mean_return > 300, result.returns  # (10x random; 500 measured)


@pytest.mark.slow
def test_gail_ppo_on_cartpole_from_one_demo_reaches_the_expert(tmp_path: Path) -> None:
    trainer = _gail_cartpole(tmp_path, 200_000)
    result = evaluate_policy(trainer.bundle(), 20, seed=1000)
    assert result.mean_return >= 475, result.returns


def test_gail_on_cartpole_is_bit_identical_in_sync_batched_and_ray(ray_cluster, tmp_path: Path) -> None:
    """The learner draws the Gumbel noise, the workers only compute logits: same seed, same weights."""

    def train(mode: str) -> dict:
        config = config_from_dict(
            {
                "algo": "gail",
                "env": {"id": "CartPole-v1", "num_envs": 4, "vectorization": mode, "num_workers": 2},
                "policy": {"hidden_sizes": [16, 16]},
                "rollout": {"n_steps": 32},
                "ppo": {"epochs": 2, "minibatches": 4},
                "gail": {"demos": str(CARTPOLE_DEMOS), "max_demos": 1, "hidden_sizes": [16],
                         "batch_size": 64},
                "run": {"total_steps": 3 * 128, "seed": 3, "eval_interval": 128, "eval_episodes": 2,
                        "checkpoint_interval": 10**9, "progress": False, "tensorboard": False},
            }
        )  # fmt: skip
        return torch.load(OnPolicyTrainer(config, tmp_path / mode).train(), weights_only=True)

    runs = {mode: train(mode) for mode in ("sync", "batched", "ray")}
    for mode in ("batched", "ray"):
        for key in ("actor", "critic"):
            for name, tensor in runs["sync"][key].items():
                assert torch.equal(tensor, runs[mode][key][name]), f"{mode}: {key}.{name} differs"
        for name, tensor in runs["sync"]["gail"]["disc"].items():
            assert torch.equal(tensor, runs[mode]["gail"]["disc"][name]), f"{mode}: discriminator.{name}"
    assert runs["ray"]["meta"]["eval"] == runs["sync"]["meta"]["eval"]  # (evaluated on the Ray workers)
