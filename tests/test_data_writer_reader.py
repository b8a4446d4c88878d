"""DemoWriter and DemoDataset: schema v1 on disk, transitions, appends, locks, bad input.

See docs/DESIGN.md §3.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np
import pytest
from process_hooks import in_every_new_process

import gail_robot.envs  # noqa: F401  (registers the project's tasks)
from gail_robot.data import FORMAT, FORMAT_VERSION, DemoDataset, DemoWriter, Transitions, transaction
from gail_robot.data.episode import Episode, EpisodeBuffer, write_episode
from gail_robot.data.transaction import FileLock, Publisher
from gail_robot.data.validate import validate_file
from gail_robot.envs.physics import get_physics_state, model_xml
from gail_robot.errors import UserError


def record_random(
    path: Path,
    env: gym.Env[Any, Any],
    episodes: int,
    seed: int = 0,
    mode: str = "a",
    max_steps: int | None = None,
) -> list[dict[str, Any]]:
    """Record random-action episodes; return what was fed to the writer, per episode."""
    fed = []
    rng = np.random.default_rng(seed)
    with DemoWriter(path, env, mode=mode, durable=False) as writer:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            writer.start_episode(seed=seed + ep, source="random", model_file=model_xml(env))
            steps: dict[str, list[Any]] = {
                "obs": [],
                "actions": [],
                "next_obs": [],
                "terminated": [],
                "states": [],
            }
            while True:
                state = get_physics_state(env)
                action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
                next_obs, reward, terminated, truncated, _ = env.step(action)
                writer.add_step(obs, action, reward, next_obs, terminated, truncated, state)
                for key, value in (
                    ("obs", obs),
                    ("actions", action),
                    ("next_obs", next_obs),
                    ("terminated", terminated),
                    ("states", state),
                ):
                    steps[key].append(value)
                obs = next_obs
                cut = max_steps is not None and len(steps["actions"]) >= max_steps
                if terminated or truncated or cut:
                    break
            writer.end_episode(success=not terminated, final_state=get_physics_state(env), cut=cut)
            fed.append(steps)
    return fed


@pytest.fixture
def pendulum() -> gym.Env[Any, Any]:
    env = gym.make("InvertedPendulum-v5")
    yield env
    env.close()


def test_schema_v1_layout_and_attributes(tmp_path: Path, pendulum: gym.Env[Any, Any]) -> None:
    path = tmp_path / "demos.hdf5"
    fed = record_random(path, pendulum, episodes=2)
    with h5py.File(path, "r") as f:
        data = f["data"]
        assert data.attrs["format"] == FORMAT
        assert data.attrs["format_version"] == FORMAT_VERSION
        assert data.attrs["total"] == sum(len(e["actions"]) for e in fed)
        import json

        env_args = json.loads(data.attrs["env_args"])
        assert env_args["env_name"] == "InvertedPendulum-v5" and env_args["type"] == 2
        demo = data["demo_1"]
        n = len(fed[1]["actions"])
        assert demo.attrs["num_samples"] == n and demo.attrs["seed"] == 1
        assert demo.attrs["source"] == "random" and "<mujoco" in demo.attrs["model_file"]
        assert demo["actions"].dtype == np.float32 and demo["actions"].shape == (n, 1)
        assert demo["obs/state"].shape == (n, 4) and demo["next_obs/state"].shape == (n, 4)
        assert demo["states"].dtype == np.float64 and demo["final_state"].shape == demo["states"].shape[1:]
        assert demo["terminated"].dtype == bool and demo["truncated"].dtype == bool
        assert demo["dones"].dtype == np.uint8
        np.testing.assert_array_equal(demo["dones"][()], demo["terminated"][()] | demo["truncated"][()])
        assert demo["states"].compression == "gzip" and demo["states"].chunks[0] == len(fed[1]["states"])
        # exactly what was fed, through the direct-chunk path
        np.testing.assert_array_equal(demo["obs/state"][()], np.array(fed[1]["obs"]))
        np.testing.assert_array_equal(demo["next_obs/state"][()], np.array(fed[1]["next_obs"]))
        np.testing.assert_array_equal(demo["states"][()], np.array(fed[1]["states"]))
        np.testing.assert_array_equal(demo["actions"][()], np.array(fed[1]["actions"]))
    assert validate_file(path) == []


def _write(path: Path, episode: Episode) -> None:
    with h5py.File(path, "w") as f:
        f.create_group("data").attrs["total"] = 0
        write_episode(f["data"], "demo_0", episode)


def _buffer(row_shape: tuple[int, ...], dtype: Any, capacity: int = 1024) -> EpisodeBuffer:
    return EpisodeBuffer({"x": (row_shape, dtype)}, (1,), 2, capacity=capacity)


@pytest.mark.parametrize("count", [1, 5, 21, 42, 100])
def test_write_episode_chunks_by_rows_with_hdf5_filters(tmp_path: Path, count: int) -> None:
    """Datasets decode with HDF5's own gzip filter, in partial and full chunks (~64 KiB, no shuffle)."""
    rng = np.random.default_rng(count)
    rows = rng.normal(size=(count + 1, 390)).astype(np.float64)  # 3120 B/row -> 21 rows per 64 KiB chunk
    buffer = _buffer((390,), np.float64)
    for t in range(count):
        buffer.add_step(rows[t], np.zeros(1), 0.0, rows[t + 1], False, False, np.zeros(2))
    _write(tmp_path / "c.h5", buffer.finish(False, np.zeros(2)))
    with h5py.File(tmp_path / "c.h5", "r") as f:
        for part, expected in (("obs", rows[:-1]), ("next_obs", rows[1:])):
            ds = f[f"data/demo_0/{part}/x"]
            assert ds.chunks[0] == min(count, 21) and not ds.shuffle
            assert ds.compression == "gzip" and ds.compression_opts == 1
            np.testing.assert_array_equal(ds[()], expected)


