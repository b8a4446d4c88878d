"""Converting demo files to and from the LeRobotDataset v3.0 layout (``docs/DESIGN.md §3``).

A LeRobot v3.0 dataset is a directory::

    meta/info.json                               codebase_version "v3.0", fps, features, path templates
    meta/stats.json                              per-feature min / max / mean / std / count / quantiles
    meta/tasks.parquet                           task strings (pandas index "task") -> task_index
    meta/episodes/chunk-000/file-000.parquet     one row per episode: length, tasks, row ranges, stats
    data/chunk-000/file-000.parquet              one row per step (frame), one row group per episode
    videos/<key>/chunk-000/file-000.mp4          only for image features (never written here)

Our demos are state-based: a demo file becomes the frame columns ``observation.state`` (or
``observation.<key>`` per key of a Dict observation), ``action``, ``next.reward``, ``next.done``,
``next.terminated``, ``next.truncated``, ``physics_state`` (the MuJoCo state before each step; its
name keeps it out of LeRobot's policy inputs), every extra per-step dataset of the demos under its
own name (``policy_actions``, ``interventions``, ...), and LeRobot's ``timestamp``, ``frame_index``,
``episode_index``, ``index`` and ``task_index``. What LeRobot has no column for goes into
``gail_robot/*`` columns of the episode table (demo name, seed, source, success, final physics
state, final observation) and into ``meta/gail_robot.json`` (env id and kwargs, exact spaces,
control period, masks). Arrays keep their dtype, so a round trip is bit-exact.

Datasets written elsewhere import too: observation features become the observation (image and
video features are dropped, the caller is told), other numeric features become extra per-step
datasets, and what they lack (physics states, the final observation) is filled as for robomimic
files. pyarrow reads and writes the parquet files; LeRobot itself is not needed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np

from gail_robot.data.episode import Episode, dataset_options
from gail_robot.data.reader import Demo, DemoDataset
from gail_robot.data.schema import (
    EnvMeta,
    demo_name,
    obs_key_spaces,
    open_h5,
    space_from_json,
    space_to_json,
)
from gail_robot.data.transaction import publish_once
from gail_robot.data.writer import DemoWriter
from gail_robot.errors import UserError

#: the LeRobotDataset layout version written and read (``meta/info.json`` ``codebase_version``)
CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk directory (LeRobot's DEFAULT_CHUNK_SIZE)
DATA_FILE_SIZE_IN_MB = 100  # a data file is closed once it holds about this much
VIDEO_FILE_SIZE_IN_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
#: what LeRobot has no place for: env metadata, exact spaces, masks
SIDE_FILE = "meta/gail_robot.json"
SIDE_FORMAT = "gail_robot.lerobot"
SIDE_VERSION = 1
#: LeRobot's per-feature quantiles in stats.json (q01, q10, q50, q90, q99)
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
#: the frame columns every LeRobot dataset has
INDEX_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")
#: the datasets of every demo group (schema v1, docs/DESIGN.md §3); any other dataset of a demo group
#: with one row per step is an *extra* per-step dataset (e.g. an intervention recording's
#: ``policy_actions`` and ``interventions``), carried as a feature of its own name
CORE_DATASETS = ("actions", "rewards", "terminated", "truncated", "dones", "states", "final_state")
#: frame columns this converter maps onto demo fields (the rest of a foreign dataset become extras)
STEP_FEATURES = ("action", "next.reward", "next.done", "next.terminated", "next.truncated", "physics_state")
EP = "gail_robot/"  # prefix of our episode-table columns


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(
            "LeRobot conversion needs the pyarrow package: pip install 'gail-robot[lerobot]'"
        ) from None
    return pa, pq


def _feature(array: np.ndarray, names: list[str] | None = None) -> dict[str, Any]:
    """A LeRobot feature entry for per-step rows ``array`` ``(N, ...)`` (``(N,)`` rows are shape (1,))."""
    shape = [1] if array.ndim == 1 else list(array.shape[1:])
    return {"dtype": np.dtype(array.dtype).name, "shape": shape, "names": names}


def _column(pa: Any, array: np.ndarray) -> Any:
    """``(N,)`` or ``(N, 1)`` -> a plain column (LeRobot's shape (1,)); ``(N, K)`` -> ``fixed_size_list<K>``
    (HF ``Sequence(length=K)``). Readers restore the row shape from the spaces (``meta/gail_robot.json``)."""
    array = np.ascontiguousarray(array)
    if array.ndim == 2 and array.shape[1] == 1:  # LeRobot: shape (1,) is a scalar column
        array = array[:, 0]
    if array.ndim == 1:
        return pa.array(array)
    if array.ndim != 2:
        raise UserError(f"cannot store rows of shape {array.shape[1:]} as a LeRobot feature (1-D rows only)")
    return pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), int(array.shape[1]))


def _stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's per-feature statistics over the rows of ``values`` (kept 1-D, like its vectors)."""
    x = values.astype(np.float64).reshape(len(values), -1)
    out = {
        "min": x.min(axis=0),
        "max": x.max(axis=0),
        "mean": x.mean(axis=0),
        "std": x.std(axis=0),
        "count": np.array([len(x)], dtype=np.int64),
    }
    for q in QUANTILES:
        out[f"q{round(q * 100):02d}"] = np.quantile(x, q, axis=0)
    return out


def _fps(meta: EnvMeta) -> tuple[int, float | None]:
    """Frames per second from the env's control period ``dt`` (rounded: LeRobot's fps is an integer)."""
    env = meta.make_env()
    try:
        dt = getattr(env.unwrapped, "dt", None)
        if dt is None:
            dt = getattr(env.unwrapped, "tau", None)  # classic control
        if dt is None:
            fps = env.metadata.get("render_fps")
            return (round(fps) if fps else 1), None
        return max(1, round(1.0 / float(dt))), float(dt)
    finally:
        env.close()


def _tasks_table(pa: Any, tasks: list[str]) -> Any:
    """``meta/tasks.parquet``: column ``task_index``, task strings as the pandas index ``task``."""
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": "task",
                "field_name": "task",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
    }
    table = pa.table(
        {"task_index": pa.array(np.arange(len(tasks), dtype=np.int64)), "task": pa.array(tasks, pa.string())}
    )
    return table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})


