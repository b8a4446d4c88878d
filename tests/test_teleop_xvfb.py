"""Keyboard teleop through the real MuJoCo viewer window: a private X server (Xvfb), real key events
(xdotool / XTEST) sent to the window that ``gail-robot record --device keyboard`` opens, and checks
that the recorded file reflects the keys (motion in the pressed direction, the gripper toggle, save
and discard)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from xdisplay import LineWatcher, XDisplay

from gail_robot.data import DemoDataset
from gail_robot.data.validate import validate_file
from gail_robot.envs.arm import OBS_SLICES

# Episodes far longer than the test (2000 steps = 100 s at 20 Hz) that do not stop at the goal:
# every episode ends by a key.
ENV_KWARGS = '{"max_episode_steps": 2000, "terminate_on_success": false}'


@pytest.fixture
def xdisplay() -> XDisplay:
    x = XDisplay.start_or_skip()
    yield x
    x.close()


@contextlib.contextmanager
def viewer_recorder(xdisplay: XDisplay, *args: str) -> Iterator[tuple[subprocess.Popen[str], LineWatcher]]:
    """``gail-robot record --device keyboard ARGS`` with its viewer window focused and its key map
    printed (the recorder is in its loop); killed and its output collected on the way out."""
    cmd = [
        sys.executable, "-m", "gail_robot.cli", "record",
        "--env", "gail_robot/ArmReach-v0", "--env-kwargs", ENV_KWARGS,
        "--device", "keyboard", "--no-fsync", *args,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        env=xdisplay.env(MUJOCO_GL="glfw"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = LineWatcher(proc.stderr)
    try:
        try:
            window = xdisplay.wait_window("^MuJoCo", timeout=90, alive=proc)
        except RuntimeError as exc:
            if "cannot open the MuJoCo viewer" in log.text():  # no GLX under this X server
                pytest.skip(f"the viewer cannot open under Xvfb: {log.text().splitlines()[-1]}")
            raise AssertionError(f"{exc}; recorder said: {log.text()}") from None
        xdisplay.focus(window)
        log.wait_for("keyboard map")
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log.join()


def test_viewer_keys_drive_the_recording(xdisplay: XDisplay, tmp_path: Path) -> None:
    out = tmp_path / "keys.hdf5"
    with viewer_recorder(xdisplay, "--episodes", "2", "--out", str(out)) as (proc, log):
        # episode 1: Backspace discards it. Also the handshake: once it is reported, the viewer
        # thread is handling key events (its first frames can take seconds under software GL, and
        # keys queued meanwhile would arrive at once).
        xdisplay.key("BackSpace")
        log.wait_for("discarded episode 1", timeout=90)
        # episode 2: Up (+x) held for a while, then Enter saves it
        xdisplay.key("Up", repeat=12, delay=0.1)
        time.sleep(0.5)
        xdisplay.key("Return")
        log.wait_for("saved demo_0")
        # episode 3: Left (+y), Insert closes the gripper, Left again, Enter saves it
        xdisplay.key("Left", repeat=6, delay=0.1)
        time.sleep(0.5)
        xdisplay.key("Insert")
        time.sleep(0.3)
        xdisplay.key("Left", repeat=6, delay=0.1)
        time.sleep(0.5)
        xdisplay.key("Return")
        log.wait_for("saved demo_1")
        assert proc.wait(timeout=60) == 0, log.text()
    assert "2 demos saved" in log.text() and "1 discarded" in log.text()

    ds = DemoDataset(out)
    assert ds.demo_names == ["demo_0", "demo_1"] and validate_file(out) == []
    d0, d1 = ds.demo(0), ds.demo(1)
    for d in (d0, d1):
        assert d.attrs["source"] == "teleop:keyboard"
        assert d.truncated[-1] and not d.terminated.any()  # cut by Enter, not ended by the env
        assert len(d) < 2000
    # the discarded attempt used seed 0: the saved demos are attempts 2 and 3
    assert (d0.attrs["seed"], d1.attrs["seed"]) == (1, 2)

    # demo_0: +x only, gripper open throughout, the tool point moved along +x
    a0 = d0.actions
    assert (a0[:, 0] > 0).sum() >= 3 and (a0[:, 0] >= 0).all()
    assert (a0[:, 1:3] == 0).all() and (a0[:, 3] == -1).all()
    ee = OBS_SLICES["ee_pos"]
    moved = d0.next_obs["state"][-1, ee] - d0.obs["state"][0, ee]
    assert moved[0] > 0.02 and abs(moved[0]) > abs(moved[1]), moved

    # demo_1: +y only; one gripper toggle (open -> closed) between the two bursts of Left
    a1 = d1.actions
    assert (a1[:, 1] > 0).sum() >= 3 and (a1[:, 1] >= 0).all()
    assert (a1[:, [0, 2]] == 0).all()
    grip = a1[:, 3]
    assert grip[0] == -1 and grip[-1] == 1 and np.count_nonzero(np.diff(grip)) == 1
    toggle = int(np.argmax(grip > 0))
    assert (a1[:toggle, 1] > 0).any() and (a1[toggle:, 1] > 0).any()


def test_viewer_takeover_key_hands_control_to_the_person_and_back(xdisplay: XDisplay, tmp_path: Path) -> None:
    """``record --policy RUN --intervene --device keyboard`` in the real viewer window: Home takes over
    from the policy, Up drives +x, Home hands back; the file flags exactly the person's steps."""
    from policy_factory import make_checkpoint

    policy = make_checkpoint(
        tmp_path / "policy" / "final.pt",
        "gail_robot/ArmReach-v0",
        env_kwargs={"max_episode_steps": 2000, "terminate_on_success": False},
        hidden=(32, 32),
    )
    out = tmp_path / "takeover.hdf5"
    args = ("--intervene", "--policy", str(policy), "--episodes", "1", "--out", str(out))
    with viewer_recorder(xdisplay, *args) as (proc, log):
        # handshake as above (the status line naming the driver is drawn on terminals only):
        # Backspace discards attempt 1 once the viewer thread handles keys
        xdisplay.key("BackSpace")
        log.wait_for("discarded episode 1", timeout=90)
        time.sleep(0.5)  # the policy drives the first steps of attempt 2
        xdisplay.key("Home")
        time.sleep(0.3)
        xdisplay.key("Up", repeat=10, delay=0.1)
        time.sleep(0.3)
        xdisplay.key("Home")
        time.sleep(0.5)  # the policy drives again
        xdisplay.key("Return")
        log.wait_for("saved demo_0")
        assert proc.wait(timeout=60) == 0, log.text()

    with DemoDataset(out) as ds:
        demo = ds.demo(0)
    assert demo.attrs["source"] == "intervention:keyboard" and validate_file(out) == []
    assert demo.interventions is not None and demo.policy_actions is not None
    took = demo.interventions.astype(bool)
    # policy first, then the person, then the policy again (one contiguous takeover)
    assert not took[0] and not took[-1] and took.any(), took.astype(int)
    assert np.count_nonzero(np.diff(took.astype(int))) == 2
    np.testing.assert_array_equal(demo.actions[~took], demo.policy_actions[~took])
    person = demo.actions[took]
    assert (person[:, 0] > 0).sum() >= 3 and (person[:, 1:3] == 0).all()  # Up: +x only


def test_closing_the_viewer_waits_for_its_window(xdisplay: XDisplay) -> None:
    """``PassiveViewer.close`` returns once MuJoCo's render thread has destroyed the window: a recorder
    that exits or frees the model right after it cannot race the thread (the SIGSEGV at exit)."""
    script = (
        "import gymnasium as gym, gail_robot.envs\n"
        "from gail_robot.teleop.devices import open_viewer\n"
        "env = gym.make('gail_robot/ArmReach-v0')\n"
        "env.reset(seed=0)\n"
        "viewer = open_viewer(env)\n"
        "assert viewer.threads and all(t.is_alive() for t in viewer.threads)\n"
        "viewer.sync()\n"
        "viewer.close()\n"
        "print('alive after close:', [t.is_alive() for t in viewer.threads], viewer.is_running())\n"
        "env.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=xdisplay.env(MUJOCO_GL="glfw"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if "cannot open the MuJoCo viewer" in done.stderr:
        pytest.skip("the viewer cannot open under Xvfb")
    assert done.returncode == 0, done.stderr
    assert "alive after close: [False] False" in done.stdout, done.stdout + done.stderr