@pytest.mark.parametrize("capacity", [16, 1024])
@pytest.mark.parametrize("count", [1, 20, 21, 22, 63, 100])
@pytest.mark.parametrize("detach_at", [None, 1, 20, 21, 40, 62])
def test_buffer_stores_obs_as_given_also_when_they_differ_from_next_obs(
    count: int, detach_at: int | None, capacity: int
) -> None:
    """obs are stored exactly as given, also when a caller's obs stop matching the previous next_obs
    at any step, and across the buffer's growth (capacity 16)."""
    rng = np.random.default_rng(count)
    next_rows = rng.normal(size=(count, 390))
    obs_rows = np.concatenate([rng.normal(size=(1, 390)), next_rows[:-1]])
    if detach_at is not None and detach_at < count:
        obs_rows[detach_at:] += 1.0  # from here on the caller's obs differ from next_obs[t - 1]
    buffer = _buffer((390,), np.float64, capacity)
    for t in range(count):
        # identical objects, equal copies and different rows all occur
        row = next_rows[t - 1] if t % 3 and t else obs_rows[t].copy()
        if detach_at is not None and t >= detach_at:
            row = obs_rows[t]
        buffer.add_step(row, np.zeros(1), 0.0, next_rows[t], False, False, np.zeros(2))
    episode = buffer.finish(False, np.zeros(2))
    np.testing.assert_array_equal(episode.obs["x"], obs_rows)
    np.testing.assert_array_equal(episode.next_obs["x"], next_rows)


def test_image_observations_one_frame_per_chunk(tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 255, size=(6, 8, 8, 3), dtype=np.uint8)
    buffer = _buffer((8, 8, 3), np.uint8)
    for t in range(5):
        buffer.add_step(frames[t], np.zeros(1), 0.0, frames[t + 1], False, False, np.zeros(2))
    _write(tmp_path / "i.h5", buffer.finish(False, np.zeros(2)))
    with h5py.File(tmp_path / "i.h5", "r") as f:
        assert f["data/demo_0/obs/x"].chunks == f["data/demo_0/next_obs/x"].chunks == (1, 8, 8, 3)
        np.testing.assert_array_equal(f["data/demo_0/obs/x"][()], frames[:5])
        np.testing.assert_array_equal(f["data/demo_0/next_obs/x"][()], frames[1:])


