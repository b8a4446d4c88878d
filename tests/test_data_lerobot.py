"""``gail-robot data convert --to lerobot`` / ``--from lerobot``: the LeRobotDataset v3.0 layout.

The layout is checked against LeRobot's published v3.0 format (paths, ``info.json`` keys, feature
dtypes and shapes, parquet column types, the episode table, ``tasks.parquet``, ``stats.json``);
LeRobot itself does not install here without replacing torch (datasets/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from cli_runner import one_line_error, run_cli
from test_data_tools import assert_same_demos, make_demos

from gail_robot.data import DemoDataset
from gail_robot.data.convert import convert
from gail_robot.data.lerobot import read_extras
from gail_robot.data.validate import validate_file
from gail_robot.errors import UserError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def hopper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hopper") / "hopper.hdf5"
    make_demos(path, episodes=3)
    return path


def with_interventions(src: Path, dst: Path) -> None:
    """A copy of ``src`` whose demos carry an intervention recording's optional datasets, added with
    plain h5py (as the intervention recorder stores them, docs/DESIGN.md §3): ``policy_actions``
    (N, A) float32 and ``interventions`` (N,) uint8 0/1 flags."""
    dst.write_bytes(src.read_bytes())
    rng = np.random.default_rng(1)
    with h5py.File(dst, "r+") as f:
        for name in f["data"]:
            g = f["data"][name]
            n, a = g["actions"].shape
            g["policy_actions"] = rng.uniform(-1, 1, (n, a)).astype(np.float32)
            g["interventions"] = (rng.random(n) < 0.3).astype(np.uint8)


def test_round_trip_is_bit_exact_with_masks_and_attributes(hopper: Path, tmp_path: Path) -> None:
    from gail_robot.data.edit import split

    src = tmp_path / "src.hdf5"
    src.write_bytes(hopper.read_bytes())
    split(src, 0.34, seed=0)
    out = tmp_path / "lr"
    result = run_cli("data", "convert", str(src), "--to", "lerobot", "--out", str(out))
    assert result.returncode == 0, result.stderr
    back = tmp_path / "back.hdf5"
    result = run_cli("data", "convert", str(out), "--out", str(back))  # detected: a directory
    assert result.returncode == 0, result.stderr
    assert "(lerobot) ->" in result.stdout
    assert_same_demos(src, back)
    a, b = DemoDataset(src), DemoDataset(back)
    assert b.masks() == a.masks() and b.meta.mismatch(a.meta) is None
    assert b.env_kwargs == a.env_kwargs and b.meta.state_size == a.meta.state_size
    for x, y in zip(a, b, strict=True):
        assert y.attrs["source"] == x.attrs["source"] and y.attrs["return"] == x.attrs["return"]
        assert y.obs["state"].dtype == x.obs["state"].dtype == np.float64
    assert read_extras(back, b.demo_names) == {n: {} for n in a.demo_names}
    assert validate_file(back) == []
    with pytest.raises(UserError, match="exists already"):
        convert(str(src), str(out), to="lerobot")
    with pytest.raises(UserError, match="goes with --to lerobot"):
        convert(str(src), str(tmp_path / "x.npz"), to="npz", task="t")
    # --overwrite replaces the directory as a whole (built beside it, then renamed into place)
    (out / "stale.txt").write_text("old")
    convert(str(src), str(out), to="lerobot", overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "meta/info.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_layout_follows_the_published_v3_format(hopper: Path, tmp_path: Path) -> None:
    out = tmp_path / "lr"
    assert convert(str(hopper), str(out), to="lerobot", task="hop forward") == ("gail_robot", "lerobot", 3)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        "data/chunk-000/file-000.parquet",
        "meta/episodes/chunk-000/file-000.parquet",
        "meta/gail_robot.json",
        "meta/info.json",
        "meta/stats.json",
        "meta/tasks.parquet",
    ]
    info = json.loads((out / "meta/info.json").read_text())
    ds = DemoDataset(hopper)
    n_frames = ds.num_steps
    assert info["codebase_version"] == "v3.0"
    assert info["fps"] == 125  # Hopper-v5: dt = 4 * 0.002 s
    assert info["total_episodes"] == 3 and info["total_frames"] == n_frames and info["total_tasks"] == 1
    assert info["splits"] == {"train": "0:3"} and info["video_path"] is None
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["chunks_size"] == 1000 and info["data_files_size_in_mb"] == 100
    feats = info["features"]
    assert feats["observation.state"] == {"dtype": "float64", "shape": [11], "names": None}
    assert feats["action"] == {"dtype": "float32", "shape": [3], "names": None}
    assert feats["physics_state"]["shape"] == [ds.meta.state_size]
    for name, dtype in [
        ("next.reward", "float32"),
        ("next.done", "bool"),
        ("timestamp", "float32"),
        ("frame_index", "int64"),
        ("episode_index", "int64"),
        ("index", "int64"),
        ("task_index", "int64"),
    ]:
        assert feats[name] == {"dtype": dtype, "shape": [1], "names": None}, name

    # frames: HF datasets' Sequence(length=K) is a fixed-size list, shape (1,) a plain column
    data = pq.ParquetFile(out / "data/chunk-000/file-000.parquet")
    assert data.metadata.num_row_groups == 3  # one per episode, as LeRobot writes them
    table = data.read()
    assert sorted(table.column_names) == sorted(feats)
    assert table.schema.field("observation.state").type == pa.list_(pa.float64(), 11)
    assert table.schema.field("action").type == pa.list_(pa.float32(), 3)
    assert table.schema.field("next.done").type == pa.bool_()
    lengths = ds.lengths
    ep = table.column("episode_index").to_numpy()
    frame = table.column("frame_index").to_numpy()
    np.testing.assert_array_equal(ep, np.repeat(np.arange(3), lengths))
    np.testing.assert_array_equal(frame, np.concatenate([np.arange(n) for n in lengths]))
    np.testing.assert_array_equal(table.column("index").to_numpy(), np.arange(n_frames))
    np.testing.assert_array_equal(table.column("timestamp").to_numpy(), (frame / 125).astype(np.float32))
    demo1 = ds.demo(1)
    rows = slice(lengths[0], lengths[0] + lengths[1])
    got = np.stack(table.column("observation.state").to_numpy(zero_copy_only=False)[rows])
    np.testing.assert_array_equal(got, demo1.obs["state"])
    done = table.column("next.done").to_numpy(zero_copy_only=False)[rows]
    np.testing.assert_array_equal(done, demo1.terminated | demo1.truncated)

    # the episode table: row ranges into the frames, the task, per-episode stats
    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    starts = np.concatenate([[0], np.cumsum(lengths)])
    for i, row in enumerate(episodes):
        assert row["episode_index"] == i and row["length"] == lengths[i] and row["tasks"] == ["hop forward"]
        assert (row["dataset_from_index"], row["dataset_to_index"]) == (starts[i], starts[i + 1])
        assert (row["data/chunk_index"], row["data/file_index"]) == (0, 0)
        assert row["meta/episodes/chunk_index"] == 0 and row["meta/episodes/file_index"] == 0
        assert row["gail_robot/demo_name"] == f"demo_{i}"
        assert row["stats/action/count"] == [lengths[i]]
    np.testing.assert_allclose(episodes[1]["stats/action/max"], demo1.actions.max(axis=0))

    # tasks.parquet as LeRobot reads it: pandas, the task string as the index
    pd = pytest.importorskip("pandas")
    tasks = pd.read_parquet(out / "meta/tasks.parquet")
    assert tasks.index.name == "task" and tasks.loc["hop forward", "task_index"] == 0

    # stats.json: hand-checkable numbers over all frames
    stats = json.loads((out / "meta/stats.json").read_text())
    actions = np.concatenate([d.actions for d in ds]).astype(np.float64)
    np.testing.assert_allclose(stats["action"]["mean"], actions.mean(axis=0))
    np.testing.assert_allclose(stats["action"]["std"], actions.std(axis=0))
    np.testing.assert_allclose(stats["action"]["q50"], np.median(actions, axis=0))
    assert stats["index"]["min"] == [0] and stats["index"]["max"] == [n_frames - 1]
    assert stats["action"]["count"] == [n_frames]
    assert set(stats["action"]) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}


def test_intervention_datasets_travel_as_extra_features(hopper: Path, tmp_path: Path) -> None:
    src = tmp_path / "interv.hdf5"
    with_interventions(hopper, src)
    names = DemoDataset(src).demo_names
    orig = read_extras(src, names)
    assert sorted(orig["demo_0"]) == ["interventions", "policy_actions"]
    out = tmp_path / "lr"
    convert(str(src), str(out), to="lerobot")
    feats = json.loads((out / "meta/info.json").read_text())["features"]
    assert feats["interventions"] == {"dtype": "uint8", "shape": [1], "names": None}
    assert feats["policy_actions"] == {"dtype": "float32", "shape": [3], "names": None}
    table = pq.read_table(out / "data/chunk-000/file-000.parquet")
    np.testing.assert_array_equal(
        table.column("interventions").to_numpy(zero_copy_only=False),
        np.concatenate([orig[n]["interventions"] for n in names]),
    )
    back = tmp_path / "back.hdf5"
    convert(str(out), str(back))
    assert_same_demos(src, back)
    got = read_extras(back, names)
    for n in names:
        assert sorted(got[n]) == sorted(orig[n])
        for key, values in orig[n].items():
            assert got[n][key].dtype == values.dtype
            np.testing.assert_array_equal(got[n][key], values)
    assert validate_file(back) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.hdf5", "interv.hdf5", "lr"]


def test_arm_task_fps_and_a_dict_free_box_observation(tmp_path: Path) -> None:
    src = tmp_path / "reach.hdf5"
    make_demos(src, env_id="gail_robot/ArmReach-v0", episodes=2)
    out = tmp_path / "lr"
    convert(str(src), str(out), to="lerobot")
    info = json.loads((out / "meta/info.json").read_text())
    assert info["fps"] == 20  # 20 Hz control (README: manipulation tasks)
    side = json.loads((out / "meta/gail_robot.json").read_text())
    assert side["control_dt"] == pytest.approx(0.05)
    assert side["env_id"] == "gail_robot/ArmReach-v0"
    back = tmp_path / "back.hdf5"
    convert(str(out), str(back))
    assert_same_demos(src, back)


def write_foreign(root: Path, with_state: bool = True, version: str = "v3.0") -> None:
    """A small dataset laid out as LeRobot writes one (no meta/gail_robot.json): 2 episodes of 4 and
    3 frames, a camera stored as video, HIL-SERL-style complementary info."""
    features = {
        "observation.images.front": {"dtype": "video", "shape": [8, 8, 3], "names": ["h", "w", "c"]},
        "action": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
        "complementary_info.is_intervention": {"dtype": "float32", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    if with_state:
        features["observation.state"] = {"dtype": "float32", "shape": [3], "names": None}
    (root / "meta").mkdir(parents=True)
    info = {"codebase_version": version, "fps": 10, "robot_type": "so100", "features": features}
    (root / "meta/info.json").write_text(json.dumps(info))
    lengths = [4, 3]
    n = sum(lengths)
    state = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    cols = {
        "action": pa.FixedSizeListArray.from_arrays(pa.array(np.linspace(-1, 1, 2 * n, dtype=np.float32)), 2),
        "next.reward": pa.array(np.arange(n, dtype=np.float32)),
        "next.done": pa.array([False, False, False, True, False, False, False]),
        "complementary_info.is_intervention": pa.array(np.array([0, 1, 1, 0, 0, 0, 1], np.float32)),
        "timestamp": pa.array(np.array([0, 0.1, 0.2, 0.3, 0, 0.1, 0.2], np.float32)),
        "frame_index": pa.array(np.array([0, 1, 2, 3, 0, 1, 2], np.int64)),
        "episode_index": pa.array(np.array([0, 0, 0, 0, 1, 1, 1], np.int64)),
        "index": pa.array(np.arange(n, dtype=np.int64)),
        "task_index": pa.array(np.zeros(n, np.int64)),
    }
    if with_state:
        cols["observation.state"] = pa.FixedSizeListArray.from_arrays(pa.array(state.reshape(-1)), 3)
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(pa.table(cols), root / "data/chunk-000/file-000.parquet")
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    episodes = {"episode_index": [0, 1], "length": lengths, "tasks": [["pick"], ["pick"]]}
    pq.write_table(pa.table(episodes), root / "meta/episodes/chunk-000/file-000.parquet")


def test_import_of_a_dataset_written_by_lerobot(tmp_path: Path) -> None:
    root = tmp_path / "so100"
    write_foreign(root)
    out = tmp_path / "ours.hdf5"
    result = run_cli("data", "convert", str(root), "--from", "lerobot", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "note: image/video features not imported: observation.images.front" in result.stdout
    ds = DemoDataset(out)
    assert ds.env_id == "lerobot/so100" and ds.lengths == [4, 3] and ds.obs_keys == ["state"]
    d0, d1 = ds.demo(0), ds.demo(1)
    np.testing.assert_array_equal(d0.obs["state"][1:], d0.next_obs["state"][:-1])
    np.testing.assert_array_equal(d1.obs["state"][:, 0], [12, 15, 18])
    # without a stored final observation the last successor repeats the last observation
    np.testing.assert_array_equal(d1.next_obs["state"][-1], d1.obs["state"][-1])
    assert d0.terminated.tolist() == [False, False, False, True] and not d0.truncated.any()
    assert d1.truncated.tolist() == [False, False, True] and not d1.terminated.any()
    np.testing.assert_array_equal(d1.rewards, [4, 5, 6])
    extras = read_extras(out, ds.demo_names)
    np.testing.assert_array_equal(extras["demo_0"]["complementary_info.is_intervention"], [0, 1, 1, 0])
    assert extras["demo_1"]["complementary_info.is_intervention"].dtype == np.float32
    assert d0.states.shape == (4, 0) and d0.attrs["source"] == "lerobot:so100"
    act = ds.action_space
    np.testing.assert_array_equal(act.low, np.concatenate([d0.actions, d1.actions]).min(axis=0))
    assert validate_file(out) == []


def bad(src: Path, out: Path, match: str, **kwargs: Any) -> None:
    """``convert`` refuses with a one-line UserError and writes nothing."""
    with pytest.raises(UserError, match=match) as info:
        convert(str(src), str(out), **kwargs)
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_bad_lerobot_input_is_one_line(hopper: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.hdf5"
    empty = tmp_path / "empty"
    empty.mkdir()
    bad(empty, out, "not a LeRobot dataset \\(no meta/info.json\\)")
    no_info = tmp_path / "no_info"
    write_foreign(no_info)
    (no_info / "meta/info.json").unlink()
    bad(no_info, out, "no meta/info.json")
    old = tmp_path / "old"
    write_foreign(old, version="v2.1")
    bad(old, out, "codebase_version v2.1 is not supported")
    images = tmp_path / "images"
    write_foreign(images, with_state=False)
    broken = tmp_path / "broken"
    write_foreign(broken)
    (broken / "meta/info.json").write_text("{not json")
    bad(broken, out, "cannot read meta/info.json")
    short = tmp_path / "short"
    write_foreign(short)
    pq.write_table(
        pa.table({"episode_index": [0, 1], "length": [5, 3], "tasks": [["pick"], ["pick"]]}),
        short / "meta/episodes/chunk-000/file-000.parquet",
    )
    bad(short, out, "episode 0 has 4 frames, its metadata says 5")
    bad(hopper, out, "not a LeRobot dataset directory", source_format="lerobot")
    # the command: one stderr line, no traceback, non-zero exit
    assert "only image/video observations (observation.images.front)" in one_line_error(
        run_cli("data", "convert", str(images), "--out", str(out))
    )
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
