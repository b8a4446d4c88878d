"""The C++ controller: it builds, runs a short loop, and matches the Python env rollout step by step.

The build (the policy library against libtorch, then the controller on it with MuJoCo; ~1-2 min on two
shared cores) runs once per test session (fixture ``controller_build`` in conftest.py). It is deliberately
not
skipped when cmake or a compiler is missing: CI must build the controller so that deployment cannot rot
(cmake comes with the [dev] extra).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from policy_factory import make_arm_seeking_checkpoint, make_checkpoint

from gail_robot import controller, export
from gail_robot.envs.physics import get_physics_state
from gail_robot.errors import UserError
from gail_robot.policy_io import PolicyBundle, load_policy


def make_bundle(
    tmp: Path, env_id: str, env_kwargs: dict[str, Any] | None = None, seed: int = 0
) -> PolicyBundle:
    """A 2x256 random actor for ``env_id`` saved as a training checkpoint and loaded back."""
    path = make_checkpoint(tmp / f"{env_id}.pt", env_id, env_kwargs, seed)
    return load_policy(path)


def python_rollout(bundle: PolicyBundle, steps: int, seed: int) -> dict[str, Any]:
    """The Python env rollout of ``bundle`` and the physics state it started from.

    The policy gets the observation rounded to float32, as the deployed controller does (the exported
    module's input is float32, docs/DESIGN.md §5).
    """
    env = gym.make(bundle.env_id, **bundle.env_kwargs)
    obs, _ = env.reset(seed=seed)
    state = get_physics_state(env)
    actions, observations, rewards = [], [], []
    terminated = False
    for _ in range(steps):
        obs32 = np.asarray(obs, dtype=np.float32)
        action = bundle.act(obs32)
        observations.append(obs32)
        actions.append(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(float(reward))
        if terminated or truncated:
            break
    env.close()
    return {
        "state": state,
        "actions": np.asarray(actions),
        "obs": np.asarray(observations),
        "return": float(np.sum(rewards)),
        "fell": bool(terminated),
    }


def test_build_is_incremental_and_path_is_printed(controller_build: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gail_robot.cli", "controller", "build", "--build-dir", str(controller_build)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(controller_build.resolve() / "gail-robot-controller")
    log = (controller_build / "build.log").read_text()
    assert "libmujoco.so." in log  # the versioned library of the mujoco wheel was found


@pytest.mark.parametrize(
    ("env_id", "env_kwargs", "steps"),
    [
        # Hopper without termination: the full 100 steps, through falls and contacts.
        ("Hopper-v5", {"terminate_when_unhealthy": False}, 100),
        ("Walker2d-v5", {}, 100),
        ("HalfCheetah-v5", {}, 100),
        ("Ant-v5", {}, 100),
        ("Humanoid-v5", {}, 100),
    ],
)
def test_controller_matches_python_rollout(
    controller_build: Path, tmp_path: Path, env_id: str, env_kwargs: dict[str, Any], steps: int
) -> None:
    bundle = make_bundle(tmp_path, env_id, env_kwargs)
    policy = tmp_path / "policy.pt"
    export.export_policy(bundle, policy)
    ref = python_rollout(bundle, steps, seed=3)
    state_file, actions_file, obs_file = (
        tmp_path / "state.txt",
        tmp_path / "actions.txt",
        tmp_path / "obs.txt",
    )
    np.savetxt(state_file, ref["state"][None], fmt="%.17g")
    logs = ["--state-file", str(state_file), "--actions-out", str(actions_file), "--obs-out", str(obs_file)]
    # The native kernels (the default) sum in another float32 order than torch: the first action agrees
    # to round-off, and contact dynamics amplify that over a closed loop as any change of BLAS would.
    native = controller.run_controller(policy, steps=steps, build_dir=controller_build, extra=logs)
    assert native["backend"] == "native-mlp" and native["refused"] == 0
    np.testing.assert_allclose(np.loadtxt(actions_file, ndmin=2)[0], ref["actions"][0], rtol=0, atol=1e-6)
    # The libtorch backend runs torch's own batch-1 kernels, as PolicyBundle.act does: the same loop.
    report = controller.run_controller(
        policy, steps=steps, build_dir=controller_build, extra=[*logs, "--backend", "libtorch"]
    )
    assert report["backend"] == "libtorch-jit"
    cpp_actions = np.loadtxt(actions_file, ndmin=2)
    cpp_obs = np.loadtxt(obs_file, ndmin=2)
    # Same episode length and end: the C++ health check terminates exactly where the env does.
    assert report["steps"] == len(ref["actions"]) and report["fell"] == ref["fell"]
    if env_id == "Hopper-v5":
        assert report["steps"] == 100
    np.testing.assert_allclose(cpp_obs, ref["obs"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(cpp_actions, ref["actions"], rtol=0, atol=1e-4)
    # The v5 reward with the env's kwargs (Python sums float32 control costs: tiny round-off).
    assert report["return"] == pytest.approx(ref["return"], rel=1e-6, abs=1e-5)
    assert report["infer_us_p50"] > 0 and report["infer_us_p99"] >= report["infer_us_p50"]
    assert report["loop_hz"] > 0


def test_init_qpos_qvel_start_like_the_state_file(controller_build: Path, tmp_path: Path) -> None:
    """After an env reset qpos/qvel are the whole state, so both ways of starting give the same loop."""
    bundle = make_bundle(tmp_path, "Hopper-v5", {"terminate_when_unhealthy": False})
    policy = tmp_path / "policy.pt"
    export.export_policy(bundle, policy)
    env = gym.make("Hopper-v5")
    env.reset(seed=5)
    np.savetxt(tmp_path / "state.txt", get_physics_state(env)[None], fmt="%.17g")
    np.savetxt(tmp_path / "qpos.txt", env.unwrapped.data.qpos[None], fmt="%.17g")
    np.savetxt(tmp_path / "qvel.txt", env.unwrapped.data.qvel[None], fmt="%.17g")
    env.close()
    runs = {}
    for name, start in {
        "state": ["--state-file", str(tmp_path / "state.txt")],
        "qpos_qvel": ["--init-qpos", str(tmp_path / "qpos.txt"), "--init-qvel", str(tmp_path / "qvel.txt")],
    }.items():
        actions = tmp_path / f"actions_{name}.txt"
        report = controller.run_controller(
            policy, steps=50, build_dir=controller_build, extra=[*start, "--actions-out", str(actions)]
        )
        runs[name] = (report, np.loadtxt(actions, ndmin=2))
    assert runs["state"][0]["return"] == pytest.approx(runs["qpos_qvel"][0]["return"], abs=1e-9)
    np.testing.assert_array_equal(runs["state"][1], runs["qpos_qvel"][1])


def test_cli_run_prints_one_json_object(controller_build: Path, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, "Hopper-v5")
    policy = tmp_path / "policy.pt"
    export.export_policy(bundle, policy)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gail_robot.cli",
            "controller",
            "run",
            str(policy),
            "--steps",
            "200",
            "--build-dir",
            str(controller_build),
            "--reset-noise",
            "0.005",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert set(report) >= {"infer_us_p50", "infer_us_p99", "loop_hz", "steps", "return", "fell"}
    assert 1 <= report["steps"] <= 200 and report["env_id"] == "Hopper-v5"
    assert report["fell"] == (report["steps"] < 200)


def test_controller_refuses_bad_input(controller_build: Path, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, "Hopper-v5")
    policy = tmp_path / "policy.pt"
    export.export_policy(bundle, policy)
    assets = Path(gym.__file__).parent / "envs" / "mujoco" / "assets"
    with pytest.raises(UserError, match="model has 6 actuators, the policy outputs 3"):
        controller.run_controller(
            policy, model=assets / "walker2d_v5.xml", steps=5, build_dir=controller_build
        )
    bad_state = tmp_path / "state.txt"
    bad_state.write_text("1 2 3\n")
    with pytest.raises(UserError, match="mjSTATE_INTEGRATION state of this model has"):
        controller.run_controller(
            policy, steps=5, build_dir=controller_build, extra=["--state-file", str(bad_state)]
        )
    not_a_policy = tmp_path / "junk.pt"
    not_a_policy.write_bytes(b"junk")
    binary = controller.binary_path(controller_build)
    proc = subprocess.run(
        [str(binary), "--policy", str(not_a_policy), "--model", str(assets / "hopper.xml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"gail-robot-controller: error: {not_a_policy} is not an exported gail-robot policy "
        "(not a TorchScript or pt2 archive)"
    ]
    with pytest.raises(UserError, match="not built"):
        controller.binary_path(tmp_path / "nowhere")


def test_controller_refuses_onnx_in_one_line(tmp_path: Path) -> None:
    """An ONNX export carries the observation layout too, but the C++ library runs TorchScript and pt2."""
    onnx_file = tmp_path / "policy.onnx"
    onnx_file.write_bytes(b"")
    with pytest.raises(UserError, match=r"is a onnx export: the C\+\+ controller runs TorchScript and pt2"):
        controller.controller_command(onnx_file)


# --------------------------------------------------------------------------------------------------
# Arm tasks (csrc/controller/arm.cpp)
# --------------------------------------------------------------------------------------------------

ARM_TASKS = ["gail_robot/ArmReach-v0", "gail_robot/ArmPush-v0", "gail_robot/ArmPickPlace-v0"]


def export_arm_policy(
    tmp: Path, env_id: str, env_kwargs: dict[str, Any] | None = None, **seeking: Any
) -> tuple[PolicyBundle, Path]:
    """A hand-set seeking policy (policy_factory.make_arm_seeking_checkpoint) exported to TorchScript."""
    import gail_robot.envs  # noqa: F401  (registers the arm tasks)

    name = env_id.split("/")[-1]
    bundle = load_policy(make_arm_seeking_checkpoint(tmp / f"{name}.ckpt.pt", env_id, env_kwargs, **seeking))
    policy = tmp / f"{name}.pt"
    export.export_policy(bundle, policy)
    return bundle, policy


@pytest.mark.parametrize("env_id", ARM_TASKS)
def test_arm_controller_matches_the_python_env_bit_for_bit(
    controller_build: Path, tmp_path: Path, env_id: str
) -> None:
    """From the same physics state, 100 steps of actions, observations and full states are identical.

    The policy drives the closed fingers into the cube (pushing, tilting and lifting it: a contact-rich
    loop). arm.cpp mirrors ArmEnv.step and DifferentialIK operation by operation and both solve with
    libmujoco's mju_* routines, so nothing is left to a tolerance but the summed reward.
    """
    kwargs = {"terminate_on_success": False}
    bundle, policy = export_arm_policy(tmp_path, env_id, kwargs, toward="cube_rel_ee", grip=1.0)
    env = gym.make(env_id, **kwargs)
    base = env.unwrapped
    obs, _ = env.reset(seed=3)
    start = get_physics_state(env)
    actions, observations, states, rewards = [], [], [], []
    for _ in range(100):  # base.step: past the env's time limit (50 steps for ArmReach)
        obs32 = np.asarray(obs, dtype=np.float32)
        action = bundle.act(obs32)
        observations.append(obs32)
        actions.append(action)
        obs, reward, _, _, info = base.step(action)
        rewards.append(reward)
        states.append(get_physics_state(env))
    env.close()
    cube = np.asarray(observations)[:, 24:27]
    assert np.abs(cube - cube[0]).max() > 0.01  # the cube was really pushed around

    state_file = tmp_path / "state.txt"
    np.savetxt(state_file, start[None], fmt="%.17g")
    logs = {name: tmp_path / f"{name}.txt" for name in ("actions", "obs", "states")}
    report = controller.run_controller(
        policy,
        steps=100,
        build_dir=controller_build,
        extra=[
            "--state-file",
            str(state_file),
            *[arg for name, path in logs.items() for arg in (f"--{name}-out", str(path))],
            "--backend",
            "libtorch",
        ],
    )
    assert report["steps"] == 100 and report["episodes"] == 1 and report["backend"] == "libtorch-jit"
    np.testing.assert_array_equal(np.loadtxt(logs["actions"], dtype=np.float32), np.asarray(actions))
    np.testing.assert_array_equal(np.loadtxt(logs["obs"], dtype=np.float32), np.asarray(observations))
    np.testing.assert_array_equal(np.loadtxt(logs["states"]), np.asarray(states))
    assert report["return"] == pytest.approx(float(np.sum(rewards)), rel=1e-12)
    assert report["success_rate"] == float(info["is_success"])


def test_arm_episodes_and_success_rate_match_gail_robot_eval(controller_build: Path, tmp_path: Path) -> None:
    """--episodes N from Python's reset states: eval's returns, lengths and successes, episode by episode."""
    from gail_robot.evaluate import run_episode

    env_id = "gail_robot/ArmReach-v0"
    bundle, policy = export_arm_policy(tmp_path, env_id, toward="goal_rel_ee", grip=-1.0)
    env = gym.make(env_id)
    starts, episodes = [], []
    for seed in range(6):
        env.reset(seed=seed)
        starts.append(get_physics_state(env))
        episodes.append(run_episode(env, bundle, seed))  # resets with the same seed: the same state
    env.close()
    state_file = tmp_path / "starts.txt"
    np.savetxt(state_file, np.asarray(starts), fmt="%.17g")
    report = controller.run_controller(
        policy,
        build_dir=controller_build,
        extra=["--episodes", "6", "--state-file", str(state_file), "--backend", "libtorch"],
    )
    assert report["episodes"] == 6
    assert report["episode_steps"] == [e.length for e in episodes]
    assert report["successes"] == [e.success for e in episodes]
    np.testing.assert_allclose(report["returns"], [e.ret for e in episodes], rtol=1e-12)
    assert report["success_rate"] == np.mean([e.success for e in episodes]) == 1.0
    assert max(report["episode_steps"]) < 50  # ended on success, before the time limit

    # The controller's own resets (the env's distributions from --seed, our RNG), through the CLI.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gail_robot.cli",
            "controller",
            "run",
            str(policy),
            "--episodes",
            "10",
            "--seed",
            "7",
            "--build-dir",
            str(controller_build),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    own = json.loads(proc.stdout)
    assert own["env_id"] == env_id and own["episodes"] == 10 and own["success_rate"] == 1.0
    assert own["backend"] == "native-mlp" and own["refused"] == 0 and own["fell"] is False


@pytest.mark.parametrize("env_id", ARM_TASKS)
def test_arm_resets_follow_the_env_distributions(controller_build: Path, tmp_path: Path, env_id: str) -> None:
    """First observations of 200 controller resets: home pose, cube and goal in the env's ranges and rules."""
    from gail_robot.envs import arm

    _, policy = export_arm_policy(tmp_path, env_id)
    obs_file = tmp_path / "obs.txt"
    controller.run_controller(
        policy,
        steps=1,
        build_dir=controller_build,
        extra=["--episodes", "200", "--seed", "1", "--obs-out", str(obs_file)],
    )
    first = np.loadtxt(obs_file)
    assert first.shape == (200, arm.OBS_DIM)

    def field(name: str) -> np.ndarray:
        return first[:, arm.OBS_SLICES[name]]

    env = gym.make(env_id)
    reference, _ = env.reset(seed=0)
    env.close()
    # The arm at home, target on the TCP, gripper open, cube on the table axis-aligned: as the env.
    for name in ("joint_pos", "joint_vel", "ee_pos", "ee_target", "gripper_opening", "cube_quat"):
        np.testing.assert_allclose(
            field(name), np.broadcast_to(reference[arm.OBS_SLICES[name]], field(name).shape), atol=1e-6
        )
    cube, goal = field("cube_pos"), field("goal_pos")
    assert np.all(cube[:, :2] >= arm.CUBE_LOW - 1e-6) and np.all(cube[:, :2] <= arm.CUBE_HIGH + 1e-6)
    np.testing.assert_allclose(cube[:, 2], arm.CUBE_HALF_SIZE, atol=1e-6)
    assert len(np.unique(cube[:, 0])) == 200  # fresh draws
    if env_id.endswith("Reach-v0"):
        assert np.all(goal >= arm.REACH_GOAL_LOW - 1e-6) and np.all(goal <= arm.REACH_GOAL_HIGH + 1e-6)
        return
    assert np.all(np.linalg.norm(goal[:, :2] - cube[:, :2], axis=1) >= arm.MIN_GOAL_DISTANCE - 1e-6)
    assert np.all(goal[:, :2] >= arm.CUBE_LOW - 1e-6) and np.all(goal[:, :2] <= arm.CUBE_HIGH + 1e-6)
    height = goal[:, 2] - arm.CUBE_HALF_SIZE
    on_table = np.abs(height) < 1e-6
    if env_id.endswith("Push-v0"):
        assert np.all(on_table)
    else:  # half on the table, half 5-20 cm above it
        assert 70 <= on_table.sum() <= 130
        in_air = height[~on_table]
        assert np.all((in_air >= arm.AIR_GOAL_HEIGHT[0] - 1e-6) & (in_air <= arm.AIR_GOAL_HEIGHT[1] + 1e-6))


def test_arm_policy_with_a_foreign_layout_or_model_is_refused_in_one_line(
    controller_build: Path, tmp_path: Path
) -> None:
    from test_policy_lib import rewrite_meta

    env_id = "gail_robot/ArmPush-v0"
    _, policy = export_arm_policy(tmp_path, env_id)
    layout = export.read_meta(policy)["observation_layout"]
    renamed = [dict(seg) for seg in layout]
    renamed[3]["field"] = "ee_angvel"  # same sizes, a field this controller does not build
    swapped = [dict(seg) for seg in layout]
    swapped[0]["size"], swapped[1]["size"] = 8, 6  # same total, joint_vel[0:6]: not the model's layout
    binary = controller.binary_path(controller_build)
    model = controller.default_model(export.read_meta(policy))
    hopper = Path(gym.__file__).parent / "envs" / "mujoco" / "assets" / "hopper.xml"
    cases = {
        rewrite_meta(policy, tmp_path / "renamed.pt", observation_layout=renamed): (
            model,
            "observation layout: 'ee_angvel' is not an arm observation field (known: joint_pos, joint_vel,",
        ),
        rewrite_meta(policy, tmp_path / "swapped.pt", observation_layout=swapped): (
            model,
            "observation layout: joint_pos[0:8] does not fit the field (size 7)",
        ),
        policy: (hopper, "the model has no site named 'grip' (wrong --model for an arm policy?)"),
    }
    for path, (model_path, message) in cases.items():
        proc = subprocess.run(
            [str(binary), "--policy", str(path), "--model", str(model_path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 2 and proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"gail-robot-controller: error: {message}"), lines
    with pytest.raises(UserError, match=r"--init-qpos/--init-qvel/--reset-noise are for walkers"):
        controller.run_controller(policy, build_dir=controller_build, extra=["--reset-noise", "0.01"])
    # Through the CLI: one line, non-zero exit, no traceback.
    from cli_runner import one_line_error, run_cli

    line = one_line_error(
        run_cli("controller", "run", str(tmp_path / "renamed.pt"), "--build-dir", str(controller_build))
    )
    assert "is not an arm observation field" in line


def test_arm_realtime_loop_runs_the_three_rates(controller_build: Path, tmp_path: Path) -> None:
    """500 Hz physics, 100 Hz IK, 20 Hz policy for 2 s; misses are reported, not asserted (shared machine)."""
    _, policy = export_arm_policy(tmp_path, "gail_robot/ArmReach-v0", toward="goal_rel_ee", grip=-1.0)
    model = controller.default_model(export.read_meta(policy))
    proc = subprocess.run(
        [
            str(controller_build / controller.REALTIME_LOOP_NAME),
            "--policy",
            str(policy),
            "--model",
            str(model),
            "--seconds",
            "2",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ticks"] == 1000 and report["policy_hz"] == 20 and report["ik_hz"] == 100
    assert report["backend"] == "native-mlp" and report["refused"] == 0
    # 40 control steps: the goal-seeking policy finishes several ArmReach episodes, all successfully.
    assert report["episodes"] >= 2 and report["successes"] == report["episodes"]
    assert 0 < report["act_us_p50"] <= report["act_us_max"]
    assert (
        0
        < report["step_tick_work_us_p50"]
        <= report["control_tick_work_us_max"] + report["step_tick_work_us_max"]
    )
    assert 0 <= report["deadline_misses"] <= report["deadlines_skipped"]