def test_rejected_step_leaves_the_buffer_unchanged() -> None:
    buffer = _buffer((3,), np.float64)
    buffer.add_step(np.zeros(3), np.ones(1), 1.0, np.ones(3), False, False, np.zeros(2))
    bad_steps: list[tuple[Any, ...]] = [
        (np.zeros(3), np.array([np.inf]), 0.0, np.ones(3), False, False, np.zeros(2)),
        (np.zeros(3), np.zeros(2), 0.0, np.ones(3), False, False, np.zeros(2)),
        (np.zeros(4), np.zeros(1), 0.0, np.ones(3), False, False, np.zeros(2)),
        (np.zeros(3), np.zeros(1), 0.0, np.ones(2), False, False, np.zeros(2)),
        (np.zeros(3), np.zeros(1), 0.0, np.ones(3), False, False, np.zeros(3)),
        ({"y": np.zeros(3)}, np.zeros(1), 0.0, np.ones(3), False, False, np.zeros(2)),
    ]
    for step in bad_steps:
        with pytest.raises(ValueError):
            buffer.add_step(*step)
        assert len(buffer) == 1
    buffer.add_step(np.ones(3), np.full(1, 2.0), 2.0, np.full(3, 2.0), True, False, np.ones(2))
    with pytest.raises(ValueError, match="step 2 follows a terminal step"):
        buffer.add_step(np.ones(3), np.zeros(1), 0.0, np.ones(3), False, False, np.zeros(2))
    episode = buffer.finish(True, np.ones(2))
    assert len(episode) == 2 and episode.episode_return == 3.0
    np.testing.assert_array_equal(episode.actions, [[1.0], [2.0]])
    np.testing.assert_array_equal(episode.terminated, [False, True])


def test_episode_checks_its_arrays() -> None:
    good: dict[str, Any] = {
        "obs": {"x": np.zeros((3, 2))},
        "next_obs": {"x": np.zeros((3, 2))},
        "actions": np.zeros((3, 1)),
        "rewards": np.zeros(3),
        "terminated": np.array([False, False, True]),
        "truncated": np.zeros(3, bool),
        "states": np.zeros((3, 4)),
        "final_state": np.zeros(4),
    }
    episode = Episode(**good)
    assert episode.actions.dtype == np.float32 and episode.rewards.dtype == np.float32
    for change, message in (
        ({"rewards": np.zeros(2)}, "rewards has 2 rows, actions have 3"),
        ({"next_obs": {"y": np.zeros((3, 2))}}, "obs keys"),
        ({"next_obs": {"x": np.zeros((3, 3))}}, r"next_obs\['x'\] \(3, 3\)"),
        ({"final_state": np.zeros(5)}, "final_state has shape"),
        ({"terminated": np.array([True, False, True])}, "before its last step, at step 0"),
        ({"actions": np.zeros((0, 1))}, "empty episode"),
    ):
        with pytest.raises(ValueError, match=message):
            Episode(**{**good, **change})


