"""``gail-robot record``: devices (keyboard through a pseudo-terminal, experts, policies), flags, errors."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from cli_runner import one_line_error, run_cli

import gail_robot.envs  # noqa: F401
from gail_robot.data import DemoDataset, DemoWriter
from gail_robot.data.replay import replay_demo
from gail_robot.data.validate import validate_file
from gail_robot.errors import UserError
from gail_robot.teleop.devices import HOLD_S, CommandMapper, Event, KeyState, make_device
from gail_robot.teleop.recorder import record

# -- key handling -----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_keys_move_the_arm_for_a_hold_time_and_toggle_the_gripper() -> None:
    clock = FakeClock()
    mapper = CommandMapper(gym.spaces.Box(-1, 1, (4,), np.float32), cartesian=True, speed=0.5)
    keys = KeyState(mapper, clock)
    keys.press("w")
    keys.press("f")
    np.testing.assert_array_equal(mapper.action(keys.motion()), [0.5, 0.0, -0.5, -1.0])
    clock.now += HOLD_S + 0.01  # released (no auto-repeat arrived)
    np.testing.assert_array_equal(mapper.action(keys.motion()), [0.0, 0.0, 0.0, -1.0])
    keys.press("space")
    keys.press("d")
    np.testing.assert_array_equal(mapper.action(keys.motion()), [0.0, -0.5, 0.0, 1.0])
    keys.press("enter")
    keys.press("backspace")
    assert keys.take_events() == {Event.SAVE, Event.DISCARD}
    assert keys.take_events() == set()
    keys.press("q")
    assert keys.take_events() == {Event.QUIT}
    keys.reset()
    assert mapper.gripper == -1.0


def test_joint_mode_drives_one_dimension_within_the_bounds() -> None:
    clock = FakeClock()
    mapper = CommandMapper(
        gym.spaces.Box(np.array([0, -2, -1]), np.array([1, 2, 3]), dtype=np.float32), False
    )
    keys = KeyState(mapper, clock)
    np.testing.assert_allclose(mapper.action(keys.motion()), [0.5, 0.0, 1.0])  # middle of each range
    keys.press("d")
    keys.press("w")
    np.testing.assert_allclose(mapper.action(keys.motion()), [0.5, 2.0, 1.0])
    keys.press("a")
    keys.press("a")
    keys.press("s")
    np.testing.assert_allclose(mapper.action(keys.motion()), [0.5, 0.0, -1.0])
    assert mapper.describe() == "dim 2/3"


# -- the keyboard device in a terminal ------------------------------------------------------------


class PtyRecorder:
    """``gail-robot record --device keyboard`` with a pseudo-terminal as its terminal."""

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gail_robot.cli", "record", "--device", "keyboard", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self.output = ""

    def read_until(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out waiting for {text!r}; got:\n{self.output[-2000:]}"
            ready, _, _ = select.select([self.master], [], [], min(remaining, 0.2))
            if ready:
                try:
                    self.output += os.read(self.master, 4096).decode(errors="replace")
                except OSError:  # the child exited and closed the terminal
                    assert text in self.output, f"child exited before {text!r}:\n{self.output[-2000:]}"
        return self.output

    def type(self, keys: bytes, every: float = 0.0) -> None:
        for key in keys:
            os.write(self.master, bytes([key]))
            if every:
                time.sleep(every)
                self.drain()

    def drain(self) -> None:
        while select.select([self.master], [], [], 0)[0]:
            try:
                self.output += os.read(self.master, 4096).decode(errors="replace")
            except OSError:
                return

    def finish(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.drain()
            time.sleep(0.05)
        self.drain()
        os.close(self.master)
        return self.proc.wait(5)


def test_keyboard_in_a_terminal_records_saves_and_discards(tmp_path: Path) -> None:
    out = tmp_path / "keyboard.hdf5"
    rec = PtyRecorder("--env", "gail_robot/ArmReach-v0", "--out", str(out), "--episodes", "2")
    try:
        rec.read_until("Enter save episode")  # the key map is shown first
        rec.read_until("step ")  # live status line: the loop runs
        rec.type(b"\x7f")  # Backspace: discard this episode
        rec.read_until("discarded episode 1")
        rec.type(b"wwwwww r", every=0.1)  # +x for a while, +z, close the gripper
        time.sleep(0.3)
        rec.type(b"\n")  # Enter: save now
        rec.read_until("saved demo_0")
        assert "return" in rec.output and "success" in rec.output
        rec.type(b"q")  # quit before the second episode is done
        assert rec.finish() == 0
    finally:
        if rec.proc.poll() is None:
            rec.proc.kill()
    ds = DemoDataset(out)
    assert ds.demo_names == ["demo_0"]
    demo = ds.demo(0)
    assert demo.attrs["source"] == "teleop:keyboard" and demo.attrs["seed"] == 1  # seed 0 was discarded
    assert demo.truncated[-1] and not demo.terminated.any()  # saved by the user: a truncation
    assert (demo.actions[:, 0] > 0).sum() >= 3  # W moved the target in +x
    assert demo.actions[-1, 3] == 1.0 and demo.actions[0, 3] == -1.0  # Space closed the gripper
    assert validate_file(out) == []


def test_keyboard_without_terminal_or_display_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gail_robot.cli",
            "record",
            "--env",
            "InvertedPendulum-v5",
            "--device",
            "keyboard",
            "--out",
            str(tmp_path / "k.hdf5"),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert "keyboard teleop needs a terminal (stdin is not one) or a display" in one_line_error(result)


def test_optional_devices_explain_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    env = gym.make("InvertedPendulum-v5")
    monkeypatch.setitem(sys.modules, "pygame", None)
    monkeypatch.setitem(sys.modules, "pyspacemouse", None)
    with pytest.raises(
        UserError, match=r"--device gamepad needs pygame: pip install 'gail-robot\[gamepad\]'"
    ):
        make_device("gamepad", env)
    with pytest.raises(UserError, match=r"needs pyspacemouse: pip install 'gail-robot\[spacemouse\]'"):
        make_device("spacemouse", env)


# -- experts --------------------------------------------------------------------------------


def test_scripted_expert_with_noise_and_only_success(tmp_path: Path) -> None:
    pytest.importorskip("gail_robot.envs.experts")
    out = tmp_path / "reach.hdf5"
    result = run_cli(
        "record",
        "--env",
        "gail_robot/ArmReach-v0",
        "--device",
        "scripted",
        "--out",
        str(out),
        "--episodes",
        "3",
        "--noise",
        "0.1",
        "--only-success",
        "--seed",
        "5",
    )
    assert result.returncode == 0, result.stderr
    assert "3 demos saved" in result.stderr
    ds = DemoDataset(out)
    assert len(ds) == 3 and all(ds.demo_attrs(n)["success"] for n in ds.demo_names)
    assert {ds.demo_attrs(n)["source"] for n in ds.demo_names} == {"scripted"}
    assert validate_file(out) == []
    assert replay_demo(ds, 2, "states").max_state_error == 0.0
    line = one_line_error(run_cli("record", "--env", "Hopper-v5", "--device", "scripted", "--out", str(out)))
    assert "cannot append: env 'Hopper-v5' differs from 'gail_robot/ArmReach-v0'" in line
    line = one_line_error(
        run_cli("record", "--env", "Hopper-v5", "--device", "scripted", "--out", str(tmp_path / "h.hdf5"))
    )
    assert "'Hopper-v5' has no scripted expert" in line
    assert not (tmp_path / "h.hdf5").exists()


def _checkpoint(path: Path, env_id: str, nan: bool = False) -> Path:
    torch = pytest.importorskip("torch")
    from gail_robot.nets import GaussianActor, NetConfig
    from gail_robot.policy_io import save_checkpoint

    torch.manual_seed(0)
    actor = GaussianActor(4, 1, NetConfig([8], "tanh"))
    state = actor.state_dict()
    if nan:
        state = {k: torch.full_like(v, float("nan")) for k, v in state.items()}
    return save_checkpoint(
        path,
        {
            "actor_spec": actor.spec(),
            "actor": state,
            "obs_norm": {"mean": np.zeros(4), "var": np.ones(4), "clip": 10.0},
            "action_low": np.array([-3.0], np.float32),
            "action_high": np.array([3.0], np.float32),
            "env_id": env_id,
            "env_kwargs": {},
            "meta": {"algo": "test"},
        },
    )


def test_policy_expert_and_nan_actions(tmp_path: Path) -> None:
    good = _checkpoint(tmp_path / "good.pt", "InvertedPendulum-v5")
    out = tmp_path / "policy.hdf5"
    result = run_cli(
        "record",
        "--env",
        "InvertedPendulum-v5",
        "--device",
        "policy",
        "--policy",
        str(good),
        "--out",
        str(out),
        "--episodes",
        "2",
        "--max-steps",
        "30",
    )
    assert result.returncode == 0, result.stderr
    ds = DemoDataset(out)
    assert [ds.demo_attrs(n)["source"] for n in ds.demo_names] == ["policy:good.pt"] * 2
    before = ds.transitions()
    # a policy that outputs NaN: one clear line, the two saved demos untouched
    bad = _checkpoint(tmp_path / "bad.pt", "InvertedPendulum-v5", nan=True)
    result = run_cli(
        "record",
        "--env",
        "InvertedPendulum-v5",
        "--device",
        "policy",
        "--policy",
        str(bad),
        "--out",
        str(out),
        "--episodes",
        "2",
    )
    line = one_line_error(result)
    assert "device produced a non-finite action [nan] at step 0 of episode 1" in line
    assert "2 saved demos are intact" not in line  # this session saved none...
    assert f"0 saved demos are intact in {out}" in line
    after = DemoDataset(out)
    assert after.demo_names == ["demo_0", "demo_1"]
    np.testing.assert_array_equal(after.transitions().obs, before.obs)
    assert validate_file(out) == []
    wrong = _checkpoint(tmp_path / "hopper.pt", "Hopper-v5")
    line = one_line_error(
        run_cli(
            "record",
            "--env",
            "InvertedPendulum-v5",
            "--device",
            "policy",
            "--policy",
            str(wrong),
            "--out",
            str(out),
        )
    )
    assert "the policy was trained on 'Hopper-v5', not 'InvertedPendulum-v5'" in line
    assert "--device policy needs --policy FILE" in one_line_error(
        run_cli("record", "--env", "InvertedPendulum-v5", "--device", "policy", "--out", str(out))
    )


class _NaNOnSecondEpisode:
    """A device whose second episode goes wrong at step 3."""

    source = "test"
    interactive = False

    def __init__(self) -> None:
        self.episode = 0
        self.step = 0

    def reset(self, obs: Any) -> None:
        self.episode += 1
        self.step = 0

    def act(self, obs: Any) -> np.ndarray:
        self.step += 1
        bad = self.episode == 2 and self.step == 4
        return np.array([np.nan if bad else 0.1], np.float32)

    def poll_events(self) -> set[Event]:
        return set()

    def sync(self, env: Any) -> None:
        pass

    def close(self) -> None:
        pass


def test_nan_in_a_later_episode_keeps_the_earlier_ones(tmp_path: Path) -> None:
    env = gym.make("InvertedPendulum-v5")
    out = tmp_path / "nan.hdf5"
    with DemoWriter(out, env, durable=False) as writer:
        with pytest.raises(
            UserError, match=r"non-finite action \[nan\] at step 3 of episode 2; .* 1 saved demos"
        ):
            record(env, _NaNOnSecondEpisode(), writer, episodes=3, max_steps=10)
    assert DemoDataset(out).demo_names == ["demo_0"] and validate_file(out) == []


def test_any_mujoco_env_records_and_replays_humanoid(tmp_path: Path) -> None:
    out = tmp_path / "humanoid.hdf5"
    result = run_cli(
        "record",
        "--env",
        "Humanoid-v5",
        "--device",
        "random",
        "--out",
        str(out),
        "--episodes",
        "2",
        "--max-steps",
        "15",
        "--env-kwargs",
        '{"terminate_when_unhealthy": false}',
    )
    assert result.returncode == 0, result.stderr
    ds = DemoDataset(out)
    assert ds.env_kwargs == {"terminate_when_unhealthy": False} and ds.lengths == [15, 15]
    assert ds.transitions().obs.shape == (30, 348)
    assert replay_demo(ds, 1, "states").max_state_error == 0.0
    assert "--env-kwargs is not valid JSON" in one_line_error(
        run_cli(
            "record", "--env", "Humanoid-v5", "--device", "random", "--out", str(out), "--env-kwargs", "{x"
        )
    )


# -- viewer keyboard, gamepad and spacemouse glue, with fake backends ------------------------------


class _FakeViewer:
    def __init__(self) -> None:
        self.running = True
        self.synced = 0
        self.closed = False

    def is_running(self) -> bool:
        return self.running

    def sync(self) -> None:
        self.synced += 1

    def close(self) -> None:
        self.closed = True


def test_keyboard_in_the_viewer_maps_glfw_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from gail_robot.teleop import devices

    callbacks: list[Any] = []
    viewer = _FakeViewer()

    def fake_open_viewer(env: Any, key_callback: Any = None) -> _FakeViewer:
        callbacks.append(key_callback)
        return viewer

    monkeypatch.setattr(devices, "open_viewer", fake_open_viewer)
    env = gym.make("gail_robot/ArmReach-v0")
    device = devices.KeyboardDevice(env, use_viewer=True)
    press = callbacks[0]
    press(ord("W"))  # GLFW reports letters as upper-case ASCII codes
    press(32)  # space
    action = device.act(None)
    assert action[0] == 1.0 and action[3] == 1.0
    press(257)  # Enter
    assert device.poll_events() == {Event.SAVE}
    device.sync(env)
    assert viewer.synced == 1
    viewer.running = False  # the user closed the window
    assert Event.QUIT in device.poll_events()
    device.close()
    assert viewer.closed


def test_gamepad_sticks_and_buttons(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    class Stick:
        def __init__(self, index: int) -> None:
            self.axes = [0.05, -0.8, 0.0, 0.0, 0.6]  # x in the dead zone, y pushed up, right stick down

        def init(self) -> None:
            pass

        def get_numaxes(self) -> int:
            return len(self.axes)

        def get_axis(self, i: int) -> float:
            return self.axes[i]

    queue: list[Any] = []
    pygame = types.SimpleNamespace(
        init=lambda: None,
        quit=lambda: None,
        JOYBUTTONDOWN=1,
        JOYDEVICEREMOVED=2,
        joystick=types.SimpleNamespace(init=lambda: None, get_count=lambda: 1, Joystick=Stick),
        event=types.SimpleNamespace(get=lambda: [queue.pop(0) for _ in range(len(queue))]),
    )
    monkeypatch.setitem(sys.modules, "pygame", pygame)
    monkeypatch.setattr(sys, "stdin", None)
    env = gym.make("gail_robot/ArmReach-v0")
    device = make_device("gamepad", env)
    queue.append(types.SimpleNamespace(type=1, button=0))  # A: close the gripper
    np.testing.assert_allclose(device.act(None), [0.8, 0.0, -0.6, 1.0], atol=1e-6)
    queue.append(types.SimpleNamespace(type=1, button=7))  # Start: save
    assert device.poll_events() == {Event.SAVE}
    queue.append(types.SimpleNamespace(type=2))  # unplugged: the recorder keeps or drops the episode, stops
    assert device.poll_events() == {Event.DISCONNECT}
    pygame.joystick.get_count = lambda: 0
    with pytest.raises(UserError, match="no gamepad found"):
        make_device("gamepad", env)


def test_spacemouse_translation_and_buttons(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    state = types.SimpleNamespace(x=0.5, y=-0.25, z=0.75, buttons=[0, 0])
    lib = types.SimpleNamespace(open=lambda: True, read=lambda: state)
    monkeypatch.setitem(sys.modules, "pyspacemouse", lib)
    monkeypatch.setattr(sys, "stdin", None)
    env = gym.make("gail_robot/ArmReach-v0")
    device = make_device("spacemouse", env)
    np.testing.assert_allclose(device.act(None), [-0.25, -0.5, 0.75, -1.0])
    state.buttons = [1, 1]  # left: gripper, right: save
    assert device.poll_events() == {Event.SAVE}
    assert device.act(None)[3] == 1.0
    lib.open = lambda: False
    with pytest.raises(UserError, match="no SpaceMouse found"):
        make_device("spacemouse", env)


def test_terminal_keys_parse_letters_arrows_and_editing_keys() -> None:
    from gail_robot.teleop.devices import TerminalKeys, glfw_key_name

    master, slave = pty.openpty()
    with os.fdopen(slave, "rb", buffering=0) as stream:
        keys = TerminalKeys(stream)
        try:
            os.write(master, b"W \n\x7f\x1b[A\x1b[D\x1b[5~\x1b[6~\x1b[2~\x1b[3~q")
            deadline = time.monotonic() + 5
            got: list[str] = []
            while len(got) < 11 and time.monotonic() < deadline:
                got += keys.read_keys()
        finally:
            keys.close()
    os.close(master)
    assert got == [
        "w",
        "space",
        "enter",
        "backspace",
        "up",
        "left",
        "pageup",
        "pagedown",
        "insert",
        "delete",
        "q",
    ]
    assert [glfw_key_name(c) for c in (87, 265, 262, 266, 260, 261, 300)] == [
        "w",
        "up",
        "right",
        "pageup",
        "insert",
        "delete",
        None,
    ]
    mapper = CommandMapper(gym.spaces.Box(-1, 1, (4,), np.float32), cartesian=True)
    state = KeyState(mapper, FakeClock())
    for key in ("up", "left", "pagedown", "insert"):
        state.press(key)
    np.testing.assert_array_equal(mapper.action(state.motion()), [1.0, 1.0, -1.0, 1.0])
    state.press("delete")
    assert state.take_events() == {Event.DISCARD}


def test_min_return_keeps_only_good_episodes(tmp_path: Path) -> None:
    """--min-return drops the episodes below the bar and says so; nothing kept fails with one line."""
    out = tmp_path / "reach.hdf5"
    common = ("record", "--env", "gail_robot/ArmReach-v0", "--device", "scripted", "--seed", "5")
    result = run_cli(*common, "--out", str(out), "--episodes", "3", "--min-return", "-0.5")
    assert result.returncode == 0, result.stderr
    returns = [DemoDataset(out).demo_attrs(n)["return"] for n in DemoDataset(out).demo_names]
    assert len(returns) == 3 and min(returns) >= -0.5
    assert "dropped by --only-success / --min-return" in result.stderr  # some scripted reaches cost more
    result = run_cli(
        *common,
        "--out",
        str(tmp_path / "none.hdf5"),
        "--episodes",
        "2",
        "--min-return",
        "1",
        "--max-attempts",
        "3",
    )
    assert result.returncode == 1
    assert "only 0 of 2 episodes were kept" in result.stderr
    line = one_line_error(run_cli(*common, "--out", str(tmp_path / "nan.hdf5"), "--min-return", "nan"))
    assert "--min-return must be a finite number" in line