def _frames(
    pa: Any,
    demo: Demo,
    extras: dict[str, np.ndarray],
    ep_index: int,
    start: int,
    fps: int,
    names: dict[str, str],
    next_names: dict[str, str],
) -> tuple[dict[str, np.ndarray], Any]:
    """One demo's frame columns as arrays (for features and stats) and as a pyarrow table."""
    n = len(demo)
    cols: dict[str, np.ndarray] = {}
    for key, feat in names.items():
        cols[feat] = demo.obs[key]
    for key, feat in next_names.items():
        cols[feat] = demo.next_obs[key]
    cols["action"] = demo.actions
    cols["next.reward"] = demo.rewards
    cols["next.done"] = demo.terminated | demo.truncated
    cols["next.terminated"] = demo.terminated
    cols["next.truncated"] = demo.truncated
    if demo.states.shape[1] > 0:
        cols["physics_state"] = demo.states
    for name, values in extras.items():
        cols[name] = values
    frame = np.arange(n, dtype=np.int64)
    cols["timestamp"] = (frame / fps).astype(np.float32)
    cols["frame_index"] = frame
    cols["episode_index"] = np.full(n, ep_index, dtype=np.int64)
    cols["index"] = start + frame
    cols["task_index"] = np.zeros(n, dtype=np.int64)
    return cols, pa.table({k: _column(pa, v) for k, v in cols.items()})