def test_writer_stores_obs_that_are_not_the_previous_next_obs(
    tmp_path: Path, pendulum: gym.Env[Any, Any]
) -> None:
    """A caller may pass other obs than the last next_obs (noise, a re-read sensor): stored as given."""
    path = tmp_path / "demos.hdf5"
    rng = np.random.default_rng(0)
    fed_obs, fed_next = [], []
    with DemoWriter(path, pendulum, durable=False) as writer:
        obs, _ = pendulum.reset(seed=0)
        writer.start_episode(seed=0)
        for t in range(60):
            state = get_physics_state(pendulum)
            next_obs, reward, _, _, _ = pendulum.step(np.zeros(1, np.float32))
            given = obs.copy() if t < 30 else obs + rng.normal(size=obs.shape).astype(obs.dtype)
            writer.add_step(given, np.zeros(1, np.float32), reward, next_obs, False, t == 59, state)
            fed_obs.append(given)
            fed_next.append(next_obs)
            obs = next_obs
        writer.end_episode(False, get_physics_state(pendulum))
    demo = DemoDataset(path).demo(0)
    np.testing.assert_array_equal(demo.obs["state"], np.array(fed_obs))
    np.testing.assert_array_equal(demo.next_obs["state"], np.array(fed_next))


def test_demos_listed_in_numeric_order_and_transitions(tmp_path: Path, pendulum: gym.Env[Any, Any]) -> None:
    path = tmp_path / "demos.hdf5"
    fed = record_random(path, pendulum, episodes=12)
    ds = DemoDataset(path)
    assert ds.demo_names == [f"demo_{i}" for i in range(12)]  # demo_10 after demo_9
    assert ds.env_id == "InvertedPendulum-v5" and ds.env_kwargs == {}
    assert ds.observation_space.shape == (4,) and ds.action_space.shape == (1,)
    t = ds.transitions()
    assert isinstance(t, Transitions)
    m = sum(len(e["actions"]) for e in fed)
    assert t.obs.shape == (m, 4) and t.next_obs.shape == (m, 4) and t.actions.shape == (m, 1)
    assert t.obs.dtype == t.next_obs.dtype == t.actions.dtype == np.float32 and t.terminated.dtype == bool
    np.testing.assert_array_equal(t.obs, np.concatenate([np.array(e["obs"], np.float32) for e in fed]))
    np.testing.assert_array_equal(t.terminated, np.concatenate([e["terminated"] for e in fed]))
    assert ds.transitions() is t  # read once, cached
    # every k-th pair of each demo
    t3 = ds.transitions(subsample=3)
    expected = np.concatenate([np.array(e["actions"], np.float32)[::3] for e in fed])
    np.testing.assert_array_equal(t3.actions, expected)
    t3r = ds.transitions(subsample=3, seed=1)
    assert abs(len(t3r) - len(t3)) <= len(fed)
    batch = t.sample(64, np.random.default_rng(0))
    assert len(batch) == 64 and batch.obs.shape == (64, 4)
    from_file = ds.sample_from_file(50, np.random.default_rng(0))
    assert from_file.obs.shape == (50, 4)
    # every sampled pair exists in the dataset
    pairs = {(tuple(o), tuple(a)) for o, a in zip(t.obs, t.actions, strict=True)}
    assert all((tuple(o), tuple(a)) in pairs for o, a in zip(from_file.obs, from_file.actions, strict=True))
    assert sum(len(b) for b in t.batches(100)) == m


def test_masks_select_demos(tmp_path: Path, pendulum: gym.Env[Any, Any]) -> None:
    path = tmp_path / "demos.hdf5"
    record_random(path, pendulum, episodes=4)
    with DemoWriter(path, pendulum) as writer:
        writer.write_masks({"train": ["demo_0", "demo_2", "demo_3"], "valid": ["demo_1"]})
    ds = DemoDataset(path)
    assert ds.masks() == {"train": ["demo_0", "demo_2", "demo_3"], "valid": ["demo_1"]}
    assert len(ds.transitions(mask="valid")) == ds.lengths[1]
    with pytest.raises(UserError, match="no mask 'test'"):
        ds.transitions(mask="test")


