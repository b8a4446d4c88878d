"""Interventions: recording (a policy drives, a person takes over), datasets, IWR / HG-DAgger, dagger."""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch
from cli_runner import one_line_error, run_cli
from policy_factory import make_checkpoint

import gail_robot.envs  # noqa: F401
from gail_robot.algos.bc import fit_bc, training_steps
from gail_robot.algos.demos import LabelledEpisode, iwr_weights, load_labelled_episodes
from gail_robot.data import DemoDataset, DemoWriter, Transitions
from gail_robot.data.episode import Episode
from gail_robot.data.replay import replay_demo
from gail_robot.data.validate import validate_file
from gail_robot.errors import UserError
from gail_robot.nets import NetConfig, make_policy_actor
from gail_robot.teleop.devices import CommandMapper, Event, KeyState, glfw_key_name, make_device
from gail_robot.teleop.intervention import (
    ExpertGate,
    InterventionDevice,
    load_driving_policy,
    make_intervention_device,
)
from gail_robot.teleop.recorder import record

PUSH = "gail_robot/ArmPush-v0"


@pytest.fixture(scope="module")
def push_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random policy of ArmPush (a real checkpoint): the scripted person has plenty to fix."""
    return make_checkpoint(tmp_path_factory.mktemp("policy") / "final.pt", PUSH, hidden=(32, 32))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, push_policy: Path) -> Path:
    out = tmp_path_factory.mktemp("rec") / "int.hdf5"
    result = run_cli(
        "record", "--env", PUSH, "--device", "scripted", "--intervene", "--policy", str(push_policy),
        "--episodes", "3", "--max-steps", "40", "--seed", "5", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "interventions:" in result.stderr
    return out


# -- recording --------------------------------------------------------------------------------


def test_scripted_intervention_recording_stores_the_datasets_and_replays_exactly(recorded: Path) -> None:
    assert validate_file(recorded) == []
    with DemoDataset(recorded) as ds:
        assert len(ds) == 3
        for demo in ds:
            assert demo.attrs["source"] == "intervention:scripted"
            assert demo.policy_actions is not None and demo.interventions is not None
            assert demo.policy_actions.dtype == np.float32 and demo.policy_actions.shape == demo.actions.shape
            assert demo.interventions.dtype == np.uint8 and set(np.unique(demo.interventions)) <= {0, 1}
            took = demo.interventions.astype(bool)
            # where the policy drove, the executed action is its proposal; the random policy disagrees
            # with the expert, who takes over
            np.testing.assert_array_equal(demo.actions[~took], demo.policy_actions[~took])
            assert took.any()
            assert not np.array_equal(demo.actions[took], demo.policy_actions[took])
        for i in range(3):
            assert replay_demo(ds, i, "actions").max_state_error == 0.0
            assert replay_demo(ds, i, "states").max_state_error == 0.0
        taken, total = ds.intervention_counts()
        assert 0 < taken <= total == ds.num_steps
    result = run_cli("data", "info", str(recorded), "--json")
    info = json.loads(result.stdout)
    assert info["intervention_steps"] == taken and info["intervention_rate"] == pytest.approx(taken / total)


def test_recording_is_deterministic_given_seeds(recorded: Path, push_policy: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.hdf5"
    result = run_cli(
        "record", "--env", PUSH, "--device", "scripted", "--intervene", "--policy", str(push_policy),
        "--episodes", "3", "--max-steps", "40", "--seed", "5", "--out", str(again),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with DemoDataset(recorded) as a, DemoDataset(again) as b:
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x.actions, y.actions)
            np.testing.assert_array_equal(x.interventions, y.interventions)


def test_converters_keep_the_intervention_datasets(recorded: Path, tmp_path: Path) -> None:
    with DemoDataset(recorded) as ds:
        original = list(ds)
    for fmt, name in (("robomimic", "rm.hdf5"), ("npz", "flat.npz")):
        exported, back = tmp_path / name, tmp_path / f"back_{fmt}.hdf5"
        assert run_cli("data", "convert", str(recorded), "--to", fmt, "--out", str(exported)).returncode == 0
        assert run_cli("data", "convert", str(exported), "--out", str(back)).returncode == 0
        with DemoDataset(back) as ds:
            for a, b in zip(original, ds, strict=True):
                np.testing.assert_array_equal(a.policy_actions, b.policy_actions)
                np.testing.assert_array_equal(a.interventions, b.interventions)
                assert b.attrs["source"] == "intervention:scripted"


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda g: g["interventions"].__setitem__(0, 2), "interventions[0] is 2"),
        (
            lambda g: g["policy_actions"].__setitem__(1, np.full(4, np.nan, np.float32)),
            "policy_actions contain NaN",
        ),
        (lambda g: g.__delitem__("policy_actions"), "interventions without policy_actions"),
        (
            lambda g: (
                g.__delitem__("policy_actions"),
                g.create_dataset("policy_actions", data=np.zeros((2, 4), np.float64)),
            ),
            "policy_actions has dtype float64",
        ),
        (
            lambda g: (g.__delitem__("policy_actions"), g.__delitem__("interventions")),
            "source is 'intervention:scripted'",
        ),
    ],
)
def test_validate_rejects_broken_intervention_datasets(
    recorded: Path, tmp_path: Path, damage: Any, expected: str
) -> None:
    broken = tmp_path / "broken.hdf5"
    broken.write_bytes(recorded.read_bytes())
    with h5py.File(broken, "r+") as f:
        damage(f["data/demo_0"])
    problems = validate_file(broken)
    assert any(expected in p for p in problems), problems
    if "is 2" in expected:  # the command prints the same lines (once is enough: each call imports torch)
        result = run_cli("data", "validate", str(broken))
        assert result.returncode == 1 and expected in result.stdout


def test_episode_and_buffer_checks() -> None:
    base = dict(
        obs={"state": np.zeros((2, 3))}, next_obs={"state": np.zeros((2, 3))}, actions=np.zeros((2, 4)),
        rewards=np.zeros(2), terminated=np.zeros(2, bool), truncated=np.array([False, True]),
        states=np.zeros((2, 1)), final_state=np.zeros(1),
    )  # fmt: skip
    with pytest.raises(ValueError, match="both or neither"):
        Episode(**base, policy_actions=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="0 or 1"):
        Episode(**base, policy_actions=np.zeros((2, 4)), interventions=np.array([0, 3]))
    episode = Episode(**base, policy_actions=np.zeros((2, 4)), interventions=np.array([True, False]))
    assert episode.interventions.dtype == np.uint8 and episode.intervened


def test_writer_refuses_steps_without_the_policy_action(tmp_path: Path) -> None:
    env = gym.make("gail_robot/ArmReach-v0")
    obs, _ = env.reset(seed=0)
    with DemoWriter(tmp_path / "d.hdf5", env) as writer:
        writer.start_episode(seed=0, source="intervention:test", intervention=True)
        state = np.zeros(writer.meta.state_size or 0)
        with pytest.raises(ValueError, match="needs policy_action"):
            writer.add_step(obs, np.zeros(4, np.float32), 0.0, obs, False, False, state)
        with pytest.raises(ValueError, match="policy action at step 0"):
            writer.add_step(
                obs, np.zeros(4, np.float32), 0.0, obs, False, False, state, np.full(4, np.nan), True
            )
        assert writer.episode_length == 0
        writer.discard_episode()


# -- gates ------------------------------------------------------------------------------------


def test_expert_gate_rule_by_hand() -> None:
    """Threshold on ||a_pi - a_e||, hand-back after k steps, stall after n steps without 5 mm progress."""
    distance = iter([1.0, 0.99, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9])
    gate = ExpertGate(threshold=0.5, stall_steps=3, handback_steps=2, progress=lambda obs: next(distance))
    same, far = np.zeros(4), np.array([0.3, 0.3, 0.3, 0.0])  # ||far|| = 0.52 > 0.5
    near = np.array([0.25, 0.25, 0.25, 0.25])  # ||near|| = 0.5: not above the threshold
    gate.reset(None)
    assert gate.person_drives(None, same, near) is False  # d 1.0: best
    assert gate.person_drives(None, same, far) is True  # d 0.99 < 1.0 - 0.005 is progress; disagreement
    assert (
        gate.person_drives(None, same, same) is True
    )  # second and last step of the takeover (d 0.9: window restarts)
    assert gate.person_drives(None, same, same) is False  # d 0.9: no progress (1)
    assert gate.person_drives(None, same, same) is False  # (2)
    assert gate.person_drives(None, same, same) is True  # (3): stalled, take over
    assert gate.person_drives(None, same, same) is True
    assert gate.person_drives(None, same, same) is False  # handed back, new window
    with pytest.raises(UserError):
        ExpertGate(threshold=0.0, stall_steps=1, handback_steps=1)


def test_keyboard_takeover_key_and_device_gate() -> None:
    mapper = CommandMapper(gym.spaces.Box(-1, 1, (4,), np.float32), cartesian=True)
    keys = KeyState(mapper)
    assert not keys.takeover
    keys.press("t")
    assert keys.takeover
    keys.press("home")  # the viewer-friendly alias
    assert not keys.takeover
    keys.press("t")
    keys.reset()  # a new episode hands back
    assert not keys.takeover
    assert glfw_key_name(268) == "home" and glfw_key_name(ord("T")) == "t"


class _Stick:
    def __init__(self) -> None:
        self.axes = [0.0, -0.5, -1.0, 0.0, 0.0, -1.0]  # triggers (2, 5) released

    def init(self) -> None:
        pass

    def get_numaxes(self) -> int:
        return len(self.axes)

    def get_axis(self, i: int) -> float:
        return self.axes[i]


def test_gamepad_trigger_takes_over_and_unplugging_disconnects(
    monkeypatch: pytest.MonkeyPatch, push_policy: Path
) -> None:
    queue: list[Any] = []
    pygame = types.SimpleNamespace(
        init=lambda: None, quit=lambda: None, JOYBUTTONDOWN=1, JOYDEVICEREMOVED=2,
        joystick=types.SimpleNamespace(init=lambda: None, get_count=lambda: 1, Joystick=lambda i: stick),
        event=types.SimpleNamespace(get=lambda: [queue.pop(0) for _ in range(len(queue))]),
    )  # fmt: skip
    stick = _Stick()
    monkeypatch.setitem(sys.modules, "pygame", pygame)
    monkeypatch.setattr(sys, "stdin", None)
    env = gym.make(PUSH)
    policy = load_driving_policy(str(push_policy), env)
    device = make_intervention_device("gamepad", env, policy, make_device("gamepad", env))
    obs, _ = env.reset(seed=0)
    device.reset(obs)
    proposed = policy.act(obs.astype(np.float32))
    np.testing.assert_array_equal(device.act(obs), proposed)
    assert not device.last_intervention and "driving: policy" in device.describe()
    stick.axes[5] = 0.7  # right trigger held
    action = device.act(obs)
    assert device.last_intervention and "driving: PERSON" in device.describe()
    np.testing.assert_allclose(action[:3], [0.5, 0.0, 0.0], atol=1e-6)  # left stick up: +x
    assert action[3] == (1.0 if proposed[3] > 0 else -1.0)  # the gripper stays as the policy had it
    stick.axes[5] = -1.0
    device.act(obs)
    assert not device.last_intervention
    queue.append(types.SimpleNamespace(type=2))
    assert device.poll_events() == {Event.DISCONNECT}


def test_spacemouse_motion_beyond_the_dead_zone_takes_over(monkeypatch: pytest.MonkeyPatch) -> None:
    state = types.SimpleNamespace(x=0.0, y=0.05, z=0.0, roll=0.0, pitch=0.0, yaw=0.0, buttons=[0, 0])
    lib = types.SimpleNamespace(open=lambda: True, read=lambda: state)
    monkeypatch.setitem(sys.modules, "pyspacemouse", lib)
    monkeypatch.setattr(sys, "stdin", None)
    device: Any = make_device("spacemouse", gym.make(PUSH))
    now = [10.0]
    device.clock = lambda: now[0]
    device.act(None)
    assert not device.takeover()  # 0.05 is inside the dead zone
    state.yaw = 0.3
    device.act(None)
    assert device.takeover()
    state.yaw = 0.0
    now[0] += 0.4
    device.act(None)
    assert device.takeover()  # still within the hand-back time
    now[0] += 0.2
    assert not device.takeover()

    def unplugged() -> Any:
        raise OSError("device gone")

    lib.read = unplugged
    assert device.poll_events() == {Event.DISCONNECT}


# -- bad input --------------------------------------------------------------------------------


def test_intervene_without_policy_or_with_another_envs_policy(push_policy: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.hdf5"
    line = one_line_error(
        run_cli("record", "--env", PUSH, "--device", "scripted", "--intervene", "--out", str(out))
    )
    assert "--intervene needs --policy" in line
    line = one_line_error(
        run_cli("record", "--env", "gail_robot/ArmReach-v0", "--device", "scripted", "--intervene",
                "--policy", str(push_policy), "--out", str(out))
    )  # fmt: skip
    assert "trained on 'gail_robot/ArmPush-v0', not 'gail_robot/ArmReach-v0'" in line
    line = one_line_error(
        run_cli(
            "record",
            "--env",
            PUSH,
            "--device",
            "random",
            "--intervene",
            "--policy",
            str(push_policy),
            "--out",
            str(out),
        )
    )
    assert "--intervene takes over with a person's device" in line
    assert not out.exists()


class _Unplugged:
    """A scripted-person intervention device whose device disconnects at step ``at`` of episode 2."""

    def __init__(self, inner: InterventionDevice, at: int) -> None:
        self.inner, self.at, self.steps, self.episode = inner, at, 0, 0
        self.source, self.interactive, self.intervention = inner.source, False, True

    def reset(self, obs: Any) -> None:
        self.inner.reset(obs)
        self.episode += 1
        self.steps = 0

    def act(self, obs: Any) -> np.ndarray:
        self.steps += 1
        action = self.inner.act(obs)
        self.last_policy_action, self.last_intervention = (
            self.inner.last_policy_action,
            self.inner.last_intervention,
        )
        return action

    def poll_events(self) -> set[Event]:
        return {Event.DISCONNECT} if self.episode == 2 and self.steps == self.at else set()

    def sync(self, env: Any) -> None:
        pass

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("choice", ["keep", "discard"])
def test_a_device_that_disconnects_keeps_or_discards_the_episode(
    push_policy: Path, tmp_path: Path, choice: str
) -> None:
    env = gym.make(PUSH)
    policy = load_driving_policy(str(push_policy), env)
    inner = make_intervention_device("scripted", env, policy, make_device("scripted", env, seed=0))
    out = tmp_path / "d.hdf5"
    with DemoWriter(out, env) as writer, pytest.raises(UserError) as err:
        record(env, _Unplugged(inner, at=7), writer, episodes=5, seed=0, max_steps=30, on_disconnect=choice)
    message = str(err.value)
    assert "\n" not in message and "disconnected" in message
    with DemoDataset(out) as ds:
        assert validate_file(out) == []
        if choice == "keep":
            assert len(ds) == 2 and ds.lengths[1] == 7 and "kept as demo_1" in message
            assert ds.demo(1).truncated[-1] and ds.demo(1).interventions is not None
        else:
            assert len(ds) == 1 and "was discarded" in message


# -- learning ---------------------------------------------------------------------------------


def test_iwr_weights_by_hand() -> None:
    flags = np.array([1, 0, 0, 0, 0, 0, 1, 0], bool)  # M = 8, M_int = 2, M_other = 6
    w = iwr_weights(flags)
    np.testing.assert_allclose(w, [2.0, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 2.0, 2 / 3], rtol=1e-6)
    assert w[flags].sum() == pytest.approx(4.0) and w[~flags].sum() == pytest.approx(4.0)  # half each
    np.testing.assert_array_equal(iwr_weights(np.zeros(3, bool)), np.ones(3))
    np.testing.assert_array_equal(iwr_weights(np.ones(3, bool)), np.ones(3))


def test_weighted_bc_fits_the_iwr_weighted_mean() -> None:
    """One observation, labels +0.6 (intervention) and 3 x -0.2 (policy steps): the Gaussian MLE of the
    mean is the weighted mean, 0 unweighted and (2 * 0.6 + 3 * 2/3 * -0.2) / 4 = 0.2 with IWR weights."""
    obs = np.zeros((4, 2), np.float32)
    actions = np.array([[0.6], [-0.2], [-0.2], [-0.2]], np.float32)
    flags = np.array([True, False, False, False])
    for weights, expected in ((None, 0.0), (iwr_weights(flags), 0.2)):
        torch.manual_seed(0)
        actor = make_policy_actor(2, 1, 0, NetConfig([8], "tanh"), 0.0)
        fit_bc(actor, obs, actions, None, None, lr=3e-2, max_epochs=400, patience=400, weights=weights)
        with torch.no_grad():
            assert float(actor(torch.zeros(1, 2))[0, 0]) == pytest.approx(expected, abs=0.01)


def _pairs(n: int) -> Transitions:
    return Transitions(
        np.arange(n, dtype=np.float32)[:, None], np.zeros((n, 1), np.float32),
        np.zeros((n, 1), np.float32), np.zeros(n, bool),
    )  # fmt: skip


def test_hg_dagger_keeps_only_intervention_steps_iwr_keeps_all() -> None:
    demo = LabelledEpisode(_pairs(3), None)
    run = LabelledEpisode(_pairs(5), np.array([0, 1, 1, 0, 1], bool))
    idle = LabelledEpisode(_pairs(2), np.zeros(2, bool))  # nobody took over: no labels
    pairs, flags = training_steps([demo, run, idle], intervention_weighting=False)
    assert [len(p) for p in pairs] == [3, 3]
    np.testing.assert_array_equal(pairs[1].obs[:, 0], [1, 2, 4])
    pairs, flags = training_steps([demo, run, idle], intervention_weighting=True)
    assert [len(p) for p in pairs] == [3, 5, 2]
    np.testing.assert_array_equal(np.concatenate(flags), [0, 0, 0, 0, 1, 1, 0, 1, 0, 0])


def test_bc_over_several_files_checks_the_env(recorded: Path, tmp_path: Path) -> None:
    episodes = load_labelled_episodes([str(recorded)], PUSH)
    assert len(episodes) == 3 and all(e.interventions is not None for e in episodes)
    reach = tmp_path / "reach.hdf5"
    assert run_cli("record", "--env", "gail_robot/ArmReach-v0", "--device", "scripted", "--episodes", "1",
                   "--out", str(reach)).returncode == 0  # fmt: skip
    line = one_line_error(
        run_cli(
            "train",
            "ArmPush-v0",
            "--algo",
            "bc",
            "--demos",
            str(recorded),
            str(reach),
            "--out",
            str(tmp_path / "r"),
        )
    )
    assert "does not go with" in line and "ArmReach-v0" in line
    line = one_line_error(
        run_cli("train", "ArmPush-v0", "--demos", str(recorded), str(recorded), "--out", str(tmp_path / "r"))
    )
    assert "given twice" in line  # GAIL (the config's algo) takes several files too, checked alike


def test_dagger_two_rounds_make_round_dirs_and_resume(tmp_path: Path) -> None:
    demos = tmp_path / "demos.hdf5"
    assert run_cli("record", "--env", PUSH, "--device", "scripted", "--noise", "0.1", "--episodes", "2",
                   "--out", str(demos)).returncode == 0  # fmt: skip
    out = tmp_path / "dagger"
    argv = (
        "dagger", "ArmPush-v0", "--demos", str(demos), "--rounds", "2", "--episodes-per-round", "1",
        "--out", str(out), "--no-progress", "--set", "bc.max_epochs=3", "--set", "run.eval_episodes=1",
        "--set", "run.tensorboard=false",
    )  # fmt: skip
    result = run_cli(*argv)
    assert result.returncode == 0, result.stderr
    for r in range(3):
        assert (out / f"round_{r}" / "final.pt").is_file() and (out / f"round_{r}" / "config.yaml").is_file()
    for r in (1, 2):
        with DemoDataset(out / f"round_{r}" / "interventions.hdf5") as ds:
            assert len(ds) == 1 and ds.demo(0).attrs["source"] == "intervention:scripted"
    config = (out / "round_2" / "config.yaml").read_text()
    assert "round_1/interventions.hdf5" in config and "round_2/interventions.hdf5" in config
    rows = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert (
        rows[0]["intervention_steps"] == 0
        and rows[2]["expert_labelled_steps"] >= rows[1]["expert_labelled_steps"]
    )
    # an interrupted last round (no final.pt) is retrained; finished rounds are kept
    (out / "round_2" / "final.pt").unlink()
    kept = (out / "round_1" / "final.pt").stat().st_mtime_ns
    result = run_cli(*argv)
    assert result.returncode == 0, result.stderr
    assert "round 1: done before" in result.stderr and (out / "round_2" / "final.pt").is_file()
    assert (out / "round_1" / "final.pt").stat().st_mtime_ns == kept
    with DemoDataset(out / "round_2" / "interventions.hdf5") as ds:
        assert len(ds) == 1  # not recorded twice
    line = one_line_error(run_cli(*argv[:-2], "--set", "run.tensorboard=true"))
    assert "other arguments" in line


def test_keyboard_takeover_in_a_terminal(push_policy: Path, tmp_path: Path) -> None:
    """The real terminal keyboard: T takes over (status line says who drives), W moves, T hands back."""
    from test_record import PtyRecorder

    out = tmp_path / "kb.hdf5"
    rec = PtyRecorder(
        "--env", PUSH, "--intervene", "--policy", str(push_policy), "--out", str(out), "--episodes", "1",
    )  # fmt: skip

    def last_driver() -> str:
        policy, person = rec.output.rfind("driving: policy"), rec.output.rfind("driving: PERSON")
        return "none" if max(policy, person) < 0 else ("policy" if policy > person else "PERSON")

    try:
        rec.read_until("take over from the policy")  # the key map names the takeover key
        rec.read_until("driving: policy")
        rec.type(b"t")
        rec.read_until("driving: PERSON")
        rec.type(b"wwww", every=0.1)
        rec.type(b"t")
        deadline = time.monotonic() + 30
        while last_driver() != "policy" and time.monotonic() < deadline:
            rec.drain()
            time.sleep(0.05)
        assert last_driver() == "policy"
        rec.type(b"\n")  # save now
        rec.read_until("saved demo_0")
        assert rec.finish() == 0
    finally:
        if rec.proc.poll() is None:
            rec.proc.kill()
    with DemoDataset(out) as ds:
        demo = ds.demo(0)
    assert demo.attrs["source"] == "intervention:keyboard" and demo.interventions is not None
    took = demo.interventions.astype(bool)
    assert took.any() and not took.all() and not took[0]  # policy, then the person, then the policy
    np.testing.assert_array_equal(demo.actions[~took], demo.policy_actions[~took])
    assert (demo.actions[took, 0] == 1.0).any()  # W: +x while the person drove
    assert validate_file(out) == []
