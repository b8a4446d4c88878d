"""Smoke runs of `gail-robot train|eval|plot` (tiny budgets), exact resume, user errors; slow GAIL test."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from cli_runner import SAC_TINY, run_cli

from gail_robot.data import DemoWriter
from gail_robot.envs.physics import get_physics_state

ENV = "InvertedPendulum-v5"
# Small, fast settings shared by the smoke runs (sync envs: no subprocess start-up).
TINY = [
    "--sync",
    "--num-envs",
    "2",
    "--no-progress",
    "--set",
    "rollout.n_steps=32",
    "--set",
    "ppo.minibatches=2",
    "--set",
    "ppo.epochs=2",
    "--set",
    "run.eval_episodes=1",
    "--set",
    "env.kwargs={max_episode_steps: 50}",
]


def pendulum_expert(obs: np.ndarray) -> np.ndarray:
    """A linear state-feedback controller that balances InvertedPendulum-v5 for 1000 steps."""
    return np.clip(np.array([obs[0] + 10.0 * obs[1] + obs[2] + obs[3]], np.float32), -3.0, 3.0)


def record_demos(path: Path, episodes: int, max_steps: int, noise: float = 0.0, seed: int = 0) -> float:
    """Record expert episodes through gail_robot.data; returns the mean return."""
    env = gym.make(ENV, max_episode_steps=max_steps)
    rng = np.random.default_rng(seed)
    returns = []
    with DemoWriter(path, env, mode="w", durable=False) as writer:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            writer.start_episode(seed=seed + ep, source="scripted")
            total = 0.0
            while True:
                state = get_physics_state(env)
                action = pendulum_expert(obs) + rng.normal(0.0, noise, size=1).astype(np.float32)
                next_obs, reward, terminated, truncated, _ = env.step(action)
                writer.add_step(obs, action, float(reward), next_obs, terminated, truncated, state)
                total += float(reward)
                obs = next_obs
                if terminated or truncated:
                    break
            writer.end_episode(success=not terminated, final_state=get_physics_state(env))
            returns.append(total)
    env.close()
    return float(np.mean(returns))


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = run_cli(*args)
    if check and proc.returncode != 0:
        raise AssertionError(f"gail-robot {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demos") / "pendulum.hdf5"
    record_demos(path, episodes=4, max_steps=50)
    return path


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_init_from_bc_trains_its_own_warm_start(tmp_path, demos):
    """``--init-from bc``: BC (same seed) in RUN/init_bc, then GAIL from it; bad pairings: one line."""
    from gail_robot.policy_io import load_checkpoint

    run = tmp_path / "bc+gail"
    # the actor is never updated (every round warms up the critic only): GAIL's final actor is BC's
    args = ["--env", ENV, "--demos", str(demos), "--steps", "64", *TINY, "--set", "bc.max_epochs=3"]
    cli(
        "train",
        "--algo",
        "gail",
        *args,
        "--init-from",
        "bc",
        "--set",
        "run.critic_warmup_rounds=100",
        "--out",
        str(run),
    )
    bc, gail = load_checkpoint(run / "init_bc" / "final.pt"), load_checkpoint(run / "final.pt")
    assert bc["meta"]["algo"] == "bc" and gail["meta"]["algo"] == "gail"
    assert bc["config"]["run"]["seed"] == gail["config"]["run"]["seed"]
    assert gail["config"]["init_from"] == "bc"  # the run's config says what was asked for
    for name, weight in bc["actor"].items():
        assert torch.equal(weight, gail["actor"][name]), name
    assert "eval_return" in metrics(run / "init_bc")[-1]

    for algo, message in (("sac", "not --algo sac"), ("bc", "not --algo bc")):
        proc = cli(
            "train", "--algo", algo, *args, "--init-from", "bc", "--out", str(tmp_path / algo), check=False
        )
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert message in proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("gen", ["ppo", "trpo"])
def test_a_warm_started_generator_stays_blind_to_bc_ignore_obs(tmp_path, demos, gen):
    """BC's input selection survives GAIL's updates (both generators) and a resume: those weights stay 0."""
    from gail_robot.policy_io import load_checkpoint

    run = tmp_path / gen
    args = ["--env", ENV, "--demos", str(demos), "--gen", gen, "--steps", "128", *TINY]
    args += ["--set", "bc.max_epochs=3", "--set", "bc.ignore_obs=[1, 3]", "--init-from", "bc"]
    cli("train", "--algo", "gail", *args, "--set", "run.checkpoint_interval=64", "--out", str(run))
    # killed right after its first checkpoint, then resumed: the mask is set up again
    cut = tmp_path / f"{gen}-cut"
    shutil.copytree(run, cut)
    (cut / "final.pt").unlink()
    shutil.copy(cut / "checkpoints" / "step_0000000064.pt", cut / "checkpoints" / "latest.pt")
    cli("train", "--resume", str(cut), "--no-progress")
    bc = load_checkpoint(run / "init_bc" / "final.pt")
    name = next(k for k in bc["actor"] if k.endswith("weight"))  # the first linear layer
    before = bc["actor"][name]
    assert before.shape[1] == 4 and not before[:, [1, 3]].any()
    for final in (run / "final.pt", cut / "final.pt"):
        after = load_checkpoint(final)["actor"][name]
        assert not after[:, [1, 3]].any()  # exactly zero
    assert not torch.equal(before[:, [0, 2]], after[:, [0, 2]])  # while the other inputs learned


def test_train_ppo_then_eval_and_plot(tmp_path):
    run = tmp_path / "ppo"
    cli("train", "--algo", "ppo", "--env", ENV, "--steps", "128", "--out", str(run), *TINY)
    assert {"config.yaml", "metrics.jsonl", "final.pt", "checkpoints", "tb"} <= {
        p.name for p in run.iterdir()
    }
    rows = metrics(run)
    assert rows[0]["env_steps"] == 64 and rows[1]["env_steps"] == 128
    for key in ("steps_per_s", "approx_kl", "entropy", "value_loss", "wall_time", "episode_return"):
        assert key in rows[0], key
    assert "eval_return" in rows[-1]
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())
    out = cli("eval", str(run), "--episodes", "2", "--json").stdout
    result = json.loads(out)
    assert set(result) >= {
        "mean_return",
        "std_return",
        "success_rate",
        "mean_length",
        "mean_forward_velocity",
    }
    assert result["mean_length"] <= 50  # the run's env kwargs travel with the checkpoint
    assert result["success_rate"] is None  # InvertedPendulum reports no is_success
    text = cli("eval", str(run / "final.pt"), "--episodes", "1", "--video", str(tmp_path / "ep.mp4")).stdout
    assert "return" in text
    assert (tmp_path / "ep.mp4").stat().st_size > 1000  # rendered headless
    cli("plot", str(run), str(run), "--out", str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_train_trpo_and_bc_warm_start_gail_trpo(tmp_path, demos):
    cli("train", "--algo", "trpo", "--env", ENV, "--steps", "64", "--out", str(tmp_path / "trpo"), *TINY)
    assert metrics(tmp_path / "trpo")[0]["step_accepted"] in (0.0, 1.0)
    bc = tmp_path / "bc"
    cli(
        "train",
        "--algo",
        "bc",
        "--env",
        ENV,
        "--demos",
        str(demos),
        "--out",
        str(bc),
        *TINY,
        "--set",
        "bc.max_epochs=5",
    )
    rows = metrics(bc)
    assert "valid_nll" in rows[0] and "eval_return" in rows[-1]
    gail = tmp_path / "gail"
    cli(
        "train",
        "--algo",
        "gail",
        "--gen",
        "trpo",
        "--env",
        ENV,
        "--demos",
        str(demos),
        "--steps",
        "64",
        "--init-from",
        str(bc),
        "--out",
        str(gail),
        *TINY,
    )
    row = metrics(gail)[0]
    assert 0.0 <= row["disc_acc_expert"] <= 1.0 and 0.0 <= row["disc_acc_policy"] <= 1.0
    # the warm start copied the BC actor: before any update both act alike on the demos' states
    from gail_robot.policy_io import load_checkpoint

    bc_ckpt, gail_ckpt = load_checkpoint(bc), load_checkpoint(gail)
    assert gail_ckpt["meta"]["algo"] == "gail" and gail_ckpt["meta"]["generator"] == "trpo"
    assert bc_ckpt["actor_spec"] == gail_ckpt["actor_spec"]

    # policy.warm_start_min_log_std floors the copied std (BC on deterministic demos learns a tiny one)
    from gail_robot.algos.trainer import load_init_actor
    from gail_robot.envs.wrappers import ObsNormalizer
    from gail_robot.nets import GaussianActor

    bc_log_std = bc_ckpt["actor"]["log_std"]
    floor = float(bc_log_std.max()) + 0.5  # above BC's std: the floor must show
    for min_log_std, expected in ((None, bc_log_std), (floor, bc_log_std.clamp(min=floor))):
        actor = GaussianActor.from_spec(bc_ckpt["actor_spec"])
        load_init_actor(str(bc), actor, ObsNormalizer(actor.obs_dim), ENV, min_log_std)
        torch.testing.assert_close(actor.log_std.detach(), expected)
        weights = "mean_net.0.weight"
        torch.testing.assert_close(actor.state_dict()[weights], bc_ckpt["actor"][weights])

    # a run of a task starts a run on a variant of it (same spaces, envs/variants.py), nothing else
    from gail_robot.errors import UserError
    from gail_robot.policy_io import save_checkpoint

    hopper = save_checkpoint(tmp_path / "as_hopper.pt", {**bc_ckpt, "env_id": "Hopper-v5"})
    actor = GaussianActor.from_spec(bc_ckpt["actor_spec"])
    load_init_actor(str(hopper), actor, ObsNormalizer(actor.obs_dim), "gail_robot/HopperHeavy-v0")
    torch.testing.assert_close(actor.state_dict()[weights], bc_ckpt["actor"][weights])
    with pytest.raises(UserError, match="was trained on 'Hopper-v5', not 'Walker2d-v5'"):
        load_init_actor(str(hopper), actor, ObsNormalizer(actor.obs_dim), "Walker2d-v5")


def _flat_state(ckpt: dict) -> torch.Tensor:
    parts = [v.reshape(-1).float() for v in ckpt["actor"].values()]
    parts += [v.reshape(-1).float() for v in ckpt["critic"].values()]
    if ckpt.get("gail"):
        parts += [v.reshape(-1).float() for v in ckpt["gail"]["disc"].values()]
    return torch.cat(parts)


@pytest.mark.parametrize(("algo", "gen"), [("gail", "ppo"), ("gail", "trpo"), ("ppo", "ppo")])
def test_resume_reproduces_the_next_update(tmp_path, demos, algo, gen):
    """Covers the discriminator and its replay (gail) and the reward scaler (ppo on env reward)."""
    from gail_robot.policy_io import load_checkpoint

    full = tmp_path / "full"
    args = [
        "--algo",
        algo,
        "--gen",
        gen,
        "--env",
        ENV,
        "--demos",
        str(demos),
        "--steps",
        "192",
        *TINY,
        "--set",
        "run.checkpoint_interval=128",
        "--set",
        "run.eval_interval=0",
        "--set",
        "run.eval_episodes=0",
        "--set",
        "gail.replay_rounds=2",
    ]
    cli("train", *args, "--out", str(full))
    # Simulate a run killed right after its checkpoint at 128 steps.
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    (cut / "final.pt").unlink()
    shutil.copy(cut / "checkpoints" / "step_0000000128.pt", cut / "checkpoints" / "latest.pt")
    before = load_checkpoint(cut)
    assert before["progress"]["env_steps"] == 128
    cli("train", "--resume", str(cut), "--no-progress")
    a, b = load_checkpoint(full / "final.pt"), load_checkpoint(cut / "final.pt")
    assert b["meta"]["env_steps"] == 192
    assert not torch.equal(_flat_state(before), _flat_state(b))  # an update happened after resuming
    assert torch.equal(_flat_state(a), _flat_state(b))  # ... and it is exactly the original one
    assert [r["env_steps"] for r in metrics(cut)] == [r["env_steps"] for r in metrics(full)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--algo", "ppo", "--env", ENV, "--set", "ppo.lrr=1"], "unknown config key 'ppo.lrr'"),
        (["--algo", "ppo", "--env", "NoSuchEnv-v9"], "unknown environment 'NoSuchEnv-v9'"),
        (["--algo", "gail", "--env", ENV], "--algo gail needs demos"),
        (["--algo", "gail", "--env", ENV, "--demos", "/nonexistent/demos.hdf5"], "/nonexistent/demos.hdf5"),
        (["--algo", "ppo", "--env", ENV, "--set", "ppo"], "--set expects key=value"),
        (["missing_config.yaml", "--algo", "ppo"], "config file not found: missing_config.yaml"),
        (["--env", ENV], "choose an algorithm"),
    ],
)
def test_train_user_errors_are_one_line(tmp_path, args, message):
    proc = cli("train", *args, "--out", str(tmp_path / "run"), "--steps", "64", check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_eval_with_zeroed_observation_dims_is_the_policy_blind_to_them(tmp_path):
    """``eval --zero-obs``: with every dim zeroed the policy sends one constant action in every episode."""
    from gail_robot.envs.make import make_env
    from gail_robot.policy_io import load_policy

    run = tmp_path / "ppo"
    cli("train", "--algo", "ppo", "--env", ENV, "--steps", "64", "--out", str(run), *TINY)
    result = json.loads(
        cli("eval", str(run), "--episodes", "3", "--seed", "5", "--zero-obs", "0:4", "--json").stdout
    )
    policy = load_policy(run / "final.pt")
    action = policy.act(np.zeros(4, np.float32))
    env = make_env(ENV, policy.env_kwargs, normalize_actions=False)
    returns, lengths = [], []
    for episode in range(3):
        env.reset(seed=5 + episode)
        total, length, done = 0.0, 0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(action)
            total, length, done = total + float(reward), length + 1, terminated or truncated
        returns.append(total)
        lengths.append(length)
    assert result["returns"] == returns and result["lengths"] == lengths
    text = cli("eval", str(run), "--episodes", "1", "--zero-obs", "1,3").stdout
    assert "zeroed obs dims 2 of 4" in text
    bad = cli("eval", str(run), "--episodes", "1", "--zero-obs", "2:9", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--zero-obs: '2:9'" in bad.stderr


def test_eval_and_plot_user_errors(tmp_path):
    proc = cli("eval", str(tmp_path / "nope"), "--episodes", "1", check=False)
    assert proc.returncode == 2 and "no such file or directory" in proc.stderr
    proc = cli("plot", str(tmp_path), "--out", str(tmp_path / "x.png"), check=False)
    assert proc.returncode == 2 and "no metrics.jsonl" in proc.stderr
    proc = cli("train", "--resume", str(tmp_path), check=False)
    assert proc.returncode == 2 and "cannot resume" in proc.stderr


def test_shipped_configs_parse():
    from gail_robot.algos.config import config_from_dict, load_yaml

    folder = Path(__import__("gail_robot").__file__).parent / "configs"
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    for required in (
        "Hopper-v5",
        "Walker2d-v5",
        "HalfCheetah-v5",
        "Ant-v5",
        "Humanoid-v5",
        "InvertedPendulum-v5",
    ):
        assert required in names
    for path in folder.rglob("*.yaml"):  # nested ones too: airl/, sac/, ppo/, bc+gail/
        cfg = config_from_dict(load_yaml(path))
        assert cfg.env.id.split("/")[-1] == path.stem, path


@pytest.mark.slow
def test_gail_recovers_expert_return_on_inverted_pendulum(tmp_path):
    """GAIL-PPO from 5 noisy expert demos reaches >= 90 % of the expert's return."""
    demos = tmp_path / "expert.hdf5"
    expert_return = record_demos(demos, episodes=5, max_steps=1000, noise=0.1)
    assert expert_return > 950
    run = tmp_path / "gail"
    cli(
        "train",
        "InvertedPendulum-v5",
        "--algo",
        "gail",
        "--demos",
        str(demos),
        "--steps",
        "150000",
        "--out",
        str(run),
        "--no-progress",
    )
    result = json.loads(cli("eval", str(run), "--episodes", "10", "--json", "--seed", "123").stdout)
    assert result["mean_return"] >= 0.9 * expert_return