def read_extras(path: Path, names: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """``{demo: {name: (N, ...)}}``: the extra per-step datasets of each demo, read from the file
    itself (whatever wrote them: an intervention recording, a converter, h5py)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    with open_h5(path) as f:
        for demo in names:
            g = f["data"][demo]
            n = len(g["actions"])
            out[demo] = {
                key: item[()]
                for key, item in g.items()
                if key not in CORE_DATASETS
                and isinstance(item, h5py.Dataset)
                and item.ndim >= 1
                and item.shape[0] == n
            }
    return out


def _add_extras(path: Path, extras: dict[str, dict[str, np.ndarray]]) -> None:
    """Write extra per-step datasets into the demo groups of ``path`` (one transaction)."""

    def edit(f: h5py.File) -> None:
        for demo, datasets in extras.items():
            for key, values in datasets.items():
                f["data"][demo].create_dataset(key, data=values, **dataset_options(values))

    publish_once(path, edit)


def _check_exportable(src: DemoDataset) -> dict[str, str]:
    """``{obs key: feature name}``; one line for what LeRobot's state columns cannot hold."""
    spaces = obs_key_spaces(src.observation_space)
    for key, box in spaces.items():
        if len(box.shape) != 1:
            raise UserError(
                f"{src.path}: observation {key!r} has shape {box.shape}; only state-based demos (1-D "
                "observation vectors) convert to LeRobot (image observations would need videos)"
            )
    if not isinstance(src.observation_space, gym.spaces.Dict):
        return {"state": "observation.state"}
    return {key: f"observation.{key}" for key in spaces}


def to_lerobot(src: DemoDataset, out: Path, task: str | None = None, overwrite: bool = False) -> int:
    """Write ``src`` as a LeRobotDataset v3.0 directory ``out``; returns the number of episodes.

    The directory is built beside ``out`` and renamed into place when complete.
    """
    pa, pq = _pyarrow()
    names = _check_exportable(src)
    demos = list(src)
    if not demos:
        raise UserError(f"{src.path}: no demos to convert")
    step_extras = read_extras(src.path, [d.name for d in demos])
    extras = sorted(step_extras[demos[0].name])
    for d in demos:
        if sorted(step_extras[d.name]) != extras:
            raise UserError(
                f"{src.path}: {d.name} has extra datasets {sorted(step_extras[d.name])}, "
                f"{demos[0].name} has {extras}; "
                "LeRobot needs the same features in every episode"
            )
    clash = [n for n in extras if n in STEP_FEATURES or n in INDEX_FEATURES or n.startswith("observation.")]
    if clash:
        raise UserError(f"{src.path}: extra datasets {clash} clash with LeRobot feature names")
    # LeRobot stores one observation per frame; the successor is the next frame's observation, and
    # the last one goes into the episode table. Demos whose successors are not the next rows get
    # explicit next.observation.* columns.
    shifted = all(np.array_equal(d.next_obs[k][:-1], d.obs[k][1:]) for d in demos for k in names)
    next_names = {} if shifted else {k: f"next.{feat}" for k, feat in names.items()}
    fps, dt = _fps(src.meta)
    task = task or src.env_id

    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        features: dict[str, Any] = {}
        stats_parts: dict[str, list[np.ndarray]] = {}
        episode_rows: list[dict[str, Any]] = []
        chunk, file, start = 0, 0, 0
        writer = None
        file_bytes = 0
        for i, d in enumerate(demos):
            cols, table = _frames(pa, d, step_extras[d.name], i, start, fps, names, next_names)
            if not features:
                features = {name: _feature(values) for name, values in cols.items()}
            if writer is not None and file_bytes + table.nbytes > DATA_FILE_SIZE_IN_MB * 1024 * 1024:
                writer.close()
                writer, file_bytes = None, 0
                chunk, file = (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)
            if writer is None:
                path = tmp / DATA_PATH.format(chunk_index=chunk, file_index=file)
                path.parent.mkdir(parents=True, exist_ok=True)
                writer = pq.ParquetWriter(path, table.schema, compression="snappy")
            if table.schema != writer.schema:
                raise UserError(f"{src.path}: {d.name} has other dtypes or shapes than {demos[0].name}")
            writer.write_table(table)  # one row group per episode, as LeRobot writes them
            file_bytes += table.nbytes
            row: dict[str, Any] = {
                "episode_index": i,
                "tasks": [task],
                "length": len(d),
                "data/chunk_index": chunk,
                "data/file_index": file,
                "dataset_from_index": start,
                "dataset_to_index": start + len(d),
                "meta/episodes/chunk_index": 0,
                "meta/episodes/file_index": 0,
            }
            for name, values in cols.items():
                stats_parts.setdefault(name, []).append(values)
                for stat, value in _stats(values).items():
                    row[f"stats/{name}/{stat}"] = value.tolist()
            row[EP + "demo_name"] = d.name
            row[EP + "seed"] = int(d.attrs.get("seed", -1))
            row[EP + "source"] = str(d.attrs.get("source", "unknown"))
            row[EP + "success"] = d.success
            row[EP + "model_file"] = str(d.attrs.get("model_file") or "")
            row[EP + "final_state"] = d.final_state
            for key, feat in names.items():
                row[EP + "final_" + feat] = d.next_obs[key][-1]
            episode_rows.append(row)
            start += len(d)
        assert writer is not None
        writer.close()

        episodes = {k: [r[k] for r in episode_rows] for k in episode_rows[0]}
        ep_cols = {}
        for k, per_episode in episodes.items():
            if isinstance(per_episode[0], np.ndarray):  # per-episode vectors keep their dtype
                ep_cols[k] = pa.array(
                    [v.tolist() for v in per_episode], pa.list_(pa.from_numpy_dtype(per_episode[0].dtype))
                )
            else:
                ep_cols[k] = pa.array(per_episode)
        path = tmp / EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(ep_cols), path)
        pq.write_table(_tasks_table(pa, [task]), tmp / "meta" / "tasks.parquet")

        stats = {
            name: {k: v.tolist() for k, v in _stats(np.concatenate(parts)).items()}
            for name, parts in stats_parts.items()
        }
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": src.env_id,
            "total_episodes": len(demos),
            "total_frames": start,
            "total_tasks": 1,
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILE_SIZE_IN_MB,
            "video_files_size_in_mb": VIDEO_FILE_SIZE_IN_MB,
            "fps": fps,
            "splits": {"train": f"0:{len(demos)}"},
            "data_path": DATA_PATH,
            "video_path": None,  # state-based demos: no image features, no videos
            "features": features,
        }
        m = src.meta
        side = {
            "format": SIDE_FORMAT,
            "format_version": SIDE_VERSION,
            "env_id": m.env_id,
            "env_kwargs": m.env_kwargs,
            "env_version": m.env_version,
            "observation_space": space_to_json(m.observation_space),
            "action_space": space_to_json(m.action_space),
            "state_size": m.state_size,
            "control_dt": dt,
            "observation_features": names,
            "next_observation_features": next_names,
            "extras": {x: list(step_extras[demos[0].name][x].shape[1:]) for x in extras},
            "masks": src.masks(),
            "converted_from": src.path.name,
        }
        for name, obj in (("info.json", info), ("stats.json", stats), ("gail_robot.json", side)):
            (tmp / "meta" / name).write_text(json.dumps(obj, indent=4) + "\n")
        if out.exists():
            if not overwrite:
                raise UserError(f"{out}: exists already (pass --overwrite to replace it)")
            if out.is_dir():
                shutil.rmtree(out)
            else:
                out.unlink()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return len(demos)