class _DictObs(gym.ObservationWrapper[Any, Any, Any]):
    """InvertedPendulum with a Dict observation: two vectors and a small camera-like image."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Dict(
            OrderedDict(
                pos=gym.spaces.Box(-np.inf, np.inf, (2,), np.float64),
                vel=gym.spaces.Box(-np.inf, np.inf, (2,), np.float64),
                cam=gym.spaces.Box(0, 255, (6, 5, 3), np.uint8),
            )
        )

    def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        cam = np.full((6, 5, 3), int(abs(observation[0]) * 1000) % 256, dtype=np.uint8)
        return {"pos": observation[:2], "vel": observation[2:], "cam": cam}


def test_dict_observations_kept_per_key_and_flattened(tmp_path: Path) -> None:
    env = _DictObs(gym.make("InvertedPendulum-v5"))
    path = tmp_path / "dict.hdf5"
    fed = record_random(path, env, episodes=2)
    with h5py.File(path, "r") as f:
        cam = f["data/demo_0/obs/cam"]
        assert cam.dtype == np.uint8 and cam.chunks == (1, 6, 5, 3)  # one frame per chunk
    ds = DemoDataset(path)
    assert ds.obs_keys == ["pos", "vel", "cam"]
    demo = ds.demo(0)
    np.testing.assert_array_equal(demo.obs["pos"], np.array([o["pos"] for o in fed[0]["obs"]]))
    t = ds.transitions()
    assert t.obs.shape[1] == 2 + 2 + 90
    first = fed[0]["obs"][0]
    np.testing.assert_array_equal(
        t.obs[0], np.concatenate([first["pos"], first["vel"], first["cam"].reshape(-1)]).astype(np.float32)
    )
    assert validate_file(path) == []
    ds.check_compatible(env)


def test_check_compatible_names_the_mismatch(tmp_path: Path, pendulum: gym.Env[Any, Any]) -> None:
    path = tmp_path / "demos.hdf5"
    record_random(path, pendulum, episodes=1)
    ds = DemoDataset(path)
    ds.check_compatible(pendulum)
    as_float32 = gym.wrappers.TransformObservation(
        gym.make("InvertedPendulum-v5"), lambda o: o.astype(np.float32), gym.spaces.Box(-np.inf, np.inf, (4,))
    )
    ds.check_compatible(as_float32)  # only the dtype differs: compatible
    with pytest.raises(UserError, match="holds demos of 'InvertedPendulum-v5', not of 'Hopper-v5'"):
        ds.check_compatible(gym.make("Hopper-v5"))
    wrapped = gym.wrappers.TransformObservation(
        gym.make("InvertedPendulum-v5"), lambda o: o[:3], gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)
    )
    with pytest.raises(
        UserError, match=r"observation space Box\(4,\) float64 differs from the env's Box\(3,\)"
    ):
        ds.check_compatible(wrapped)
    rescaled = gym.wrappers.TransformAction(
        gym.make("InvertedPendulum-v5"), lambda a: a[:1], gym.spaces.Box(-1, 1, (2,), np.float32)
    )
    with pytest.raises(UserError, match=r"action shape \(1,\) differs from the env's \(2,\)"):
        ds.check_compatible(rescaled)


def test_append_checks_env_and_continues_numbering(tmp_path: Path, pendulum: gym.Env[Any, Any]) -> None:
    path = tmp_path / "demos.hdf5"
    record_random(path, pendulum, episodes=2)
    before = DemoDataset(path).demo(1)
    record_random(path, pendulum, episodes=2, seed=10)
    with DemoWriter(path, pendulum, durable=False) as writer:
        for ep in range(3):
            obs, _ = pendulum.reset(seed=ep)
            writer.start_episode(seed=ep)
            state = get_physics_state(pendulum)
            next_obs, reward, term, trunc, _ = pendulum.step(np.zeros(1, np.float32))
            writer.add_step(obs, np.zeros(1, np.float32), reward, next_obs, term, trunc, state)
            writer.end_episode(False, get_physics_state(pendulum), cut=True)
        writer.flush()
        assert writer._sink is not None
        assert writer._sink.copies == 1  # one copy per session, then O(episode) through the spare
    ds = DemoDataset(path)
    assert ds.demo_names == [f"demo_{i}" for i in range(7)]
    np.testing.assert_array_equal(ds.demo(1).actions, before.actions)  # never overwritten
    with pytest.raises(UserError, match="cannot append: env 'Hopper-v5' differs from 'InvertedPendulum-v5'"):
        DemoWriter(path, gym.make("Hopper-v5")).open()
    with pytest.raises(UserError, match="exists already"):
        DemoWriter(path, pendulum, mode="x").open()
    assert DemoDataset(path).demo_names == ds.demo_names


def test_overwrite_replaces_only_when_the_first_episode_is_saved(
    tmp_path: Path, pendulum: gym.Env[Any, Any]
) -> None:
    path = tmp_path / "demos.hdf5"
    record_random(path, pendulum, episodes=3)
    with DemoWriter(path, pendulum, mode="w", durable=False) as writer:
        writer.start_episode()
        assert len(DemoDataset(path)) == 3  # nothing lost before a new episode is saved
        writer.discard_episode()
    assert len(DemoDataset(path)) == 3
    record_random(path, pendulum, episodes=1, mode="w")
    assert DemoDataset(path).demo_names == ["demo_0"]


def test_nan_action_is_rejected_and_saved_episodes_survive(
    tmp_path: Path, pendulum: gym.Env[Any, Any]
) -> None:
    path = tmp_path / "demos.hdf5"
    record_random(path, pendulum, episodes=2)
    obs, _ = pendulum.reset(seed=0)
    with DemoWriter(path, pendulum) as writer:
        writer.start_episode()
        with pytest.raises(ValueError, match=r"action at step 0 is not finite: \[nan\]"):
            writer.add_step(obs, np.array([np.nan]), 0.0, obs, False, False, get_physics_state(pendulum))
        with pytest.raises(ValueError, match=r"action at step 0 has shape \(2,\), expected \(1,\)"):
            writer.add_step(obs, np.zeros(2), 0.0, obs, False, False, get_physics_state(pendulum))
        with pytest.raises(ValueError, match="cannot save an empty episode"):
            writer.end_episode(True, get_physics_state(pendulum))
    assert len(DemoDataset(path)) == 2 and validate_file(path) == []


def test_second_writer_is_refused_while_the_first_holds_the_file(
    tmp_path: Path, pendulum: gym.Env[Any, Any]
) -> None:
    path = tmp_path / "demos.hdf5"
    with DemoWriter(path, pendulum):
        with pytest.raises(UserError, match="another process is writing it"):
            DemoWriter(path, pendulum).open()
    DemoWriter(path, pendulum).open().close()  # released


def test_lock_taken_when_the_holder_releases_between_open_and_flock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that lost the race to a releasing holder retries instead of refusing (a CI failure)."""
    target = tmp_path / "demos.hdf5"
    holder = FileLock(target)
    holder.acquire()
    real_flock = transaction.fcntl.flock

    def flock_while_holder_releases(fd: int, op: int) -> None:
        try:
            real_flock(fd, op)  # fails: the holder still has it
        finally:
            holder.release()  # unlinks the sidecar we opened, then closes

    monkeypatch.setattr(transaction.fcntl, "flock", flock_while_holder_releases)
    contender = FileLock(target)
    contender.acquire(orphan_wait=0.0)
    assert contender.fd is not None and contender.path.read_text() == str(os.getpid())
    contender.release()
    assert not contender.path.exists()