@pytest.mark.parametrize("algo", ["ppo", "trpo", "bc", "sac"])
def test_policy_ignore_obs_keeps_those_inputs_out_of_any_actor(tmp_path, demos, algo):
    """policy.ignore_obs from a random start (or BC's): the actor's weights from those dims are exactly 0 at
    the end of training while the others learned, so its action does not move when those inputs do."""
    from gail_robot.policy_io import load_checkpoint, load_policy

    run = tmp_path / algo
    args = [
        "--env",
        ENV,
        "--steps",
        "400" if algo == "sac" else "128",
        *TINY,
        "--set",
        "policy.ignore_obs=[1, 3]",
    ]
    if algo == "bc":
        args += ["--demos", str(demos), "--set", "bc.max_epochs=3"]
    if algo == "sac":
        args += SAC_TINY
    done = cli("train", "--algo", algo, *args, "--out", str(run))
    assert done.returncode == 0, done.stderr
    actor = load_checkpoint(run / "final.pt")["actor"]
    name = next(k for k in actor if k.endswith("weight"))  # the first linear layer
    assert actor[name].shape[1] == 4 and not actor[name][:, [1, 3]].any()  # exactly zero
    assert actor[name][:, [0, 2]].abs().sum() > 0
    policy = load_policy(run)
    obs = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    moved = obs.copy()
    moved[:, [1, 3]] += 5.0
    np.testing.assert_array_equal(policy.act(obs), policy.act(moved))


def test_policy_ignore_obs_out_of_range_is_one_line(tmp_path):
    done = cli(
        "train",
        "--algo",
        "ppo",
        "--env",
        ENV,
        *TINY,
        "--set",
        "policy.ignore_obs=['2:9']",
        "--out",
        str(tmp_path / "r"),
        check=False,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert (
        "policy.ignore_obs: '2:9' is not an index or a range a:b within the 4 observation dims" in done.stderr
    )
