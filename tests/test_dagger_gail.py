"""GAIL and AIRL from intervention recordings (person-driven steps only) and dagger's GAIL fine-tune."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from cli_runner import one_line_error, run_cli

import gail_robot.envs  # noqa: F401
from gail_robot.algos.config import config_from_dict
from gail_robot.algos.demos import load_expert_transitions
from gail_robot.algos.trainer import OnPolicyTrainer
from gail_robot.data import DemoWriter
from gail_robot.envs.physics import get_physics_state
from gail_robot.errors import UserError

REACH = "gail_robot/ArmReach-v0"


def write_file(path: Path, env_id: str, episodes: list[list[int] | int], seed: int = 0) -> list[dict]:
    """A real demo file of ``env_id``: one episode per entry, driven by known actions.

    An entry is a list of intervention flags (an intervention recording; the policy's proposal is
    the negated action) or a step count (an ordinary demo). Returns per episode its ``obs``,
    ``actions`` and ``next_obs`` arrays as stepped.
    """
    env = gym.make(env_id)
    steps: list[dict] = []
    with DemoWriter(path, env) as writer:
        for e, spec in enumerate(episodes):
            flags = spec if isinstance(spec, list) else None
            n = len(flags) if flags is not None else int(spec)
            obs, _ = env.reset(seed=seed + e)
            source = "intervention:test" if flags is not None else "test"
            writer.start_episode(seed=seed + e, source=source, intervention=flags is not None)
            rows: dict[str, list] = {"obs": [], "actions": [], "next_obs": []}
            for t in range(n):
                action = np.array([0.1 * (t + 1), -0.05 * (e + 1), 0.02 * t, 1.0], np.float32)
                state = get_physics_state(env)
                next_obs, reward, terminated, truncated, _ = env.step(action)
                truncated = truncated or t == n - 1
                extra = () if flags is None else (-action, bool(flags[t]))
                writer.add_step(obs, action, float(reward), next_obs, terminated, truncated, state, *extra)
                rows["obs"].append(obs)
                rows["actions"].append(action)
                rows["next_obs"].append(next_obs)
                obs = next_obs
                assert not terminated  # these actions never reach the goal in a few steps
            writer.end_episode(success=False, final_state=get_physics_state(env))
            steps.append({k: np.asarray(v, np.float32) for k, v in rows.items()})
    env.close()
    return steps


def pick(episodes: list[dict], rows: list[tuple[int, int]], key: str) -> np.ndarray:
    return np.stack([episodes[e][key][t] for e, t in rows])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[dict]]]:
    """An intervention recording (episode 0: the person drove steps 1, 2 and 4; episode 1: nobody
    took over), an ordinary demo of 3 steps, and a recording where only the policy drove."""
    root = tmp_path_factory.mktemp("files")
    out = {}
    for name, spec, seed in (
        ("int", [[0, 1, 1, 0, 1], [0, 0, 0, 0]], 0),
        ("demo", [3], 10),
        ("idle", [[0, 0, 0]], 20),
    ):
        path = root / f"{name}.hdf5"
        out[name] = (path, write_file(path, REACH, spec, seed))
    return out


def trainer_for(tmp_path: Path, algo: str, demos: list[str], **gail: object) -> OnPolicyTrainer:
    config = config_from_dict(
        {
            "algo": algo,
            "env": {"id": REACH, "num_envs": 1, "vectorization": "sync"},
            "gail": {"demos": demos, **gail},
            "run": {"tensorboard": False, "progress": False},
        }
    )
    return OnPolicyTrainer(config, tmp_path / "run")


def test_gail_expert_buffer_holds_exactly_the_person_driven_steps(tmp_path: Path, files: dict) -> None:
    (int_path, int_eps), (demo_path, demo_eps) = files["int"], files["demo"]
    trainer = trainer_for(tmp_path, "gail", [str(int_path), str(demo_path)])
    assert trainer.gail is not None
    expert = trainer.gail.expert
    # by hand: episode 0 steps 1, 2, 4 (person); episode 1 none; every step of the ordinary demo
    obs = np.concatenate([pick(int_eps, [(0, 1), (0, 2), (0, 4)], "obs"), demo_eps[0]["obs"]])
    actions = np.concatenate([pick(int_eps, [(0, 1), (0, 2), (0, 4)], "actions"), demo_eps[0]["actions"]])
    next_obs = np.concatenate([pick(int_eps, [(0, 1), (0, 2), (0, 4)], "next_obs"), demo_eps[0]["next_obs"]])
    np.testing.assert_array_equal(expert.obs, obs)
    np.testing.assert_array_equal(expert.actions, actions)  # ArmReach's bounds are [-1, 1]: no rescaling
    np.testing.assert_array_equal(expert.next_obs, next_obs)
    # the discriminator's expert inputs: normalised s and the person's (executed) action, not the policy's
    x, w = trainer.gail._expert_inputs()
    np.testing.assert_array_equal(x, np.concatenate([trainer.normalizer(obs), actions], axis=1))
    assert x.shape == (6, 49 + 4) and np.all(w == 1)
    # (s, s'): the successor is whatever followed; step 2's is the observation the policy then acted on
    np.testing.assert_array_equal(int_eps[0]["next_obs"][2], int_eps[0]["obs"][3])
    ss = trainer_for(tmp_path, "gail", [str(int_path), str(demo_path)], disc_input="ss").gail
    assert ss is not None
    x, _ = ss._expert_inputs()
    np.testing.assert_array_equal(x, np.concatenate([ss.normalizer(obs), ss.normalizer(next_obs)], axis=1))
    # subsampling picks every 2nd step of each demo first (0, 2, 4), then the person's of those: 2, 4
    sub = trainer_for(tmp_path, "gail", [str(int_path), str(demo_path)], demo_subsample=2).gail
    assert sub is not None
    rows = np.concatenate([pick(int_eps, [(0, 2), (0, 4)], "obs"), pick(demo_eps, [(0, 0), (0, 2)], "obs")])
    np.testing.assert_array_equal(sub.expert.obs, rows)
    # AIRL reads its expert samples the same way
    airl = trainer_for(tmp_path, "airl", [str(int_path), str(demo_path)]).airl
    assert airl is not None
    np.testing.assert_array_equal(airl.expert.obs, obs)
    np.testing.assert_array_equal(airl.expert.next_obs, next_obs)


def test_a_file_without_interventions_gives_every_step_and_no_person_is_an_error(files: dict) -> None:
    demo_path, demo_eps = files["demo"]
    expert, demos = load_expert_transitions(str(demo_path), REACH)
    assert demos == 1
    np.testing.assert_array_equal(expert.obs, demo_eps[0]["obs"])
    with pytest.raises(UserError, match="no expert samples: every step is policy-driven"):
        load_expert_transitions(str(files["idle"][0]), REACH)


def test_train_gail_over_several_files_checks_the_env(files: dict, tmp_path: Path) -> None:
    push = tmp_path / "push.hdf5"
    write_file(push, "gail_robot/ArmPush-v0", [2])
    demo = str(files["demo"][0])
    run = str(tmp_path / "r")
    line = one_line_error(run_cli("train", "ArmReach-v0", "--demos", demo, str(push), "--out", run))
    assert "does not go with" in line and "ArmPush-v0" in line
    line = one_line_error(run_cli("train", "ArmReach-v0", "--demos", demo, demo, "--out", run))
    assert "given twice" in line
    ppo = ("train", "--algo", "ppo", "--env", REACH)
    line = one_line_error(run_cli(*ppo, "--demos", demo, demo, "--out", run))
    assert "does not learn from demos" in line


def _actor(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["actor"]


def test_dagger_gail_fine_tune_run_dir_summary_and_resume(tmp_path: Path) -> None:
    demos = tmp_path / "demos.hdf5"
    assert run_cli("record", "--env", REACH, "--device", "scripted", "--noise", "0.1", "--episodes", "3",
                   "--out", str(demos)).returncode == 0  # fmt: skip
    out = tmp_path / "dagger"
    argv = (
        "dagger", "ArmReach-v0", "--demos", str(demos), "--rounds", "1", "--episodes-per-round", "2",
        "--out", str(out), "--no-progress", "--set", "bc.max_epochs=5", "--set", "run.eval_episodes=2",
        "--set", "run.eval_interval=0", "--set", "run.tensorboard=false", "--set", "env.vectorization=sync",
        "--set", "env.num_envs=4", "--set", "rollout.n_steps=512", "--set", "run.checkpoint_interval=2048",
        "--set", "ppo.epochs=2",
        "--gail-steps", "4096",
    )  # fmt: skip
    result = run_cli(*argv)
    assert result.returncode == 0, result.stderr
    gail = out / "gail"
    assert (gail / "final.pt").is_file() and (gail / "checkpoints" / "step_0000002048.pt").is_file()
    config = (gail / "config.yaml").read_text()
    assert "algo: gail" in config and str(out / "round_1") in config
    assert str(demos.resolve()) in config and "round_1/interventions.hdf5" in config
    rows = json.loads((out / "summary.json").read_text())
    assert [(r["stage"], r["round"]) for r in rows] == [("bc", 0), ("bc", 1), ("gail", None)]
    row = rows[2]
    assert row["env_steps"] == 4096 and row["init_from"] == str(out / "round_1")
    assert row["generator"] == "ppo" and row["eval_success_rate"] is not None
    assert row["expert_labelled_steps"] == rows[1]["expert_labelled_steps"]
    assert "gail: 4096 env steps, eval success" in result.stderr
    # warm start: BC's observation statistics are kept, fixed, for the whole fine-tune
    bc_norm = torch.load(out / "round_1" / "final.pt", weights_only=True)["obs_norm"]
    gail_norm = torch.load(gail / "final.pt", weights_only=True)["obs_norm"]
    for key in ("mean", "var"):
        np.testing.assert_array_equal(np.asarray(bc_norm[key]), np.asarray(gail_norm[key]))

    # interrupted after its first checkpoint: the rerun resumes it and ends with the same weights
    finished = _actor(gail / "final.pt")
    (gail / "final.pt").unlink()
    shutil.copyfile(gail / "checkpoints" / "step_0000002048.pt", gail / "checkpoints" / "latest.pt")
    kept = (out / "round_1" / "final.pt").stat().st_mtime_ns
    result = run_cli(*argv)
    assert result.returncode == 0, result.stderr
    assert "round 1: done before" in result.stderr
    assert (out / "round_1" / "final.pt").stat().st_mtime_ns == kept
    resumed = _actor(gail / "final.pt")
    for key, value in finished.items():
        assert torch.equal(value, resumed[key]), key
    steps = [json.loads(x)["env_steps"] for x in (gail / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(2048) == 1
    assert json.loads((out / "summary.json").read_text())[2]["env_steps"] == 4096

    result = run_cli(*argv)
    assert result.returncode == 0 and "gail: done before" in result.stderr
    # the fine-tune's settings are fixed once it exists
    line = one_line_error(run_cli(*argv[:-1], "8192"))
    assert "gail_steps differ" in line
    line = one_line_error(run_cli(*argv, "--gen", "trpo"))
    assert "gen differ" in line


def test_dagger_gail_bad_input_is_one_line(tmp_path: Path) -> None:
    base = ("dagger", "ArmReach-v0", "--demos", str(tmp_path / "none.hdf5"), "--rounds", "1",
            "--episodes-per-round", "1", "--out", str(tmp_path / "d"))  # fmt: skip
    assert "--gail-steps must be >= 0" in one_line_error(run_cli(*base, "--gail-steps", "-5"))
    assert "give --gail-steps N" in one_line_error(run_cli(*base, "--gen", "trpo"))
