"""User errors are one line, exit non-zero, no traceback (docs/DESIGN.md §7): bad demo values,
action spaces a command cannot use, and a MUJOCO_GL that would kill ``import mujoco``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_runner import one_line_error, run_cli
from policy_factory import make_checkpoint

import gail_robot
from gail_robot.algos.demos import check_finite
from gail_robot.data import Demo
from gail_robot.errors import UserError

REPO = Path(__file__).resolve().parents[1]
REACH_DEMOS = REPO / "datasets" / "experts" / "ArmReach-v0" / "demos.hdf5"
REACH = "gail_robot/ArmReach-v0"


def corrupt(tmp_path: Path, dataset: str, index: tuple[int, ...], value: float) -> Path:
    """A copy of the shipped ArmReach demos with one value of ``dataset`` replaced."""
    bad = tmp_path / "bad.hdf5"
    shutil.copyfile(REACH_DEMOS, bad)
    with h5py.File(bad, "r+") as f:
        column = f[dataset]
        values = column[()]
        values[index] = value
        column[...] = values
    return bad


# -- bad demo values ----------------------------------------------------------------------------


def test_bc_refuses_a_nan_action(tmp_path: Path) -> None:
    bad = corrupt(tmp_path, "data/demo_3/actions", (2, 0), np.nan)
    out = tmp_path / "run"
    result = run_cli("train", "--algo", "bc", "--env", REACH, "--demos", str(bad), "--out", str(out))
    line = one_line_error(result)
    assert line.startswith(f"gail-robot train: error: {bad}: demo_3 step 2: action is not finite ([nan, ")
    assert line.endswith("]); fix or drop that demo")
    assert not out.exists() or not any(out.rglob("*.pt"))


def test_gail_refuses_an_infinite_observation(tmp_path: Path) -> None:
    bad = corrupt(tmp_path, "data/demo_5/obs/state", (1, 7), np.inf)
    result = run_cli(
        "train", "--algo", "gail", "--env", REACH, "--demos", str(bad), "--out", str(tmp_path / "run"),
        "--sync", "--num-envs", "1", "--steps", "64", "--no-progress",
    )  # fmt: skip
    line = one_line_error(result)
    where = "demo_5 step 1: observation 'state' is not finite (["
    assert line.startswith(f"gail-robot train: error: {bad}: {where}")
    assert "inf" in line and line.endswith("fix or drop that demo")


def _demo(n: int = 6, obs_dim: int = 5) -> Demo:
    rng = np.random.default_rng(0)
    return Demo(
        name="demo_7",
        obs={"state": rng.normal(size=(n, obs_dim)), "pixels": np.zeros((n, 2, 2, 3), np.uint8)},
        next_obs={"state": rng.normal(size=(n, obs_dim)), "pixels": np.zeros((n, 2, 2, 3), np.uint8)},
        actions=rng.normal(size=(n, 2)).astype(np.float32),
        rewards=np.zeros(n, np.float32),
        terminated=np.zeros(n, bool),
        truncated=np.zeros(n, bool),
        states=np.zeros((n, 3)),
        final_state=np.zeros(3),
        attrs={},
    )


def test_check_finite_names_the_earliest_bad_step_of_any_array() -> None:
    keys = ["state", "pixels"]
    check_finite("ok.hdf5", _demo(), keys)  # finite (and integer images) pass
    demo = _demo()
    demo.obs["state"][4, 0] = np.nan
    demo.next_obs["state"][2, 3] = -np.inf
    with pytest.raises(UserError) as caught:
        check_finite("d.hdf5", demo, keys)
    assert str(caught.value) == (
        f"d.hdf5: demo_7 step 2: next observation 'state' is not finite "
        f"([{', '.join(f'{v:.4g}' for v in demo.next_obs['state'][2, :4])}, ...]); fix or drop that demo"
    )
    assert "-inf" in str(caught.value)


def test_check_finite_finds_one_bad_value_in_a_large_demo() -> None:
    n = 100_000
    demo = _demo(n, obs_dim=20)
    demo.actions[n - 1, 1] = np.nan
    with pytest.raises(UserError, match=f"demo_7 step {n - 1}: action is not finite"):
        check_finite("big.hdf5", demo, ["state", "pixels"])


# -- action spaces a command cannot use ------------------------------------------------------------
# (spaces no command supports, e.g. MultiDiscrete: tests/test_discrete.py)


def test_sac_on_a_discrete_env_is_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "train", "--algo", "sac", "--env", "CartPole-v1", "--out", str(tmp_path / "run"),
        "--sync", "--num-envs", "1", "--steps", "64", "--no-progress",
    )  # fmt: skip
    assert one_line_error(result) == (
        "gail-robot train: error: --algo sac acts in continuous Box action spaces; CartPole-v1 has "
        "Discrete(2) (use --algo ppo, trpo, gail or bc)"
    )


def test_eval_of_a_continuous_policy_on_a_discrete_env_is_one_line(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "policy.pt")
    result = run_cli("eval", str(checkpoint), "--env", "CartPole-v1", "--episodes", "1")
    assert one_line_error(result) == (
        "gail-robot eval: error: policy expects obs (11,) / actions Box(3,), "
        "CartPole-v1 has (4,) / Discrete(2)"
    )


def test_teleop_on_a_discrete_env_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "d.hdf5"
    result = run_cli("record", "--env", "CartPole-v1", "--device", "keyboard", "--out", str(out))
    assert one_line_error(result) == (
        "gail-robot record: error: --device keyboard drives continuous actions; for Discrete(2) actions "
        "record with --device policy --policy FILE (or --device random)"
    )


# -- MUJOCO_GL ----------------------------------------------------------------------------------


def run_with_env(args: list[str], **environ: str) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` with ``environ`` added to the environment."""
    # As from a fresh shell: an earlier `import mujoco` in this process set PYOPENGL_PLATFORM.
    env = {k: v for k, v in os.environ.items() if k != "PYOPENGL_PLATFORM"}
    env.update(environ)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)


