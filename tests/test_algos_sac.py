"""SAC expert learner: hand-checked targets and temperature, networks, replay, truncation, CLI smoke."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import SAC_TINY, run_cli

from gail_robot.algos.config import SACConfig, TrainConfig, config_from_dict
from gail_robot.algos.sac import SAC, ReplayBuffer, SACTrainer, soft_td_target, temperature_loss
from gail_robot.errors import UserError
from gail_robot.nets import NetConfig, TanhGaussianActor, TwinQ

ENV = "InvertedPendulum-v5"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread, as SAC trains: two threads on a busy 2-core machine are many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd)


# ------------------------------------------------------------------------------ hand-checked pieces


def test_target_bootstraps_through_truncation_not_termination():
    # Two transitions with the same reward and successor values; only the first truly terminated.
    rewards = torch.tensor([1.0, 1.0])
    terminated = torch.tensor([1.0, 0.0])  # the second one is a time-limit truncation: not terminal
    next_q = torch.tensor([[10.0, 10.0], [12.0, 8.0]])  # (n=2, B=2): the min is taken per sample
    next_log_prob = torch.tensor([-1.0, -2.0])
    target = soft_td_target(rewards, terminated, next_q, next_log_prob, alpha=0.5, gamma=0.9)
    # terminated: r only. truncated: 1 + 0.9 * (min(10, 8) - 0.5 * (-2)) = 1 + 0.9 * 9 = 9.1
    torch.testing.assert_close(target, torch.tensor([1.0, 9.1]))


@pytest.mark.parametrize(("log_prob", "direction"), [(2.0, 1.0), (-5.0, -1.0)])
def test_temperature_moves_entropy_toward_target(log_prob, direction):
    # target entropy -1 nats: entropy -log_prob = -2 is below it (alpha must grow),
    # entropy 5 is above it (alpha must shrink).
    log_alpha = torch.tensor(0.0, requires_grad=True)
    opt = torch.optim.SGD([log_alpha], lr=0.1)
    loss = temperature_loss(log_alpha, torch.full((8,), log_prob), target_entropy=-1.0)
    loss.backward()
    opt.step()
    # d loss / d log_alpha = -(log_prob + target): the SGD step is 0.1 * (log_prob - 1).
    value = log_alpha.detach().item()
    assert math.copysign(1.0, value) == direction
    assert value == pytest.approx(0.1 * (log_prob - 1.0))


def test_actor_log_prob_matches_tanh_transformed_normal():
    torch.manual_seed(0)
    actor = TanhGaussianActor(5, 3, NetConfig([16, 16], "relu"))
    with torch.no_grad():  # non-trivial means and log-stds
        actor.net[-1].weight.normal_(0.0, 0.5)
        actor.net[-1].bias.normal_(0.0, 0.5)
    obs = torch.randn(64, 5)
    actions, log_prob = actor.sample(obs, torch.Generator().manual_seed(1))
    mu, log_std = actor.mean_and_log_std(obs)
    assert torch.all(log_std >= -5.0) and torch.all(log_std <= 2.0)
    # Reference in float64 from the same pre-tanh sample u (the same RNG draws the same eps).
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(1)).double()
    u = mu.double() + log_std.double().exp() * eps
    torch.testing.assert_close(actions.double(), torch.tanh(u), atol=1e-6, rtol=0)
    normal = torch.distributions.Normal(mu.double(), log_std.double().exp())
    reference = (normal.log_prob(u) - torch.log1p(-(torch.tanh(u) ** 2))).sum(-1)
    finite = torch.isfinite(reference)  # log1p(-tanh^2) underflows in float64 only for |u| > ~19
    torch.testing.assert_close(log_prob.double()[finite], reference[finite], atol=1e-4, rtol=1e-5)
    # And torch's own TanhTransform agrees where the action is not saturated in float32.
    inside = actions.abs().amax(-1) < 0.999
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mu[inside], log_std[inside].exp()),
        [torch.distributions.TanhTransform(cache_size=1)],
    )
    torch.testing.assert_close(log_prob[inside], dist.log_prob(actions[inside]).sum(-1), atol=2e-3, rtol=1e-4)
    # The deterministic action is tanh(mu), inside (-1, 1), and what forward() returns.
    torch.testing.assert_close(actor(obs), torch.tanh(mu))


def test_twin_q_members_are_independent_mlps():
    torch.manual_seed(0)
    q = TwinQ(6, NetConfig([8, 4], "relu"))
    x = torch.randn(10, 6)
    out = q(x)
    assert out.shape == (2, 10)
    for i in range(2):
        h = x
        for layer, (w, b) in enumerate(zip(q.weights, q.biases, strict=True)):
            h = h @ w[i] + b[i]
            if layer < len(q.weights) - 1:
                h = torch.relu(h)
        torch.testing.assert_close(out[i], h.squeeze(-1))
    assert not torch.allclose(out[0], out[1])


def test_update_moves_target_networks_by_tau():
    torch.manual_seed(0)
    cfg = SACConfig(hidden_sizes=[16, 16], tau=0.1)
    sac = SAC(4, 2, cfg, torch.Generator().manual_seed(0))
    before = [p.detach().clone() for p in sac.q_target.parameters()]
    batch = 32
    stats = sac.update(
        torch.randn(batch, 4),
        torch.rand(batch, 2) * 2 - 1,
        torch.randn(batch),
        torch.randn(batch, 4),
        torch.zeros(batch),
    )
    assert {"critic_loss", "actor_loss", "entropy", "q_mean"} <= set(stats)
    for old, target, online in zip(before, sac.q_target.parameters(), sac.q.parameters(), strict=True):
        torch.testing.assert_close(target, 0.9 * old + 0.1 * online.detach())
    assert sac.gradient_steps == 1


def test_critic_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    sac = SAC(3, 1, SACConfig(hidden_sizes=[32, 32]), torch.Generator().manual_seed(0))
    obs, actions = torch.randn(64, 3), torch.rand(64, 1) * 2 - 1
    rewards, terminated = torch.ones(64), torch.ones(64)  # terminal: the target is exactly r = 1
    losses = [sac.update(obs, actions, rewards, obs, terminated)["critic_loss"] for _ in range(200)]
    assert losses[-1] < 0.05 * losses[0]


def test_replay_ring_sample_and_save_load(tmp_path):
    buf = ReplayBuffer(4, obs_dim=2, act_dim=1)
    for i in range(6):  # wraps: rows 4 and 5 overwrite rows 0 and 1
        buf.add(np.full(2, i), np.full(1, -i), float(i), np.full(2, i + 0.5), terminated=(i == 5))
    assert len(buf) == 4
    np.testing.assert_array_equal(buf.recent_obs(3)[:, 0], [3.0, 4.0, 5.0])
    parts = buf.split(buf.sample(100, np.random.default_rng(0)))
    assert parts["obs"].shape == (100, 2) and parts["rewards"].shape == (100,)
    assert set(parts["rewards"].tolist()) == {2.0, 3.0, 4.0, 5.0}
    torch.testing.assert_close(parts["next_obs"], parts["obs"] + 0.5)
    torch.testing.assert_close(parts["terminated"], (parts["rewards"] == 5.0).float())
    buf.save(tmp_path / "replay.npy")
    other = ReplayBuffer(8, obs_dim=2, act_dim=1)
    other.load(tmp_path / "replay.npy")
    np.testing.assert_array_equal(other.rows[:4], buf.rows)
    assert (other.size, other.pos) == (4, 2)
    with pytest.raises(UserError, match="expected"):
        ReplayBuffer(8, obs_dim=3, act_dim=1).load(tmp_path / "replay.npy")


# ------------------------------------------------------------------------------ the trainer


def tiny_config(steps: int, **sac: object) -> TrainConfig:
    return config_from_dict(
        {
            "algo": "sac",
            "env": {"id": ENV, "kwargs": {"max_episode_steps": 10}, "normalize_obs": True},
            "sac": {
                "hidden_sizes": [16, 16],
                "batch_size": 16,
                "learning_starts": 100,
                "log_interval": 50,
                **sac,
            },
            "run": {
                "total_steps": steps,
                "eval_episodes": 1,
                "eval_interval": 0,
                "checkpoint_interval": 10_000,
                "progress": False,
                "tensorboard": False,
            },
        }
    )


def test_replay_keeps_final_obs_and_terminated_only_on_true_termination(tmp_path):
    trainer = SACTrainer(tiny_config(300), tmp_path / "run")
    trainer.train()
    rows = trainer.replay.rows[: len(trainer.replay)]
    parts = trainer.replay.split(torch.from_numpy(rows))
    obs, next_obs = parts["obs"].numpy(), parts["next_obs"].numpy()
    terminated = parts["terminated"].numpy().astype(bool)
    # An episode boundary: the next row does not start from this row's successor.
    ends = np.flatnonzero(np.any(next_obs[:-1] != obs[1:], axis=1))
    assert len(ends) > 5
    start = 0
    truncations = 0
    for end in ends:
        length = end - start + 1
        fell = abs(float(next_obs[end, 1])) > 0.2  # InvertedPendulum terminates when |angle| > 0.2
        assert bool(terminated[end]) == fell
        if not fell:
            assert length == 10  # a truncation by the 10-step limit, stored as non-terminal
            truncations += 1
        assert not terminated[start:end].any()
        start = end + 1
    assert truncations > 0
    # Normalised with statistics of everything collected; they are what the checkpoint froze.
    assert trainer.normalizer.rms.count == pytest.approx(300, abs=1)


def test_cli_train_eval_export_resume(tmp_path):
    run = tmp_path / "run"
    common = [
        "--no-progress",
        *SAC_TINY,
        "--set",
        "sac.log_interval=100",
        "--set",
        "run.eval_episodes=1",
        "--set",
        "run.checkpoint_interval=200",
        "--set",
        "env.kwargs={max_episode_steps: 50}",
    ]
    done = cli("train", "--algo", "sac", "--env", ENV, "--steps", "300", "--out", str(run), *common)
    assert done.returncode == 0, done.stderr
    assert (run / "final.pt").is_file() and (run / "checkpoints" / "replay.npy").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["env_steps"] == 300 and "eval_return" in rows[-1]
    assert any("critic_loss" in r and "updates_per_s" in r for r in rows)

    from gail_robot.policy_io import load_policy

    bundle = load_policy(run)
    assert bundle.meta["algo"] == "sac" and isinstance(bundle.actor, TanhGaussianActor)
    obs = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    actions = bundle.act(obs)
    assert actions.shape == (5, 1) and np.all(np.abs(actions) <= 3.0)

    evaluated = cli("eval", str(run), "--episodes", "2", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["episodes"] == 2

    exported = tmp_path / "policy.pt"
    done = cli("export", str(run), "--out", str(exported), "--verify")
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(load_policy(exported).act(obs), actions, atol=1e-5)

    # Extend the finished run with --resume semantics (in-process: one interpreter start less);
    # its latest.pt and replay.npy are those of the final checkpoint.
    from gail_robot.algos.config import load_yaml

    data = load_yaml(run / "config.yaml")
    data["run"]["total_steps"] = 400
    trainer = SACTrainer(config_from_dict(data), run, resume=True)
    assert (trainer.run.env_steps, len(trainer.replay)) == (300, 300)
    trainer.train()
    assert load_policy(run).meta["env_steps"] == 400 and len(trainer.replay) == 400


def test_user_errors_are_one_line(tmp_path):
    bad = cli("train", "--algo", "sac", "--env", ENV, "--out", str(tmp_path / "r"), "--set", "sac.tau=0")
    assert bad.returncode != 0 and "sac.tau must be in (0, 1]" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_bad_device_is_a_user_error():
    with pytest.raises(UserError, match=r"sac\.device must be"):
        SACConfig(device="tpu")
    assert SACConfig(device="auto").torch_device() == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_run_saves_a_cpu_loadable_policy(tmp_path):
    from gail_robot.policy_io import load_policy

    final = SACTrainer(tiny_config(300, device="cuda"), tmp_path / "run").train()
    bundle = load_policy(final)
    assert next(bundle.actor.parameters()).device.type == "cpu"
    assert bundle.act(np.zeros(4, np.float32)).shape == (1,)


@pytest.mark.slow
def test_sac_solves_inverted_pendulum(tmp_path):
    cfg = config_from_dict(
        {
            "algo": "sac",
            "env": {"id": ENV},
            "sac": {"learning_starts": 1000},
            "run": {"total_steps": 12_000, "eval_interval": 0, "eval_episodes": 5, "progress": False},
        }
    )
    final = SACTrainer(cfg, tmp_path / "run").train()
    from gail_robot.evaluate import evaluate_policy
    from gail_robot.policy_io import load_policy

    result = evaluate_policy(load_policy(final), 5, seed=123)
    assert result.mean_return >= 950.0


def test_shipped_sac_configs_parse():
    from gail_robot.algos.config import load_yaml, shipped_config_path

    folder = Path(__import__("gail_robot").__file__).parent / "configs" / "sac"
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    assert names == ["Ant-v5", "HalfCheetah-v5", "Hopper-v5", "Humanoid-v5", "Walker2d-v5"]
    for name in names:
        path = shipped_config_path(f"sac/{name}")
        assert path == folder / f"{name}.yaml"
        cfg = config_from_dict(load_yaml(path))
        assert cfg.algo == "sac" and cfg.env.id == name
        assert cfg.sac.hidden_sizes == [256, 256] and cfg.sac.batch_size == 256
    # The plain name still means the shipped GAIL config.
    assert shipped_config_path("Hopper-v5") == folder.parent / "Hopper-v5.yaml"
