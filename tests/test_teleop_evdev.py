"""Gamepad teleop from a virtual gamepad: a kernel input device created through ``/dev/uinput``
(python-evdev ``UInput``) that ``gail-robot record --device gamepad`` reads through pygame / SDL as
it would read a real one. Skipped, with the reason, where ``/dev/uinput`` is missing or not
writable (containers usually lack it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from xdisplay import LineWatcher

from gail_robot.data import DemoDataset
from gail_robot.data.validate import validate_file

UINPUT = Path("/dev/uinput")
ENV_KWARGS = '{"max_episode_steps": 2000, "terminate_on_success": false}'


def virtual_gamepad() -> tuple[Any, Any]:
    """``(UInput, ecodes)`` of a new virtual gamepad, or skip the test with the reason."""
    if not sys.platform.startswith("linux"):
        pytest.skip("virtual input devices (uinput) are Linux only")
    if not UINPUT.exists():
        pytest.skip("no /dev/uinput here (needs the uinput kernel module and its device node)")
    if not os.access(UINPUT, os.W_OK):
        pytest.skip("/dev/uinput is not writable by this user")
    evdev = pytest.importorskip("evdev", reason="python-evdev is not installed (dev extra)")
    pytest.importorskip("pygame", reason="pygame is not installed (gamepad extra)")
    e = evdev.ecodes
    centred = evdev.AbsInfo(value=0, min=-32768, max=32767, fuzz=0, flat=0, resolution=0)
    # SDL numbers buttons and axes in event-code order: SOUTH (A) 0, EAST (B) 1, NORTH 2, WEST 3,
    # TL 4, TR 5, SELECT (Back) 6, START 7; ABS_X 0, ABS_Y 1, ABS_Z 2, ABS_RX 3, ABS_RY 4, ABS_RZ 5:
    # the layout GamepadDevice reads.
    caps = {
        e.EV_KEY: [
            e.BTN_SOUTH,
            e.BTN_EAST,
            e.BTN_NORTH,
            e.BTN_WEST,
            e.BTN_TL,
            e.BTN_TR,
            e.BTN_SELECT,
            e.BTN_START,
        ],
        e.EV_ABS: [(code, centred) for code in (e.ABS_X, e.ABS_Y, e.ABS_Z, e.ABS_RX, e.ABS_RY, e.ABS_RZ)],
    }
    try:
        ui = evdev.UInput(caps, name="gail_robot virtual gamepad", vendor=0x1209, product=0x0001, version=1)
    except (OSError, evdev.UInputError) as exc:
        pytest.skip(f"cannot create a virtual gamepad: {exc}")
    return ui, e


def press(ui: Any, e: Any, button: int) -> None:
    ui.write(e.EV_KEY, button, 1)
    ui.syn()
    time.sleep(0.05)
    ui.write(e.EV_KEY, button, 0)
    ui.syn()


def stick(ui: Any, e: Any, axis: int, value: int, hold: float) -> None:
    """Push a stick axis to ``value`` for ``hold`` seconds, then let it go back to the centre."""
    ui.write(e.EV_ABS, axis, value)
    ui.syn()
    time.sleep(hold)
    ui.write(e.EV_ABS, axis, 0)
    ui.syn()


def test_virtual_gamepad_drives_the_recording(tmp_path: Path) -> None:
    ui, e = virtual_gamepad()
    out = tmp_path / "pad.hdf5"
    cmd = [
        sys.executable, "-m", "gail_robot.cli", "record",
        "--env", "gail_robot/ArmReach-v0", "--env-kwargs", ENV_KWARGS,
        "--device", "gamepad", "--episodes", "2", "--out", str(out), "--no-fsync",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["SDL_JOYSTICK_DISABLE_UDEV"] = "1"  # find the device by scanning /dev/input (no udev daemon)
    proc = subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    log = LineWatcher(proc.stderr)
    try:
        log.wait_for("keyboard map", timeout=90)
        # episode 1: Back discards it (and shows that SDL delivers this device's events)
        press(ui, e, e.BTN_SELECT)
        log.wait_for("discarded episode 1")
        # episode 2: left stick up (+x), A closes the gripper, left stick left (+y), Start saves
        stick(ui, e, e.ABS_Y, -32768, hold=1.0)
        time.sleep(0.3)
        press(ui, e, e.BTN_SOUTH)
        time.sleep(0.3)
        stick(ui, e, e.ABS_X, -32768, hold=1.0)
        time.sleep(0.3)
        press(ui, e, e.BTN_START)
        log.wait_for("saved demo_0")
        # episode 3: the gamepad disconnects mid-episode: the recorder stops, demo_0 stays
        time.sleep(0.5)
        ui.close()
        assert proc.wait(timeout=60) == 0, log.text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log.join()
        ui.close()
    assert "1 demos saved" in log.text() and "1 discarded" in log.text()

    ds = DemoDataset(out)
    assert ds.demo_names == ["demo_0"] and validate_file(out) == []
    d = ds.demo(0)
    assert d.attrs["source"] == "teleop:gamepad" and d.attrs["seed"] == 1
    assert d.truncated[-1] and not d.terminated.any()
    a = d.actions
    grip = a[:, 3]
    assert grip[0] == -1 and grip[-1] == 1 and np.count_nonzero(np.diff(grip)) == 1
    toggle = int(np.argmax(grip > 0))
    # +x (stick up) before the toggle, +y (stick left) after it, nothing else
    assert (a[:toggle, 0] > 0.5).sum() >= 5 and (a[:toggle, 1] == 0).all()
    assert (a[toggle:, 1] > 0.5).sum() >= 5 and (a[toggle:, 0] == 0).all()
    assert (a[:, 2] == 0).all()