COMMANDS = [
    ["eval", "nothing.pt"],
    ["train", "--algo", "ppo", "--env", "Hopper-v5"],
    ["record", "--env", "Hopper-v5", "--device", "random", "--out", "x.hdf5"],
]


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_mujoco_gl_is_one_line_for_every_command(command: list[str]) -> None:
    result = run_with_env(["-m", "gail_robot.cli", *command], MUJOCO_GL="bogus")
    assert one_line_error(result) == (
        f"gail-robot {command[0]}: error: MUJOCO_GL=bogus is not a MuJoCo rendering backend; "
        "set MUJOCO_GL=egl (headless), osmesa (software) or glfw (with a display), or unset it"
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MUJOCO_GL backends are checked on Linux")
def test_missing_osmesa_is_one_line_naming_the_variable() -> None:
    if gail_robot._library_loads("OSMesa"):
        pytest.skip("libOSMesa is installed here, so MUJOCO_GL=osmesa works")
    result = run_with_env(["-m", "gail_robot.cli", "eval", "nothing.pt"], MUJOCO_GL="osmesa")
    assert one_line_error(result) == (
        "gail-robot eval: error: MUJOCO_GL=osmesa: libOSMesa not found; install libosmesa6 or set "
        "MUJOCO_GL=egl (or unset it with a display)"
    )
    # The check is needed: without it, this exact setting kills `import mujoco` in a traceback.
    raw = run_with_env(["-c", "import mujoco"], MUJOCO_GL="osmesa")
    assert raw.returncode != 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MUJOCO_GL backends are checked on Linux")
def test_a_gl_import_failure_the_check_misses_is_still_one_line(tmp_path: Path) -> None:
    if gail_robot._library_loads("OSMesa"):
        pytest.skip("libOSMesa is installed here, so MUJOCO_GL=osmesa works")
    checkpoint = make_checkpoint(tmp_path / "policy.pt")
    code = (
        "import sys, gail_robot.cli as cli\n"
        "cli.mujoco_gl_problem = lambda: None  # pretend the up-front check passed\n"
        f"sys.exit(cli.main(['eval', {str(checkpoint)!r}, '--env', 'Hopper-v5', '--episodes', '1']))\n"
    )
    result = run_with_env(["-c", code], MUJOCO_GL="osmesa")
    line = one_line_error(result)
    assert line.startswith("gail-robot eval: error: importing mujoco failed with MUJOCO_GL=osmesa (")
    assert line.endswith("set MUJOCO_GL=egl (GPU), or unset it with a display")


def test_mujoco_gl_problem_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    for fine in ("off", "disable", "glfw", "GLX", ""):
        monkeypatch.setenv("MUJOCO_GL", fine)
        assert gail_robot.mujoco_gl_problem() is None
    monkeypatch.delenv("MUJOCO_GL")
    assert gail_robot.mujoco_gl_problem() is None
    monkeypatch.setenv("MUJOCO_GL", "egl")
    monkeypatch.setattr(gail_robot, "_library_loads", lambda name: False)
    monkeypatch.setattr(gail_robot, "MUJOCO_GL_DEFAULTED", True)
    assert gail_robot.mujoco_gl_problem() == (
        "MUJOCO_GL=egl (the default without a display): libEGL not found; install libegl1, or set "
        "MUJOCO_GL=osmesa and install libosmesa6, or unset it with a display"
    )
