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
from policy_factory import make_checkpoint

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