def test_open_readers_never_see_their_file_change(tmp_path: Path, pendulum: gym.Env[Any, Any]) -> None:
    """A reader keeps a consistent snapshot while the recorder publishes (spare fallback path)."""
    path = tmp_path / "demos.hdf5"
    record_random(path, pendulum, episodes=1)
    with DemoWriter(path, pendulum, durable=False) as writer:
        reader = h5py.File(path, "r")  # holds the current inode, which would become the spare
        snapshot = reader["data/demo_0/actions"][()]
        for ep in range(4):
            obs, _ = pendulum.reset(seed=ep)
            writer.start_episode(seed=ep)
            state = get_physics_state(pendulum)
            next_obs, reward, term, trunc, _ = pendulum.step(np.zeros(1, np.float32))
            writer.add_step(obs, np.zeros(1, np.float32), reward, next_obs, term, trunc, state)
            writer.end_episode(False, get_physics_state(pendulum), cut=True)
        writer.flush()  # all four published while the reader is open
        assert sorted(reader["data"].keys()) == ["demo_0"]
        np.testing.assert_array_equal(reader["data/demo_0/actions"][()], snapshot)
        reader.close()
        # the locked spare was rebuilt by copying instead of being edited under the reader
        assert writer._sink is not None and writer._sink.copies == 2
    assert len(DemoDataset(path)) == 5 and validate_file(path) == []
    assert not list(tmp_path.glob(".*"))  # no spare, lock or temporary left behind