# ----------------------------------------------------------------------------------------------
# import
# ----------------------------------------------------------------------------------------------


@dataclass
class LeRobotImport:
    """What :func:`from_lerobot` did: episodes written and features it could not keep."""

    episodes: int
    dropped: list[str] = field(default_factory=list)


def _read_json(path: Path, root: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{root}: not a LeRobot dataset (no {path.relative_to(root)})") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{root}: cannot read {path.relative_to(root)} ({exc})") from None


def _read_tables(pq: Any, pa: Any, root: Path, pattern: str, what: str) -> Any:
    paths = sorted(root.glob(pattern))
    if not paths:
        raise UserError(f"{root}: not a LeRobot v3.0 dataset (no {pattern} files: {what})")
    try:
        tables = [pq.read_table(p) for p in paths]
        return pa.concat_tables(tables, promote_options="default")
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise UserError(f"{root}: cannot read {what} ({str(exc).splitlines()[0]})") from None


def _to_numpy(column: Any, n: int) -> np.ndarray:
    """A frame column as ``(N,)`` (scalars) or ``(N, K)`` (lists); null-free."""
    import pyarrow as pa

    arr = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if arr.null_count:
        raise ValueError("has missing values")
    if (
        pa.types.is_list(arr.type)
        or pa.types.is_fixed_size_list(arr.type)
        or pa.types.is_large_list(arr.type)
    ):
        values = arr.flatten()
        if pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
            raise ValueError("has nested lists (only 1-D features convert)")
        flat = values.to_numpy(zero_copy_only=False)
        if n and len(flat) % n:
            raise ValueError("has rows of different lengths")
        return flat.reshape(n, -1)
    return arr.to_numpy(zero_copy_only=False)


