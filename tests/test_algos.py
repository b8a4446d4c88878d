"""Unit tests of the training algorithms: PPO clipping, TRPO trust region, discriminator, BC, configs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gail_robot.algos.bc import fit_bc
from gail_robot.algos.config import (
    PPOConfig,
    TRPOConfig,
    actor_ignored_obs,
    apply_overrides,
    config_from_dict,
    parse_override,
)
from gail_robot.algos.discriminator import DiscriminatorTrainer, discriminator_loss
from gail_robot.algos.ppo import PPO, clipped_surrogate_loss, value_loss
from gail_robot.algos.rollout import RolloutBuffer
from gail_robot.algos.trainer import OnPolicyTrainer
from gail_robot.algos.trpo import TRPO, conjugate_gradient, gaussian_kl
from gail_robot.errors import UserError
from gail_robot.nets import Critic, Discriminator, GaussianActor, NetConfig
from gail_robot.obs_dims import ignored_obs_indices


def test_ppo_clipped_surrogate_by_hand():
    # ratios 1.5, 0.5, 1.1, 0.7 with advantages +1, +1, -2, -1 and eps 0.2:
    #   r=1.5, A=+1: min(1.5, 1.2) = 1.2      (clipped: no incentive beyond 1 + eps)
    #   r=0.5, A=+1: min(0.5, 0.8) = 0.5      (pessimistic: unclipped)
    #   r=1.1, A=-2: min(-2.2, -2.2) = -2.2   (inside the range)
    #   r=0.7, A=-1: min(-0.7, -0.8) = -0.8   (clipped)
    ratios = torch.tensor([1.5, 0.5, 1.1, 0.7])
    advantages = torch.tensor([1.0, 1.0, -2.0, -1.0])
    old = torch.zeros(4)
    loss, clip_fraction = clipped_surrogate_loss(torch.log(ratios), old, advantages, 0.2)
    assert loss.item() == pytest.approx(-(1.2 + 0.5 - 2.2 - 0.8) / 4, abs=1e-6)
    assert clip_fraction.item() == pytest.approx(3 / 4)  # |r - 1| > 0.2 for 1.5, 0.5, 0.7


def test_ppo_clipping_zeroes_gradient_outside_range():
    log_ratio = torch.log(torch.tensor([1.5, 0.5])).requires_grad_(True)
    loss, _ = clipped_surrogate_loss(log_ratio, torch.zeros(2), torch.tensor([1.0, -1.0]), 0.2)
    loss.backward()
    assert log_ratio.grad is not None
    assert torch.all(log_ratio.grad == 0)  # both beyond the clip in the direction the advantage favours


def test_value_loss_clipping_by_hand():
    new, old, ret = torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([3.0])
    assert value_loss(new, old, ret, None).item() == pytest.approx(0.5 * 1.0)
    # clipped value 0.5: max((2-3)^2, (0.5-3)^2) = 6.25
    assert value_loss(new, old, ret, 0.5).item() == pytest.approx(0.5 * 6.25)


def test_conjugate_gradient_solves_spd_system():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(6, 6))
    a = torch.tensor(m @ m.T + 6 * np.eye(6))
    b = torch.tensor(rng.normal(size=6))
    x = conjugate_gradient(lambda v: a @ v, b, iters=20)
    torch.testing.assert_close(a @ x, b, atol=1e-8, rtol=1e-8)


def _trpo_buffer(obs_dim: int, act_dim: int, seed: int) -> RolloutBuffer:
    rng = np.random.default_rng(seed)
    buf = RolloutBuffer.empty(64, 4, obs_dim, act_dim)
    buf.obs[:] = rng.normal(size=buf.obs.shape)
    buf.actions[:] = rng.normal(size=buf.actions.shape)
    buf.advantages[:] = buf.actions[..., 0] * 2.0  # reward the first action dimension
    buf.returns[:] = rng.normal(size=buf.returns.shape)
    return buf


@pytest.mark.parametrize(
    ("max_kl", "anneal_kl", "progress"), [(0.001, False, 0.0), (0.01, False, 0.5), (0.01, True, 0.75)]
)
def test_trpo_step_respects_kl_bound_and_improves_surrogate(max_kl, anneal_kl, progress):
    torch.manual_seed(0)
    actor, critic = GaussianActor(3, 2, NetConfig([16])), Critic(3, NetConfig([16]))
    buf = _trpo_buffer(3, 2, 0)
    with torch.no_grad():
        buf.log_probs[:] = (
            actor.log_prob(
                torch.from_numpy(buf.obs.reshape(-1, 3)), torch.from_numpy(buf.actions.reshape(-1, 2))
            )
            .numpy()
            .reshape(64, 4)
        )
    obs = torch.from_numpy(buf.obs.reshape(-1, 3))
    with torch.no_grad():
        old_mean, old_log_std = actor(obs), actor.log_std.clone()
    config = TRPOConfig(max_kl=max_kl, anneal_kl=anneal_kl)
    trpo = TRPO(actor, critic, config, torch.Generator().manual_seed(0))
    metrics = trpo.update(buf, progress)
    assert metrics["step_accepted"] == 1.0
    # anneal_kl shrinks the bound linearly with progress (0.01 -> 0.0025 at 3/4 of the run).
    bound = max_kl * (1.0 - progress) if anneal_kl else max_kl
    assert metrics["max_kl"] == pytest.approx(bound)
    max_kl = bound
    with torch.no_grad():
        kl = gaussian_kl(old_mean, old_log_std, actor, obs).item()
    assert 0 < kl <= max_kl
    assert kl == pytest.approx(metrics["approx_kl"])
    assert metrics["surrogate_improvement"] > 0
    # The step uses most of the trust region (a quadratic model of the KL is good for small steps).
    assert kl > 0.3 * max_kl


@pytest.mark.parametrize("algo", ["ppo", "trpo"])
def test_critic_only_update_leaves_the_actor_unchanged(algo):
    """run.critic_warmup_rounds: a warm-started actor stays put while the critic learns the returns."""
    torch.manual_seed(0)
    actor, critic = GaussianActor(3, 2, NetConfig([16])), Critic(3, NetConfig([16]))
    buf = _trpo_buffer(3, 2, 0)
    buf.returns[:] = 5.0
    before = [p.detach().clone() for p in actor.parameters()]
    gen = torch.Generator().manual_seed(0)
    updater: PPO | TRPO
    updater = (
        PPO(actor, critic, PPOConfig(), gen) if algo == "ppo" else TRPO(actor, critic, TRPOConfig(), gen)
    )
    obs = torch.from_numpy(buf.obs.reshape(-1, 3))
    with torch.no_grad():
        error_before = (critic(obs) - 5.0).abs().mean().item()
    updater.update(buf, 0.0, critic_only=True)
    assert all(torch.equal(a, b) for a, b in zip(before, actor.parameters(), strict=True))
    with torch.no_grad():
        assert (critic(obs) - 5.0).abs().mean().item() < error_before - 0.2
    updater.update(buf, 0.0)  # a normal update moves the actor
    assert not all(torch.equal(a, b) for a, b in zip(before, actor.parameters(), strict=True))


def test_discriminator_loss_falls_on_fixed_batch():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    expert = torch.randn(256, 5, generator=gen) + 1.0
    policy = torch.randn(256, 5, generator=gen) - 1.0
    trainer = DiscriminatorTrainer(Discriminator(5, NetConfig([32, 32])), lr=1e-3)
    first = discriminator_loss(trainer.disc, expert, policy)
    assert first.bce.item() == pytest.approx(math.log(2), abs=0.15)  # near chance at init
    for _ in range(200):
        last = trainer.step(expert, policy, grad_penalty=1.0, ent_coef=1e-3, torch_rng=gen)
    final = discriminator_loss(trainer.disc, expert, policy)
    assert final.bce.item() < 0.3 * first.bce.item()
    assert last.expert_accuracy > 0.9 and last.policy_accuracy > 0.9
    # expert is high: positive logits on expert inputs
    assert trainer.logits(expert).mean() > 0 > trainer.logits(policy).mean()


def test_discriminator_weights_and_large_logits_are_finite():
    disc = Discriminator(2, NetConfig([4]))
    with torch.no_grad():
        disc.net[-1].bias.fill_(1e4)  # |logit| huge: BCE with logits stays finite
    x = torch.zeros(3, 2)
    loss = discriminator_loss(disc, x, x, expert_weights=torch.tensor([1.0, 0.0, 0.5]), ent_coef=0.1)
    assert torch.isfinite(loss.total)


def test_bc_fits_linear_expert():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 2)) * 0.3
    obs = rng.normal(size=(1200, 4)).astype(np.float32)
    actions = np.clip(obs @ w, -1, 1).astype(np.float32)
    torch.manual_seed(0)
    actor = GaussianActor(4, 2, NetConfig([32, 32]))
    best = fit_bc(
        actor,
        obs[:1000],
        actions[:1000],
        obs[1000:],
        actions[1000:],
        max_epochs=60,
        batch_size=64,
        lr=3e-3,
        patience=10,
    )
    with torch.no_grad():
        pred = actor(torch.from_numpy(obs[1000:])).numpy()
    assert np.mean((pred - actions[1000:]) ** 2) < 2e-3
    assert best["valid_mse"] < 2e-3
    assert actor.log_std.exp().max().item() < 0.7  # the likelihood shrinks the std (from 1)


def test_bc_mse_loss_fits_the_mean_and_keeps_the_log_std():
    """bc.loss=mse: squared error of the mean action, selected on held-out MSE; the std is not trained."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 2)) * 0.3
    obs = rng.normal(size=(1200, 4)).astype(np.float32)
    actions = np.clip(obs @ w, -1, 1).astype(np.float32)
    torch.manual_seed(0)
    actor = GaussianActor(4, 2, NetConfig([32, 32]), init_log_std=-0.5)
    seen: list[dict[str, float]] = []
    best = fit_bc(
        actor,
        obs[:1000],
        actions[:1000],
        obs[1000:],
        actions[1000:],
        max_epochs=60,
        batch_size=64,
        lr=3e-3,
        patience=10,
        loss="mse",
        on_epoch=lambda epoch, m: seen.append(m),
    )
    with torch.no_grad():
        pred = actor(torch.from_numpy(obs[1000:])).numpy()
    assert np.mean((pred - actions[1000:]) ** 2) < 2e-3
    assert "train_mse" in seen[0] and "train_nll" not in seen[0]
    # "best" is the epoch with the lowest held-out MSE, and the weights are that epoch's
    assert best["valid_mse"] == min(m["valid_mse"] for m in seen)
    held_out_mse = float(np.mean((np.clip(pred, -1, 1) - actions[1000:]) ** 2))
    assert best["valid_mse"] == pytest.approx(held_out_mse, rel=1e-5)
    assert torch.equal(actor.log_std.detach(), torch.full((2,), -0.5))
    with pytest.raises(ValueError, match="loss must be one of nll, mse"):
        fit_bc(actor, obs, actions, None, None, loss="l1")
    with pytest.raises(ValueError, match="continuous actions"):
        fit_bc(actor, obs, np.zeros(len(obs), np.int64), None, None, loss="mse")


