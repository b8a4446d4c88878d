"""``gail-robot data info|validate|replay|convert|merge|split`` and their one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np
import pytest
from cli_runner import one_line_error, run_cli

import gail_robot.envs  # noqa: F401
from gail_robot.data import DemoDataset, DemoWriter
from gail_robot.data.convert import convert
from gail_robot.data.replay import replay_demo
from gail_robot.data.validate import validate_file
from gail_robot.envs.physics import get_physics_state
from gail_robot.errors import UserError


def make_demos(
    path: Path, env_id: str = "Hopper-v5", episodes: int = 3, seed: int = 0, **kwargs: Any
) -> None:
    env = gym.make(env_id, **kwargs)
    rng = np.random.default_rng(seed)
    with DemoWriter(path, env, durable=False) as writer:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            writer.start_episode(seed=seed + ep, source="random")
            for _ in range(30):
                state = get_physics_state(env)
                action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
                next_obs, reward, terminated, truncated, _ = env.step(action)
                writer.add_step(obs, action, reward, next_obs, terminated, truncated, state)
                obs = next_obs
                if terminated or truncated:
                    break
            cut = not (terminated or truncated)
            writer.end_episode(success=False, final_state=get_physics_state(env), cut=cut)
    env.close()


@pytest.fixture(scope="module")
def hopper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hopper") / "hopper.hdf5"
    make_demos(path)
    return path


def assert_same_demos(a: Path, b: Path) -> None:
    da, db = DemoDataset(a), DemoDataset(b)
    assert da.env_id == db.env_id and da.demo_names == db.demo_names
    for x, y in zip(da, db, strict=True):
        for key in x.obs:
            np.testing.assert_array_equal(x.obs[key], y.obs[key])
            np.testing.assert_array_equal(x.next_obs[key], y.next_obs[key])
        for field in ("actions", "rewards", "terminated", "truncated", "states", "final_state"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field), err_msg=field)
        assert x.attrs["seed"] == y.attrs["seed"] and x.success == y.success


def test_info_summarises_the_file(hopper: Path) -> None:
    result = run_cli("data", "info", str(hopper), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    ds = DemoDataset(hopper)
    assert info["env_id"] == "Hopper-v5" and info["demos"] == 3 and info["steps"] == ds.num_steps
    assert info["observation_space"] == "Box(11,) float64" and info["action_space"] == "Box(3,) float32"
    assert info["sources"] == {"random": 3} and info["state_size"] == 58
    table = run_cli("data", "info", str(hopper))
    assert "success rate" in table.stdout and "Hopper-v5" in table.stdout


def test_validate_lists_every_problem(hopper: Path, tmp_path: Path) -> None:
    ok = run_cli("data", "validate", str(hopper))
    assert ok.returncode == 0 and "valid" in ok.stdout
    broken = tmp_path / "broken.hdf5"
    broken.write_bytes(hopper.read_bytes())
    with h5py.File(broken, "r+") as f:
        actions = f["data/demo_0/actions"][()]
        actions[3, 1] = np.nan
        del f["data/demo_0/actions"]
        f["data/demo_0/actions"] = actions
        del f["data/demo_1/next_obs"]
        f["data/demo_2/terminated"][0] = True
        f["data"].attrs["total"] = 1
    problems = validate_file(broken)
    assert "demo_0: actions contain NaN/inf (first at step 3)" in problems
    assert "demo_1: missing group next_obs" in problems
    assert "demo_2: episode ends (terminated/truncated) before its last step, at step 0" in problems
    assert "demo_2: dones differ from terminated | truncated" in problems
    assert any(p.startswith("/data: attribute total is 1") for p in problems)
    result = run_cli("data", "validate", str(broken))
    assert result.returncode == 1
    assert len(result.stdout.strip().splitlines()) == len(problems)
    assert "Traceback" not in result.stderr


def test_bad_input_is_one_clear_line(hopper: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    assert one_line_error(run_cli("data", "info", str(tmp_path / "notes.txt"))).endswith(
        "notes.txt: not an HDF5 file"
    )
    cut = tmp_path / "cut.hdf5"
    cut.write_bytes(hopper.read_bytes()[:5000])
    assert "truncated or damaged HDF5 file" in one_line_error(run_cli("data", "validate", str(cut)))
    future = tmp_path / "future.hdf5"
    future.write_bytes(hopper.read_bytes())
    with h5py.File(future, "r+") as f:
        f["data"].attrs["format_version"] = 7
    assert "format_version 7 is not supported (this gail_robot reads versions 1, 2)" in one_line_error(
        run_cli("data", "info", str(future))
    )
    assert "no demo 'demo_9'" in one_line_error(run_cli("data", "replay", str(hopper), "--demo", "9"))
    assert "no such file" in one_line_error(run_cli("data", "split", str(tmp_path / "missing.hdf5")))


def test_replay_from_states_is_exact_and_open_loop_reports_divergence(hopper: Path, tmp_path: Path) -> None:
    ds = DemoDataset(hopper)
    states = replay_demo(ds, 1, "states")
    assert states.steps == ds.lengths[1]
    assert states.max_state_error == 0.0 and states.max_obs_error == 0.0
    actions = replay_demo(ds, "demo_1", "actions")
    assert actions.max_qpos_error < 1e-9  # MuJoCo is deterministic: open loop from state 0 reproduces it
    video = tmp_path / "replay.mp4"
    result = run_cli(
        "data",
        "replay",
        str(hopper),
        "--demo",
        "2",
        "--mode",
        "actions",
        "--video",
        str(video),
        "--width",
        "160",
        "--height",
        "120",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["frames"] == ds.lengths[2] + 1 and video.stat().st_size > 1000
    import imageio_ffmpeg

    assert imageio_ffmpeg.count_frames_and_secs(str(video))[0] == out["frames"]
    reader = imageio_ffmpeg.read_frames(str(video))
    try:
        meta = next(reader)
        frame = np.frombuffer(next(reader), np.uint8).reshape(meta["size"][1], meta["size"][0], 3)
    finally:
        reader.close()  # stops ffmpeg and closes its pipes
    assert meta["size"] == (160, 120) and frame.std() > 5  # a rendered scene, not a blank frame


def test_replay_detects_a_tampered_recording(hopper: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered.hdf5"
    tampered.write_bytes(hopper.read_bytes())
    with h5py.File(tampered, "r+") as f:
        actions = f["data/demo_0/actions"][()]
        actions[5:] = -actions[5:]
        del f["data/demo_0/actions"]
        f["data/demo_0/actions"] = actions
    result = replay_demo(DemoDataset(tampered), 0, "states")
    assert result.max_state_error > 1e-3


@pytest.mark.parametrize("fmt", ["robomimic", "npz"])
def test_convert_round_trip_preserves_every_step(hopper: Path, tmp_path: Path, fmt: str) -> None:
    from gail_robot.data.edit import split

    src = tmp_path / "src.hdf5"
    src.write_bytes(hopper.read_bytes())
    split(src, 0.34, seed=0)
    out = tmp_path / ("out.npz" if fmt == "npz" else "out_robomimic.hdf5")
    result = run_cli("data", "convert", str(src), "--to", fmt, "--out", str(out))
    assert result.returncode == 0, result.stderr
    back = tmp_path / "back.hdf5"
    assert convert(str(out), str(back)) == (fmt, "gail_robot", 3)
    assert_same_demos(src, back)
    assert DemoDataset(back).masks() == DemoDataset(src).masks()
    assert validate_file(back) == []
    assert "exists already" in one_line_error(
        run_cli("data", "convert", str(src), "--to", fmt, "--out", str(out))
    )


def test_robomimic_export_is_readable_as_robomimic_layout(hopper: Path, tmp_path: Path) -> None:
    out = tmp_path / "rm.hdf5"
    convert(str(hopper), str(out), to="robomimic")
    with h5py.File(out, "r") as f:
        assert "format" not in f["data"].attrs
        env_args = json.loads(f["data"].attrs["env_args"])
        assert env_args["env_name"] == "Hopper-v5"
        demo = f["data/demo_0"]
        n = demo.attrs["num_samples"]
        for key in ("actions", "rewards", "dones", "states", "obs/state", "next_obs/state"):
            assert demo[key].shape[0] == n
    with pytest.raises(UserError, match="robomimic file"):
        DemoDataset(out)


def test_import_of_a_plain_robomimic_file(tmp_path: Path) -> None:
    """A file laid out by robomimic itself: no terminations, no final state, no spaces."""
    path = tmp_path / "robomimic.hdf5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1, "env_kwargs": {}})
        lengths = [7, 5]
        data.attrs["total"] = sum(lengths)
        for i, n in enumerate(lengths):
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = n
            g["actions"] = rng.uniform(-1, 1, (n, 7))
            g["rewards"] = np.zeros(n)
            g["dones"] = np.r_[np.zeros(n - 1), 1].astype(np.int64)
            g["states"] = rng.normal(size=(n, 32))
            g["obs/robot0_eef_pos"] = rng.normal(size=(n, 3))
            g["obs/object"] = rng.normal(size=(n, 10))
            g["next_obs/robot0_eef_pos"] = rng.normal(size=(n, 3))
            g["next_obs/object"] = rng.normal(size=(n, 10))
    out = tmp_path / "ours.hdf5"
    result = run_cli("data", "convert", str(path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    ds = DemoDataset(out)
    assert ds.env_id == "Lift" and ds.lengths == [7, 5] and ds.obs_keys == ["object", "robot0_eef_pos"]
    demo = ds.demo(0)
    assert demo.terminated.tolist() == [False] * 6 + [True] and not demo.truncated.any()
    assert ds.transitions().obs.shape == (12, 13)
    assert validate_file(out) == []


def test_minari_round_trip_preserves_every_step(hopper: Path, tmp_path: Path) -> None:
    pytest.importorskip("minari")
    root = tmp_path / "minari"
    result = run_cli(
        "data",
        "convert",
        str(hopper),
        "--to",
        "minari",
        "--out",
        "gail_robot/hopper-test-v0",
        "--minari-root",
        str(root),
    )
    assert result.returncode == 0, result.stderr
    back = tmp_path / "back.hdf5"
    convert("gail_robot/hopper-test-v0", str(back), source_format="minari", minari_root=str(root))
    assert_same_demos(hopper, back)
    assert validate_file(back) == []
    import minari

    dataset = minari.load_dataset("gail_robot/hopper-test-v0")
    episode = next(dataset.iterate_episodes())
    assert len(episode.observations) == len(episode.actions) + 1  # Minari's N + 1 observations


def test_minari_missing_gives_install_hint(
    hopper: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "minari", None)  # import minari -> ImportError
    with pytest.raises(UserError, match=r"pip install 'gail-robot\[minari\]'"):
        convert(str(hopper), "gail_robot/x-v0", to="minari")


def test_merge_and_split(hopper: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.hdf5"
    make_demos(other, episodes=2, seed=50)
    merged = tmp_path / "merged.hdf5"
    result = run_cli("data", "merge", str(hopper), str(other), "--out", str(merged))
    assert result.returncode == 0, result.stderr
    ds = DemoDataset(merged)
    assert ds.demo_names == [f"demo_{i}" for i in range(5)]
    np.testing.assert_array_equal(ds.demo(3).actions, DemoDataset(other).demo(0).actions)
    assert validate_file(merged) == []
    split_result = run_cli("data", "split", str(merged), "--valid", "0.4", "--seed", "3")
    assert split_result.returncode == 0, split_result.stderr
    masks = DemoDataset(merged).masks()
    assert len(masks["valid"]) == 2 and len(masks["train"]) == 3
    assert sorted(masks["train"] + masks["valid"], key=lambda n: int(n[5:])) == ds.demo_names
    assert validate_file(merged) == []
    # different env: refused, nothing written
    pendulum = tmp_path / "pendulum.hdf5"
    make_demos(pendulum, "InvertedPendulum-v5", episodes=1)
    line = one_line_error(
        run_cli("data", "merge", str(hopper), str(pendulum), "--out", str(tmp_path / "bad.hdf5"))
    )
    assert "env 'InvertedPendulum-v5' differs from 'Hopper-v5'" in line
    assert not (tmp_path / "bad.hdf5").exists()
    # same env, other kwargs (observation shape differs): refused
    wide = tmp_path / "wide.hdf5"
    make_demos(wide, episodes=1, exclude_current_positions_from_observation=False)
    line = one_line_error(
        run_cli("data", "merge", str(hopper), str(wide), "--out", str(tmp_path / "bad.hdf5"))
    )
    assert "observation space Box(12,) float64 differs from Box(11,) float64" in line
