"""Crash-safe demo recording: :class:`DemoWriter`.

Why not append to the HDF5 file in place: HDF5 is not crash-consistent. A process killed while
the library updates its metadata (B-trees, heaps, the superblock's end-of-file address) leaves a
file that no longer opens. SWMR mode keeps a file readable after a writer dies, but it cannot
create groups (one per demo), and it leaves a "file open for writing" flag that only the
``h5clear`` repair tool removes.

So the published file is never modified. Each finished episode (buffered in memory while it is
recorded) is published in one short transaction:

1. copy the current file to a hidden temporary file next to it (an in-kernel copy),
2. write the episode group into the copy and close it (optionally ``fsync``),
3. ``os.replace`` the copy over the original: atomic on POSIX file systems.

Killed before step 3, the original is untouched (the stale temporary is removed by the next
writer); killed after it, the new file is complete. Any reader, at any instant, sees a complete
file. The cost is a copy of the file per episode: a few ms for tens of MB (see datasets/README.md).
An exclusive lock file keeps two recorders from publishing into the same file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import gymnasium as gym
import h5py
import numpy as np

from gail_robot.data.schema import (
    EnvMeta,
    demo_index,
    demo_name,
    is_image_space,
    obs_key_spaces,
    open_h5,
    read_header,
    write_header,
)
from gail_robot.errors import UserError

#: lowest HDF5 file-format version the writer uses: 1.8 stores large attributes (model XML) densely.
LIBVER: tuple[str, str] = ("v108", "v110")


def fsync_path(path: Path, directory: bool = False) -> None:
    """Flush a file (or a directory entry table) to stable storage."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileLock:
    """Exclusive, non-blocking ``flock`` on a hidden sidecar file ``.<name>.lock``.

    The sidecar (not the data file) is locked because the data file is replaced on every publish.
    """

    def __init__(self, target: Path) -> None:
        self.path = target.parent / f".{target.name}.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise UserError naming the holder."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    holder = ""
                    with contextlib.suppress(OSError):
                        holder = self.path.read_text().strip()
                    who = f" (pid {holder})" if holder else ""
                    raise UserError(
                        f"{self.path.parent / self.path.name[1:-5]}: another process is writing it{who}"
                    ) from None
                raise
            # The previous holder may have unlinked the sidecar between our open and flock:
            # then we locked an orphan inode and must retry on the new file.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self._fd = fd
                return
            os.close(fd)

    def release(self) -> None:
        """Drop the lock and remove the sidecar."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None


def publish(
    path: Path,
    edit: Callable[[h5py.File], None],
    *,
    create: Callable[[h5py.File], None] | None,
    durable: bool = True,
) -> None:
    """Apply ``edit`` to a copy of ``path`` and atomically replace ``path`` with it.

    Args:
        path: the published file (need not exist when ``create`` is given).
        edit: writes into the open copy.
        create: initialises a new file when ``path`` does not exist yet (or is being overwritten).
        durable: fsync the copy before the rename and the directory after it, so the episode
            also survives a power cut; a SIGKILL is survived either way.
    """
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        if create is None:
            shutil.copyfile(path, tmp)  # in-kernel copy (sendfile) on Linux
            mode = "r+"
        else:
            mode = "w"
        with h5py.File(tmp, mode, libver=LIBVER) as f:
            if create is not None:
                create(f)
            edit(f)
        if durable:
            fsync_path(tmp)
        os.replace(tmp, path)
        if durable:
            fsync_path(path.parent, directory=True)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(path: Path) -> int:
    """Delete ``.<name>.<pid>.tmp`` files a killed writer left behind (call with the lock held)."""
    removed = 0
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
            removed += 1
    return removed


class _EpisodeBuffer:
    """Steps of the episode being recorded, kept in memory until it is saved or discarded."""

    def __init__(self, keys: list[str], seed: int | None, source: str, model_file: str | None) -> None:
        self.seed = seed
        self.source = source
        self.model_file = model_file
        self.obs: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        self.next_obs: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.terminated: list[bool] = []
        self.truncated: list[bool] = []
        self.states: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.actions)


class DemoWriter:
    """Record episodes into a demo file (schema v1), crash-safely.

    Example::

        with DemoWriter("demos.hdf5", env) as writer:
            obs, _ = env.reset(seed=0)
            writer.start_episode(seed=0, source="scripted")
            while True:
                state = get_physics_state(env)
                action = expert(obs)
                next_obs, reward, terminated, truncated, info = env.step(action)
                writer.add_step(obs, action, reward, next_obs, terminated, truncated, state)
                obs = next_obs
                if terminated or truncated:
                    break
            writer.end_episode(success=info["is_success"], final_state=get_physics_state(env))

    Args:
        path: the demo file. Created when missing.
        env: the env being recorded (its id, kwargs, spaces and state size go into the header);
            or give ``meta`` instead.
        meta: env metadata when no env is at hand (converters, merge).
        mode: ``"a"`` appends to an existing file after checking it holds the same env and
            spaces; ``"x"`` refuses an existing file; ``"w"`` replaces it when the first episode
            is saved (never before).
        durable: fsync each published file (survives power loss, not only process kills).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        env: gym.Env[Any, Any] | None = None,
        *,
        meta: EnvMeta | None = None,
        mode: str = "a",
        durable: bool = True,
    ) -> None:
        if mode not in ("a", "x", "w"):
            raise ValueError(f"mode must be 'a', 'x' or 'w', got {mode!r}")
        if (env is None) == (meta is None):
            raise ValueError("give exactly one of env and meta")
        self.path = Path(path)
        self.meta: EnvMeta = meta if meta is not None else EnvMeta.from_env(env)  # type: ignore[arg-type]
        self.mode = mode
        self.durable = durable
        self._obs_spaces = obs_key_spaces(self.meta.observation_space)
        self._act_shape = tuple(self.meta.action_space.shape)
        self._lock = FileLock(self.path)
        self._open = False
        self._episode: _EpisodeBuffer | None = None
        self._next_index = 0
        self._exists = False
        self.saved: list[str] = []
        #: length of the episode saved last
        self.saved_length = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> DemoWriter:
        """Lock the file, clean up after a killed writer and check an existing file."""
        if self._open:
            return self
        if self.path.is_dir():
            raise UserError(f"{self.path}: is a directory")
        if not self.path.parent.is_dir():
            raise UserError(f"{self.path.parent}: no such directory")
        self._lock.acquire()
        try:
            remove_stale_temporaries(self.path)
            self._exists = self.path.exists()
            if self._exists and self.mode == "x":
                raise UserError(f"{self.path}: exists already (append to it or choose another file)")
            if self._exists and self.mode == "a":
                with open_h5(self.path) as f:
                    existing = read_header(f, self.path)
                    names = [n for n in f["data"] if n.startswith("demo_")]
                problem = existing.mismatch(self.meta)
                if problem is not None:
                    raise UserError(f"{self.path}: cannot append: {problem}")
                self._next_index = max((demo_index(n) for n in names), default=-1) + 1
        except BaseException:
            self._lock.release()
            raise
        self._open = True
        return self

    def close(self) -> None:
        """Drop an unfinished episode and release the lock."""
        self._episode = None
        if self._open:
            self._lock.release()
            self._open = False

    def __enter__(self) -> DemoWriter:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- episodes ----------------------------------------------------------------------------

    def next_demo_name(self, offset: int = 0) -> str:
        """The name the next saved demo gets (``offset`` further demos later)."""
        if not self._open:
            self.open()
        return demo_name(self._next_index + offset)

    @property
    def in_episode(self) -> bool:
        """True between :meth:`start_episode` and :meth:`end_episode` / :meth:`discard_episode`."""
        return self._episode is not None

    @property
    def episode_length(self) -> int:
        """Steps recorded so far in the current episode (0 outside an episode)."""
        return 0 if self._episode is None else len(self._episode)

    def start_episode(
        self, seed: int | None = None, source: str = "unknown", model_file: str | None = None
    ) -> None:
        """Begin buffering a new episode.

        Args:
            seed: the ``env.reset`` seed of the episode (stored; -1 when None).
            source: who acted: ``"teleop:keyboard"``, ``"scripted"``, ``"policy:<name>"``, ...
            model_file: MJCF XML of the model, when known.
        """
        if not self._open:
            self.open()
        if self._episode is not None:
            raise RuntimeError("an episode is already in progress: end or discard it first")
        self._episode = _EpisodeBuffer(list(self._obs_spaces), seed, source, model_file)

    def _split_obs(self, obs: Any, what: str, step: int) -> dict[str, np.ndarray]:
        if isinstance(obs, dict):
            if list(obs) != list(self._obs_spaces) and sorted(obs) != sorted(self._obs_spaces):
                raise ValueError(
                    f"{what} at step {step} has keys {sorted(obs)}, expected {list(self._obs_spaces)}"
                )
            parts = {k: np.asarray(obs[k]) for k in self._obs_spaces}
        else:
            if len(self._obs_spaces) != 1:
                raise ValueError(f"{what} at step {step} is an array but the observation space is a Dict")
            parts = {next(iter(self._obs_spaces)): np.asarray(obs)}
        for key, value in parts.items():
            box = self._obs_spaces[key]
            if value.shape != box.shape:
                raise ValueError(
                    f"{what}[{key!r}] at step {step} has shape {value.shape}, expected {box.shape}"
                )
        return parts

    def add_step(
        self,
        obs: Any,
        action: np.ndarray,
        reward: float,
        next_obs: Any,
        terminated: bool,
        truncated: bool,
        state: np.ndarray,
    ) -> None:
        """Buffer one transition.

        Args:
            obs: observation before the step, ``(obs_dim,)`` or a dict of arrays.
            action: ``(act_dim,)`` action sent to ``env.step``; must be finite.
            reward: the env's reward.
            next_obs: the true successor observation (the final one on truncation).
            terminated: the env's ``terminated``.
            truncated: the env's ``truncated`` (or the user ending the episode early).
            state: ``(S,) float64`` physics state before the step.

        Raises:
            ValueError: NaN/inf or wrongly shaped action, wrong observation shapes, a step after a
                terminal step. The episode in progress stays buffered and earlier episodes stay saved.
        """
        ep = self._episode
        if ep is None:
            raise RuntimeError("call start_episode() before add_step()")
        step = len(ep)
        if step and (ep.terminated[-1] or ep.truncated[-1]):
            raise ValueError(f"step {step} follows a terminal step; end the episode first")
        act = np.asarray(action, dtype=np.float32)
        if act.shape != self._act_shape:
            raise ValueError(f"action at step {step} has shape {act.shape}, expected {self._act_shape}")
        if not np.all(np.isfinite(act)):
            raise ValueError(f"action at step {step} is not finite: {act.tolist()}")
        st = np.asarray(state, dtype=np.float64)
        if self.meta.state_size is not None and st.shape != (self.meta.state_size,):
            raise ValueError(
                f"physics state at step {step} has shape {st.shape}, expected ({self.meta.state_size},)"
            )
        o = self._split_obs(obs, "obs", step)
        no = self._split_obs(next_obs, "next_obs", step)
        for key in self._obs_spaces:
            ep.obs[key].append(o[key])
            ep.next_obs[key].append(no[key])
        ep.actions.append(act)
        ep.rewards.append(float(reward))
        ep.terminated.append(bool(terminated))
        ep.truncated.append(bool(truncated))
        ep.states.append(st)

    def discard_episode(self) -> None:
        """Forget the episode in progress."""
        self._episode = None

    def end_episode(self, success: bool, final_state: np.ndarray, cut: bool = False) -> str:
        """Publish the buffered episode atomically and return its name (``demo_<i>``).

        Args:
            success: whether the episode solved the task.
            final_state: ``(S,) float64`` physics state after the last step.
            cut: the episode was ended early (by the user or a step limit): its last step is
                marked truncated unless the env already ended it.
        """
        ep = self._episode
        if ep is None:
            raise RuntimeError("no episode in progress")
        if len(ep) == 0:
            raise ValueError("cannot save an empty episode")
        if cut and not (ep.terminated[-1] or ep.truncated[-1]):
            ep.truncated[-1] = True
        final = np.asarray(final_state, dtype=np.float64)
        if final.shape != ep.states[0].shape:
            raise ValueError(f"final_state has shape {final.shape}, expected {ep.states[0].shape}")
        arrays = self._episode_arrays(ep, final)
        name = demo_name(self._next_index)
        attrs: dict[str, Any] = {
            "num_samples": len(ep),
            "seed": -1 if ep.seed is None else int(ep.seed),
            "source": ep.source,
            "success": bool(success),
            "return": float(np.sum(arrays["rewards"], dtype=np.float64)),
        }
        if ep.model_file:
            attrs["model_file"] = ep.model_file
        self.write_demo(name, arrays, attrs)
        self._episode = None
        self.saved_length = len(ep)
        return name

    def _episode_arrays(self, ep: _EpisodeBuffer, final_state: np.ndarray) -> dict[str, Any]:
        terminated = np.asarray(ep.terminated, dtype=bool)
        truncated = np.asarray(ep.truncated, dtype=bool)
        return {
            "obs": {k: np.stack(v).astype(self._obs_spaces[k].dtype, copy=False) for k, v in ep.obs.items()},
            "next_obs": {
                k: np.stack(v).astype(self._obs_spaces[k].dtype, copy=False) for k, v in ep.next_obs.items()
            },
            "actions": np.stack(ep.actions).astype(np.float32, copy=False),
            "rewards": np.asarray(ep.rewards, dtype=np.float32),
            "terminated": terminated,
            "truncated": truncated,
            "dones": (terminated | truncated).astype(np.uint8),
            "states": np.stack(ep.states),
            "final_state": final_state,
        }

    def write_demo(self, name: str, arrays: dict[str, Any], attrs: dict[str, Any]) -> None:
        """Publish one complete demo group (see :meth:`write_demos`)."""
        self.write_demos([(name, arrays, attrs)])

    def write_demos(self, demos: Iterable[tuple[str, dict[str, Any], dict[str, Any]]]) -> list[str]:
        """Publish complete demo groups in one transaction (converters, merge).

        Args:
            demos: ``(name, arrays, attrs)`` triples, consumed lazily (one demo in memory at a
                time). ``arrays`` holds ``obs`` and ``next_obs`` dicts plus the per-step datasets
                and ``final_state`` of schema v1; ``attrs`` holds at least ``num_samples``.

        Returns:
            The names written.
        """
        if not self._open:
            self.open()
        images = {k for k, box in self._obs_spaces.items() if is_image_space(box)}
        written: list[str] = []

        def edit(f: h5py.File) -> None:
            data = f["data"]
            for name, arrays, attrs in demos:
                n = int(attrs["num_samples"])
                for key in ("actions", "rewards", "terminated", "truncated", "dones", "states"):
                    if len(arrays[key]) != n:
                        raise ValueError(f"{name}: {key} has {len(arrays[key])} rows, num_samples is {n}")
                if name in data:
                    raise ValueError(f"{name} exists already in {self.path}")
                group = data.create_group(name)
                for key, value in attrs.items():
                    group.attrs[key] = value
                for part in ("obs", "next_obs"):
                    sub = group.create_group(part)
                    for key, value in arrays[part].items():
                        write_array(sub, key, value, image=key in images)
                for key in (
                    "actions",
                    "rewards",
                    "terminated",
                    "truncated",
                    "dones",
                    "states",
                    "final_state",
                ):
                    write_array(group, key, arrays[key])
                data.attrs["total"] = int(data.attrs["total"]) + n
                written.append(name)

        fresh = not self._exists or (self.mode == "w" and not self.saved)
        create = (lambda f: write_header(f.create_group("data"), self.meta)) if fresh else None
        publish(self.path, edit, create=create, durable=self.durable)
        self._exists = True
        self.saved.extend(written)
        if written:
            self._next_index = max(self._next_index, max(demo_index(n) for n in written) + 1)
        return written

    def write_masks(self, masks: dict[str, list[str]]) -> None:
        """Publish ``/mask/<name>`` datasets (replacing masks of the same names)."""
        if not self._open:
            self.open()
        if not self._exists:
            raise UserError(f"{self.path}: no demos to mask")

        def edit(f: h5py.File) -> None:
            group = f.require_group("mask")
            for mask_name, names in masks.items():
                if mask_name in group:
                    del group[mask_name]
                group.create_dataset(mask_name, data=np.array([n.encode() for n in names], dtype="S"))

        publish(self.path, edit, create=None, durable=self.durable)


def write_array(group: h5py.Group, key: str, value: np.ndarray, image: bool = False) -> None:
    """Create one dataset, chunked and compressed per the schema's rules."""
    from gail_robot.data.schema import dataset_options

    arr = np.asarray(value)
    group.create_dataset(key, data=arr, **dataset_options(arr, image=image))