def test_bc_ignore_obs_keeps_those_inputs_out_of_the_actor():
    """bc.ignore_obs: the first layer's weights from ignored dims start and stay exactly zero."""
    rng = np.random.default_rng(2)
    obs = rng.normal(size=(600, 3)).astype(np.float32)
    actions = np.clip(0.5 * obs[:, :1] + 0.3 * obs[:, 2:3], -1, 1).astype(np.float32)
    torch.manual_seed(0)
    actor = GaussianActor(3, 1, NetConfig([16]))
    fit_bc(actor, obs, actions, None, None, max_epochs=30, batch_size=64, lr=3e-3, weight_decay=1e-2,
           ignore_obs=np.array([1]))  # fmt: skip
    first = actor.mean_net[0].weight.detach()
    assert torch.count_nonzero(first[:, 1]) == 0 and torch.count_nonzero(first[:, [0, 2]]) == 32
    x = torch.from_numpy(obs[:5])
    moved = x.clone()
    moved[:, 1] += 100.0
    with torch.no_grad():
        assert torch.equal(actor(x), actor(moved))
        assert float(((actor(x) - torch.from_numpy(actions[:5])) ** 2).mean()) < 0.01
    assert ignored_obs_indices([7, "0:3", " 2 "], 49, "bc.ignore_obs").tolist() == [0, 1, 2, 7]
    assert ignored_obs_indices([], 49, "bc.ignore_obs").tolist() == []
    for bad in ("5:3", 49, "x", "0:50", -1):
        with pytest.raises(UserError, match=r"bc.ignore_obs: .* not an index or a range a:b within the 49"):
            ignored_obs_indices([bad], 49, "bc.ignore_obs")
    # the actor's selection: policy.ignore_obs, with BC's where BC trains it or a run starts from it
    cfg = config_from_dict({"policy": {"ignore_obs": ["0:2"]}, "bc": {"ignore_obs": [3]}})
    assert actor_ignored_obs(cfg, 5, include_bc=False).tolist() == [0, 1]
    assert actor_ignored_obs(cfg, 5, include_bc=True).tolist() == [0, 1, 3]
    blind = config_from_dict({"policy": {"ignore_obs": ["0:2"]}, "bc": {"ignore_obs": ["2:4"]}})
    assert actor_ignored_obs(blind, 4, include_bc=False).tolist() == [0, 1]
    with pytest.raises(UserError, match="leave the actor none of the 4 observation dims"):
        actor_ignored_obs(blind, 4, include_bc=True)