def _child_reads(dataset: DemoDataset, queue: Any) -> None:
    queue.put(float(dataset.transitions().actions.sum()))


def test_dataset_reopens_per_process(tmp_path: Path, pendulum: gym.Env[Any, Any]) -> None:
    path = tmp_path / "demos.hdf5"
    record_random(path, pendulum, episodes=3)
    ds = DemoDataset(path)
    ds.demo(0)  # handle open in the parent
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._handle is None
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_reads, args=(ds, queue))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert queue.get(timeout=5) == pytest.approx(float(ds.transitions().actions.sum()))


def test_transitions_validate_their_arrays() -> None:
    obs = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=r"Transitions\.actions must be a 2-D float32 array, got float64"):
        Transitions(obs, np.zeros((3, 1)), obs, np.zeros(3, bool))
    with pytest.raises(ValueError, match=r"Transitions\.terminated has 2 rows, obs has 3"):
        Transitions(obs, np.zeros((3, 1), np.float32), obs, np.zeros(2, bool))


def test_bad_files_give_one_line_errors(tmp_path: Path, pendulum: gym.Env[Any, Any]) -> None:
    with pytest.raises(UserError, match="no such file"):
        DemoDataset(tmp_path / "missing.hdf5")
    (tmp_path / "text.hdf5").write_text("not hdf5")
    with pytest.raises(UserError, match=r"text\.hdf5: not an HDF5 file"):
        DemoDataset(tmp_path / "text.hdf5")
    good = tmp_path / "good.hdf5"
    record_random(good, pendulum, episodes=2)
    raw = good.read_bytes()
    (tmp_path / "cut.hdf5").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match=r"cut\.hdf5: truncated or damaged HDF5 file"):
        DemoDataset(tmp_path / "cut.hdf5")
    with h5py.File(tmp_path / "empty.hdf5", "w") as f:
        f.create_group("other")
    with pytest.raises(UserError, match=r"no /data group \(not a demo file\)"):
        DemoDataset(tmp_path / "empty.hdf5")
    future = tmp_path / "future.hdf5"
    future.write_bytes(raw)
    with h5py.File(future, "r+") as f:
        f["data"].attrs["format_version"] = 3  # (2 is the Discrete-action version)
    with pytest.raises(UserError, match="format_version 3 is not supported"):
        DemoDataset(future)
    with h5py.File(future, "r+") as f:
        f["data"].attrs["format_version"] = 2  # the Discrete version, with a Box action space
    with pytest.raises(UserError, match="format_version 2 does not match its Box"):
        DemoDataset(future)


NO_EXCHANGE_NO_LINKS = """
import os
from gail_robot.data import transaction

def no_links(src, dst):
    open(os.environ["NO_LINKS_MARKER"], "a").write("link refused\\n")
    raise OSError(1, "Operation not permitted")

transaction.exchange_names = lambda a, b: False
transaction.os.link = no_links
"""


