"""The sink: DemoWriter's episodes are written by a helper process (gail_robot.data.sink), and an
episode counts as saved only once that process confirms it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np
import pytest

import gail_robot.envs  # noqa: F401  (registers the project's tasks)
from gail_robot.data import DemoDataset, DemoWriter
from gail_robot.data.episode import write_episode
from gail_robot.data.validate import validate_file
from gail_robot.envs.physics import get_physics_state
from gail_robot.errors import UserError


def _episode(writer: DemoWriter, env: gym.Env[Any, Any], seed: int, steps: int = 60) -> str:
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    writer.start_episode(seed=seed, source="random")
    for _ in range(steps):
        state = get_physics_state(env)
        action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        writer.add_step(obs, action, reward, next_obs, terminated, truncated, state)
        obs = next_obs
        if terminated or truncated:
            break
    return writer.end_episode(success=False, final_state=get_physics_state(env), cut=True)


def _stored(path: Path) -> dict[str, Any]:
    """Every dataset of every demo: raw chunk bytes for chunked ones, values otherwise; and attrs."""
    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                if obj.chunks is not None:
                    n = obj.id.get_num_chunks()
                    offsets = [obj.id.get_chunk_info(i).chunk_offset for i in range(n)]
                    chunks = [obj.id.read_direct_chunk(offset) for offset in offsets]
                    out[name] = (obj.shape, obj.dtype.str, chunks)
                else:
                    out[name] = (obj.shape, obj.dtype.str, obj[()].tobytes())
            out[name + "@attrs"] = {k: str(v) for k, v in obj.attrs.items()}

        f["data"].visititems(visit)
    return out


@pytest.fixture
def walker() -> gym.Env[Any, Any]:
    # no early termination: 1000-step episodes fill whole chunks and end in partial ones
    env = gym.make("Walker2d-v5", terminate_when_unhealthy=False)
    yield env
    env.close()


def test_publishing_process_writes_the_bytes_write_episode_writes(
    tmp_path: Path, walker: gym.Env[Any, Any]
) -> None:
    """The helper's file holds exactly what write_episode writes in this process (chunks byte for byte)."""
    with DemoWriter(tmp_path / "process.hdf5", walker, durable=False) as writer:
        for seed in range(3):
            _episode(writer, walker, seed, steps=1000)
    with DemoDataset(tmp_path / "process.hdf5") as ds, h5py.File(tmp_path / "inline.hdf5", "w") as f:
        f.create_group("data").attrs["total"] = 0
        for demo in ds:
            write_episode(f["data"], demo.name, demo.episode())
    inline, process = _stored(tmp_path / "inline.hdf5"), _stored(tmp_path / "process.hdf5")
    assert inline.keys() == process.keys()
    assert any(len(v[2]) > 1 for k, v in inline.items() if isinstance(v, tuple) and isinstance(v[2], list))
    for key in inline:
        assert inline[key] == process[key], key
    assert validate_file(tmp_path / "process.hdf5") == []


def test_end_episode_hands_over_and_flush_publishes(tmp_path: Path, walker: gym.Env[Any, Any]) -> None:
    path = tmp_path / "demos.hdf5"
    with DemoWriter(path, walker) as writer:
        assert _episode(writer, walker, 0) == "demo_0"
        assert writer.saved + writer.pending == ["demo_0"]  # handed over; saved once confirmed
        writer.flush()
        assert writer.saved == ["demo_0"] and writer.pending == []
        with DemoDataset(path) as ds:  # a reader while the writer goes on
            assert ds.demo_names == ["demo_0"]
            assert _episode(writer, walker, 1) == "demo_1"
            writer.flush()
            assert ds.demo_names == ["demo_0"]  # its open file never changes
        assert writer.saved == ["demo_0", "demo_1"]
    with DemoDataset(path) as ds:
        assert ds.demo_names == ["demo_0", "demo_1"]
    assert [p.name for p in tmp_path.iterdir()] == ["demos.hdf5"]


def test_masks_written_between_helper_episodes(tmp_path: Path, walker: gym.Env[Any, Any]) -> None:
    path = tmp_path / "demos.hdf5"
    with DemoWriter(path, walker) as writer:
        for seed in range(2):
            _episode(writer, walker, seed)
        writer.write_masks({"train": ["demo_0"], "valid": ["demo_1"]})
        for seed in range(2, 4):
            _episode(writer, walker, seed)
        writer.write_masks({"train": ["demo_0", "demo_2"], "valid": ["demo_1", "demo_3"]})
        _episode(writer, walker, 4)
    assert validate_file(path) == []
    with DemoDataset(path) as ds:
        assert ds.demo_names == [f"demo_{i}" for i in range(5)]
        assert ds.masks() == {"train": ["demo_0", "demo_2"], "valid": ["demo_1", "demo_3"]}
    assert [p.name for p in tmp_path.iterdir()] == ["demos.hdf5"]


# Records two episodes and kills itself the moment the second one is handed over.
KILLED_AFTER_HANDOVER = r"""
import os, signal, sys
import gymnasium as gym
sys.path.insert(0, sys.argv[2])
from test_data_publish_process import _episode
from gail_robot.data import DemoWriter
env = gym.make("Walker2d-v5")
writer = DemoWriter(sys.argv[1], env).open()
_episode(writer, env, 0, steps=300)
_episode(writer, env, 1, steps=300)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_episode_handed_over_is_saved_when_the_recorder_is_killed(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "demos.hdf5"
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:  # a file, not a pipe: run() returns when the recorder dies
        proc = subprocess.run(
            [sys.executable, "-c", KILLED_AFTER_HANDOVER, str(path), str(Path(__file__).parent)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            timeout=120,
        )
    assert proc.returncode == -9, log.read_text()
    # a new writer at once: it waits for the dead recorder's helper, then appends after both demos
    with DemoWriter(path, gym.make("Walker2d-v5")) as writer:
        assert writer.next_demo_name() == "demo_2"
    assert validate_file(path) == []
    with DemoDataset(path) as ds:
        assert ds.demo_names == ["demo_0", "demo_1"]
    assert [p.name for p in path.parent.iterdir()] == ["demos.hdf5"]


def test_failed_publish_names_the_lost_demos_and_keeps_the_file(
    tmp_path: Path, walker: gym.Env[Any, Any]
) -> None:
    path = tmp_path / "demos.hdf5"
    writer = DemoWriter(path, walker).open()
    _episode(writer, walker, 0)
    writer.flush()
    writer._next_index = 0  # the next demo collides with demo_0: the helper's transaction fails
    _episode(writer, walker, 1)
    lost = r"demo_0 exists already; demo_0 is saved, demo_0 was not$"
    with pytest.raises(UserError, match=lost):
        writer.flush()
    writer.close()  # the failure was reported: not raised again
    assert validate_file(path) == []
    with DemoDataset(path) as ds:
        assert ds.demo_names == ["demo_0"] and ds.lengths == [60]