def test_config_from_dict_and_overrides():
    data = apply_overrides(
        {"algo": "gail", "env": {"id": "Hopper-v5"}},
        ["ppo.lr=1e-4", "gail.hidden_sizes=[32, 32]", "ppo.target_kl=null", "env.num_envs=4"],
    )
    cfg = config_from_dict(data)
    assert cfg.ppo.lr == 1e-4 and cfg.gail.hidden_sizes == [32, 32] and cfg.ppo.target_kl is None
    assert cfg.env.num_envs == 4 and cfg.generator == "ppo"
    assert config_from_dict(cfg.to_dict()) == cfg  # round trip through plain data (config.yaml)
    assert parse_override("run.seed=3") == (["run", "seed"], 3)


@pytest.mark.parametrize(
    ("algo", "generator", "expected"),
    [
        ("ppo", None, -1.0),
        ("trpo", None, -1.75),
        ("gail", "ppo", -1.0),
        ("gail", "trpo", -1.75),
        ("bc", None, -0.5),
    ],
)
def test_initial_log_std_is_the_generators_own_when_set(tmp_path, algo, generator, expected):
    data = {
        "algo": algo,
        "env": {"id": "InvertedPendulum-v5", "num_envs": 1, "vectorization": "sync"},
        "policy": {"init_log_std": -0.5},
        "ppo": {"init_log_std": -1.0},
        "trpo": {"init_log_std": -1.75},
        "run": {"tensorboard": False, "progress": False},
    }
    if generator:
        data["gail"] = {"generator": generator}
    cfg = config_from_dict(data)
    assert cfg.initial_log_std == expected
    if algo in ("ppo", "trpo"):  # the trainer builds gail's actor the same way (it needs demos besides)
        trainer = OnPolicyTrainer(cfg, tmp_path / "run")
        assert torch.allclose(trainer.actor.log_std, torch.full_like(trainer.actor.log_std, expected))
    # unset, the generator starts from policy.init_log_std
    cfg = config_from_dict({**data, "ppo": {}, "trpo": {}})
    assert cfg.initial_log_std == -0.5


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ppo": {"lrr": 1}}, "unknown config key 'ppo.lrr'"),
        ({"bogus": 1}, "unknown config key 'bogus'"),
        ({"ppo": {"lr": "fast"}}, "ppo.lr must be a number"),
        ({"env": {"num_envs": 0}}, "env.num_envs must be >= 1"),
        ({"gail": {"reward": "log"}}, "gail.reward must be one of"),
        ({"algo": "ddpg"}, "algo must be one of"),
    ],
)
def test_config_errors_are_one_line_user_errors(data, message):
    with pytest.raises(UserError, match=message) as info:
        config_from_dict(data)
    assert "\n" not in str(info.value)


def test_optimizer_state_with_integer_flags_still_loads() -> None:
    """Checkpoints before 0.1.1 stored Adam's boolean options as 0/1; fused Adam needs bools."""
    from gail_robot.nets import adam, load_optimizer_state

    param = torch.nn.Parameter(torch.ones(3))
    first = adam([param], 1e-3)
    param.sum().backward()
    first.step()
    state = first.state_dict()
    for group in state["param_groups"]:
        for key, value in group.items():
            if isinstance(value, bool):
                group[key] = int(value)
    second = adam([param], 1e-3)
    load_optimizer_state(second, state)
    before = param.detach().clone()
    second.step()
    assert second.param_groups[0]["maximize"] is False and not torch.equal(param, before)