def test_without_hard_links_every_episode_is_published_through_a_copy(
    tmp_path: Path, pendulum: gym.Env[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    in_every_new_process(monkeypatch, tmp_path / "hook", NO_EXCHANGE_NO_LINKS)
    monkeypatch.setenv("NO_LINKS_MARKER", str(tmp_path / "marker"))
    path = tmp_path / "demos.hdf5"
    fed = record_random(path, pendulum, episodes=4)
    assert (tmp_path / "marker").read_text().count("link refused") == 3  # every publish but the first
    ds = DemoDataset(path)
    assert len(ds) == 4 and validate_file(path) == []
    np.testing.assert_array_equal(ds.demo(3).actions, np.array(fed[3]["actions"]))


DISK_FULL_ON_COPY = """
from gail_robot.data import transaction

def disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")

transaction.shutil.copyfile = disk_full
"""


def test_write_failure_is_one_line_and_keeps_the_file(
    tmp_path: Path, pendulum: gym.Env[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = data / "demos.hdf5"
    record_random(path, pendulum, episodes=2)
    in_every_new_process(monkeypatch, tmp_path / "hook", DISK_FULL_ON_COPY)
    with pytest.raises(
        UserError,
        match=r"^cannot write .*demos\.hdf5: No space left on device; "
        r"demo_0\.\.demo_1 are saved, demo_2 was not$",
    ):
        record_random(path, pendulum, episodes=1)
    monkeypatch.undo()
    assert len(DemoDataset(path)) == 2 and validate_file(path) == []
    assert [p.name for p in data.iterdir()] == ["demos.hdf5"]


def _add(i: int, rows: np.ndarray) -> Any:
    def edit(f: h5py.File) -> None:
        f["data"].create_dataset(f"x{i}", data=rows, chunks=(16, 7), compression="gzip")
        f["data"].attrs["n"] = i

    return edit


def test_spare_catches_up_byte_for_byte(tmp_path: Path) -> None:
    """After each transaction the spare, caught up by applying the transaction again, equals the file."""
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f.create_group("data")
    publisher = Publisher(path, durable=False)
    rng = np.random.default_rng(0)
    for i in range(5):
        rows = rng.normal(size=(50 + 30 * i, 7))
        publisher.publish(_add(i, rows))
        publisher.catch_up()
        assert publisher.spare.read_bytes() == path.read_bytes()
        with h5py.File(path, "r") as f:
            assert sorted(f["data"]) == [f"x{j}" for j in range(i + 1)] and f["data"].attrs["n"] == i
            np.testing.assert_array_equal(f[f"data/x{i}"][()], rows)
    assert publisher.copies == 1  # only the first transaction copied the file
    publisher.close()
    assert not publisher.spare.exists()


def test_durable_publish_orders_its_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Durable: the new file is synced before it takes the name, and the directory is synced
    before the spare (the previously published inode) is touched again."""
    events: list[str] = []
    real_fsync_path, real_exchange = transaction.fsync_path, transaction.exchange_names
    real_apply = Publisher._apply

    def fsync_path(path: Path, directory: bool = False) -> None:
        events.append("dir-sync" if directory else "file-sync")
        real_fsync_path(path, directory)

    def exchange_names(a: Path, b: Path) -> bool:
        events.append("swap")
        return real_exchange(a, b)

    def apply(self: Publisher, fresh: bool, edits: list[Any]) -> None:
        events.append("apply")
        real_apply(self, fresh, edits)

    monkeypatch.setattr(transaction, "fsync_path", fsync_path)
    monkeypatch.setattr(transaction, "exchange_names", exchange_names)
    monkeypatch.setattr(Publisher, "_apply", apply)
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f.create_group("data")
    publisher = Publisher(path, durable=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        events.clear()
        publisher.publish(_add(i, rng.normal(size=(2000, 7))))
        assert events == ["apply", "file-sync", "swap", "dir-sync"], events
        publisher.catch_up()  # the publishing process does this while the next episode is recorded
        assert events[-1] == "apply" and publisher.spare.read_bytes() == path.read_bytes()
    publisher.close()
    with h5py.File(path, "r") as f:
        assert sorted(f["data"]) == ["x0", "x1", "x2"]