def detect_lerobot(path: Path) -> bool:
    """Whether a directory looks like a LeRobot dataset (``meta/`` or ``data/`` inside)."""
    return path.is_dir() and ((path / "meta").is_dir() or (path / "data").is_dir())


def from_lerobot(src: Path, out: Path, overwrite: bool = False) -> LeRobotImport:
    """Import a LeRobotDataset v3.0 directory into a demo file.

    Raises:
        UserError: not a LeRobot dataset, another codebase_version, no state observation (an
            image-only dataset), damaged or inconsistent files.
    """
    pa, pq = _pyarrow()
    if not src.is_dir():
        raise UserError(f"{src}: not a LeRobot dataset directory")
    info = _read_json(src / "meta" / "info.json", src)
    if not isinstance(info, dict):
        raise UserError(f"{src}: meta/info.json is not a JSON object")
    version = str(info.get("codebase_version", "?"))
    if not version.startswith("v3."):
        raise UserError(
            f"{src}: LeRobot codebase_version {version} is not supported (this converter reads "
            f"{CODEBASE_VERSION}; convert older datasets with LeRobot's v3.0 conversion script first)"
        )
    features: dict[str, dict[str, Any]] = info.get("features") or {}
    if not isinstance(features, dict) or "action" not in features:
        raise UserError(f"{src}: meta/info.json has no 'action' feature")
    side_path = src / "meta" / "gail_robot.json"
    side = _read_json(side_path, src) if side_path.exists() else None
    if side is not None and (side.get("format") != SIDE_FORMAT or int(side.get("format_version", -1)) != 1):
        raise UserError(f"{src}: meta/gail_robot.json is not a version-1 {SIDE_FORMAT} header")

    visual = [k for k, ft in features.items() if ft.get("dtype") in ("image", "video")]
    numeric = {k: ft for k, ft in features.items() if k not in visual and ft.get("dtype") != "string"}
    if side is not None:
        obs_names: dict[str, str] = dict(side["observation_features"])
        next_names: dict[str, str] = dict(side.get("next_observation_features") or {})
        extra_shapes: dict[str, tuple[int, ...] | None] = {
            k: tuple(v) for k, v in (side.get("extras") or {}).items()
        }
    else:
        obs_feats = [k for k in numeric if k.startswith("observation.")]
        if not obs_feats:
            what = f"only image/video observations ({', '.join(visual)})" if visual else "no observation.*"
            raise UserError(f"{src}: {what}; gail_robot imports state-based datasets only")
        if obs_feats == ["observation.state"]:
            obs_names = {"state": "observation.state"}
        else:
            obs_names = {k[len("observation.") :]: k for k in obs_feats}
        next_names = {}
        used = set(obs_feats) | set(STEP_FEATURES) | set(INDEX_FEATURES) | {"next.success"}
        extra_shapes = {k: None for k in numeric if k not in used}
    extras = list(extra_shapes)
    missing = [f for f in [*obs_names.values(), *next_names.values(), *extras] if f not in features]
    if missing:
        raise UserError(f"{src}: meta/info.json lacks features {missing}")

    table = _read_tables(pq, pa, src, "data/*/*.parquet", "frame data")
    n_all = table.num_rows
    for col in ("episode_index", "frame_index", "action"):
        if col not in table.column_names:
            raise UserError(f"{src}: frame data has no '{col}' column")

    def column(name: str) -> np.ndarray:
        try:
            dtype = np.dtype(features[name]["dtype"]) if name in features else None
            values = _to_numpy(table.column(name), n_all)
            return values if dtype is None else values.astype(dtype, copy=False)
        except (ValueError, TypeError, KeyError, pa.ArrowException) as exc:
            raise UserError(f"{src}: frame column '{name}' {str(exc).splitlines()[0]}") from None

    ep_index = _to_numpy(table.column("episode_index"), n_all).astype(np.int64)
    frame_index = _to_numpy(table.column("frame_index"), n_all).astype(np.int64)
    order = np.lexsort((frame_index, ep_index))
    ep_sorted = ep_index[order]
    episode_ids, starts = np.unique(ep_sorted, return_index=True)
    bounds = np.append(starts, n_all)

    episodes_table = _read_tables(pq, pa, src, "meta/episodes/*/*.parquet", "episode metadata")
    ep_meta: dict[int, dict[str, Any]] = {}
    keep = [c for c in episodes_table.column_names if not c.startswith("stats/")]
    for row in episodes_table.select(keep).to_pylist():
        ep_meta[int(row["episode_index"])] = row

    present = set(table.column_names)
    cols: dict[str, np.ndarray] = {}
    for name in {*obs_names.values(), *next_names.values(), *extras, *STEP_FEATURES, "next.success"}:
        if name in present:
            cols[name] = column(name)[order]

    # spaces and env; row shapes restored from them (LeRobot stores shape (1,) rows as scalars)
    if side is not None:
        obs_space = space_from_json(side["observation_space"])
        spaces = obs_key_spaces(obs_space)
        for key, feat in obs_names.items():
            cols[feat] = cols[feat].reshape(n_all, *spaces[key].shape)
        for key, feat in next_names.items():
            cols[feat] = cols[feat].reshape(n_all, *spaces[key].shape)
        for x, shape in extra_shapes.items():
            cols[x] = cols[x].reshape(n_all, *(shape or ()))
        act_space = space_from_json(side["action_space"])
        env_id, env_kwargs = str(side["env_id"]), dict(side.get("env_kwargs") or {})
        env_version, state_size = str(side.get("env_version", "")), side.get("state_size")
        masks = {k: list(v) for k, v in (side.get("masks") or {}).items()}
    else:
        for feat in obs_names.values():
            cols[feat] = cols[feat].reshape(n_all, -1)  # a shape (1,) observation stays a vector
        boxes: dict[str, gym.Space[Any]] = {
            key: gym.spaces.Box(-np.inf, np.inf, shape=cols[feat].shape[1:], dtype=cols[feat].dtype.type)
            for key, feat in obs_names.items()
        }
        obs_space = boxes["state"] if list(boxes) == ["state"] else gym.spaces.Dict(boxes)
        actions = cols["action"].astype(np.float32).reshape(n_all, -1)
        cols["action"] = actions
        low, high = actions.min(axis=0), actions.max(axis=0)  # a foreign dataset's bounds: the data's
        act_space = gym.spaces.Box(low, np.maximum(high, low), dtype=np.float32)
        env_id = f"lerobot/{info.get('robot_type') or src.name}"
        env_kwargs, env_version, masks = {}, "", {}
        state_size = int(cols["physics_state"].shape[1]) if "physics_state" in cols else 0
    if not isinstance(act_space, gym.spaces.Box):
        raise UserError(f"{src}: only continuous (Box) actions import")
    cols["action"] = cols["action"].reshape(n_all, *act_space.shape)
    if "physics_state" in cols:
        cols["physics_state"] = cols["physics_state"].reshape(n_all, -1)
    meta = EnvMeta(
        env_id=env_id,
        env_kwargs=env_kwargs,
        observation_space=obs_space,
        action_space=act_space,
        env_version=env_version,
        state_size=state_size,
    )

    def demos() -> Iterator[tuple[str, Episode]]:
        for j, e in enumerate(episode_ids):
            s = slice(int(bounds[j]), int(bounds[j + 1]))
            n = s.stop - s.start
            row = ep_meta.get(int(e), {})
            name = str(row.get(EP + "demo_name") or demo_name(int(e)))
            if "length" in row and int(row["length"]) != n:
                raise UserError(
                    f"{src}: episode {int(e)} has {n} frames, its metadata says {int(row['length'])}"
                )
            obs = {k: cols[f][s] for k, f in obs_names.items()}
            if next_names:
                next_obs = {k: cols[f][s] for k, f in next_names.items()}
            else:
                next_obs = {}
                for k, f in obs_names.items():
                    final = row.get(EP + "final_" + f)
                    last = np.asarray(final, dtype=obs[k].dtype)[None] if final is not None else obs[k][-1:]
                    next_obs[k] = np.concatenate([obs[k][1:], last])
            if "next.terminated" in cols and "next.truncated" in cols:
                term, trunc = cols["next.terminated"][s], cols["next.truncated"][s]
            else:
                done = cols["next.done"][s].astype(bool) if "next.done" in cols else np.zeros(n, bool)
                term = np.zeros(n, bool)
                term[-1] = done[-1]
                trunc = np.zeros(n, bool)
                trunc[-1] = not done[-1]  # an episode that stops without terminating was truncated
            states = cols["physics_state"][s] if "physics_state" in cols else np.zeros((n, 0))
            final_state = row.get(EP + "final_state")
            if final_state is None:
                final_state = states[-1] if states.shape[1] else np.zeros(0)
            success = row.get(EP + "success")
            if success is None:
                success = bool(cols["next.success"][s][-1]) if "next.success" in cols else False
            try:
                episode = Episode(
                    obs=obs,
                    next_obs=next_obs,
                    actions=cols["action"][s],
                    rewards=cols["next.reward"][s] if "next.reward" in cols else np.zeros(n, np.float32),
                    terminated=term,
                    truncated=trunc,
                    states=states,
                    final_state=np.asarray(final_state, dtype=np.float64),
                    seed=int(row.get(EP + "seed", -1)),
                    source=str(row.get(EP + "source") or f"lerobot:{src.name}"),
                    success=bool(success),
                    model_file=row.get(EP + "model_file") or None,
                )
            except ValueError as exc:
                raise UserError(f"{src}: episode {int(e)}: {exc}") from None
            if extras:
                step_extras[name] = {x: cols[x][s] for x in extras}
            yield name, episode

    if not len(episode_ids):
        raise UserError(f"{src}: no frames in data/")
    if out.exists() and not overwrite:
        raise UserError(f"{out}: exists already (pass --overwrite to replace it)")
    # The demos, then their extra datasets, go into a hidden file renamed into place when both are
    # written: the output appears complete or not at all.
    step_extras: dict[str, dict[str, np.ndarray]] = {}
    tmp = out.parent / f".{out.name}.{os.getpid()}.lerobot.hdf5"
    try:
        with DemoWriter(tmp, meta=meta, mode="w") as writer:
            writer.write_demos(demos(), masks)
        if step_extras:
            _add_extras(tmp, step_extras)
        os.replace(tmp, out)
    finally:
        for leftover in (tmp, tmp.parent / f".{tmp.name}.lock"):
            leftover.unlink(missing_ok=True)
    return LeRobotImport(len(episode_ids), visual)
