"""Crash-safe demo recording: :class:`DemoWriter`.

An episode is buffered while it is recorded (its large per-step datasets cut into chunks, compressed
in a background thread or, with ``publish_process``, by the helper process that also publishes them;
see :mod:`gail_robot.data.chunks` and :mod:`gail_robot.data.publish_process`) and published as one
transaction when it ends (see :mod:`gail_robot.data.publish`): the demo file on disk is never modified in
place, so killing the recorder at any instant loses at most the episode in progress, and the file
opens and validates afterwards without repair tools. An exclusive lock keeps two writers apart.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import gymnasium as gym
import h5py
import numpy as np

from gail_robot.data.chunks import ChunkCompressor, ChunkedColumn, DeferredColumn, ShiftedColumn, StoredColumn
from gail_robot.data.publish import FileLock, SparePublisher, remove_leftovers
from gail_robot.data.publish_process import PublishProcess
from gail_robot.data.schema import (
    EnvMeta,
    dataset_options,
    demo_index,
    demo_name,
    is_image_space,
    obs_key_spaces,
    open_h5,
    read_header,
    write_header,
)
from gail_robot.errors import UserError


class _EpisodeBuffer:
    """The episode being recorded: large per-step datasets as compressing columns, small ones as lists."""

    def __init__(
        self,
        obs_spaces: dict[str, gym.spaces.Box],
        act_shape: tuple[int, ...],
        state_size: int,
        pool: ThreadPoolExecutor | None,
        deferred: bool,
        seed: int | None,
        source: str,
        model_file: str | None,
    ) -> None:
        self.seed = seed
        self.source = source
        self.model_file = model_file

        compressor = ChunkCompressor(pool, deferred=deferred)

        def column(box: gym.spaces.Box) -> ChunkedColumn:
            return ChunkedColumn(box.shape, box.dtype, image=is_image_space(box), compressor=compressor)

        self.next_obs = {k: column(b) for k, b in obs_spaces.items()}
        # obs[t] is next_obs[t - 1] within an episode: built from next_obs (see ShiftedColumn),
        # created at the first step, which brings obs[0]
        self.obs: dict[str, ShiftedColumn] = {}
        self.last_next_obs: dict[str, np.ndarray] = {}  # the objects passed as next_obs last step
        self.actions = ChunkedColumn(act_shape, np.float32, compressor=compressor)
        self.states = ChunkedColumn((state_size,), np.float64, compressor=compressor)
        self.rewards: list[float] = []
        self.terminated: list[bool] = []
        self.truncated: list[bool] = []

    def __len__(self) -> int:
        return len(self.rewards)

    def add_obs(self, obs: dict[str, np.ndarray], next_obs: dict[str, np.ndarray]) -> None:
        for key, value in obs.items():
            col = self.obs.get(key)
            if col is None:
                self.obs[key] = ShiftedColumn(self.next_obs[key], value)
                self.obs[key].append_previous()
            else:
                col.add(value, self.last_next_obs[key])
        for key, value in next_obs.items():
            self.next_obs[key].append(value)
        self.last_next_obs = next_obs

    def cancel(self) -> None:
        for col in (*self.obs.values(), *self.next_obs.values(), self.actions, self.states):
            col.cancel()


def write_array(group: h5py.Group, key: str, value: Any, image: bool = False) -> None:
    """Create one dataset (chunked and compressed per the schema) from an array or a StoredColumn."""
    if isinstance(value, StoredColumn):
        value.write(group, key)
        return
    arr = np.asarray(value)
    group.create_dataset(key, data=arr, **dataset_options(arr, image=image))


def demo_edit(name: str, arrays: dict[str, Any], attrs: dict[str, Any], images: set[str]) -> Any:
    """A transaction that adds one demo group (replayable: it writes the same bytes every time)."""
    n = int(attrs["num_samples"])

    def edit(f: h5py.File) -> None:
        data = f["data"]
        if name in data:
            raise ValueError(f"{name} exists already")
        group = data.create_group(name)
        for key, value in attrs.items():
            group.attrs[key] = value
        for part in ("obs", "next_obs"):
            sub = group.create_group(part)
            for key, value in arrays[part].items():
                write_array(sub, key, value, image=key in images)
        for key in ("actions", "rewards", "terminated", "truncated", "dones", "states", "final_state"):
            write_array(group, key, arrays[key])
        data.attrs["total"] = int(data.attrs["total"]) + n

    return edit


def _rows(value: Any) -> int:
    return value.count if isinstance(value, (StoredColumn, DeferredColumn)) else len(value)


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
        durable: fsync each published file (survives power loss, not only killed processes).
        background: compress in a background thread while recording (False: in the caller).
        publish_process: publish episodes from a helper process
            (:class:`~gail_robot.data.publish_process.PublishProcess`, what ``gail-robot record``
            uses): :meth:`end_episode` returns once the helper holds the episode (it is saved even
            if this process is killed right after) and the file shows it a few milliseconds
            later; :meth:`flush` waits for it, :attr:`published` lists what is on disk.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        env: gym.Env[Any, Any] | None = None,
        *,
        meta: EnvMeta | None = None,
        mode: str = "a",
        durable: bool = True,
        background: bool = True,
        publish_process: bool = False,
    ) -> None:
        if mode not in ("a", "x", "w"):
            raise ValueError(f"mode must be 'a', 'x' or 'w', got {mode!r}")
        if (env is None) == (meta is None):
            raise ValueError("give exactly one of env and meta")
        self.path = Path(path)
        self.meta: EnvMeta = meta if meta is not None else EnvMeta.from_env(env)  # type: ignore[arg-type]
        self.mode = mode
        self.durable = durable
        self.background = background
        self.publish_process = publish_process
        self._obs_spaces = obs_key_spaces(self.meta.observation_space)
        self._single_key = next(iter(self._obs_spaces)) if len(self._obs_spaces) == 1 else None
        self._single_shape = self._obs_spaces[self._single_key].shape if self._single_key else None
        self._state_shape = (self.meta.state_size,)
        self._images = {k for k, box in self._obs_spaces.items() if is_image_space(box)}
        self._act_shape = tuple(self.meta.action_space.shape)
        self._lock = FileLock(self.path)
        self._publisher = SparePublisher(self.path, durable)
        self._pool: ThreadPoolExecutor | None = None
        self._process: PublishProcess | None = None
        self._open = False
        self._episode: _EpisodeBuffer | None = None
        self._next_index = 0
        self._exists = False
        self._fresh = False  # the next publish creates the file (new file or mode "w")
        self.saved: list[str] = []  # published, or handed to the publishing process
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
            remove_leftovers(self.path)
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
            self._fresh = not self._exists or self.mode == "w"
        except BaseException:
            self._lock.release()
            raise
        if self.background and not self.publish_process:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-compress")
        self._publisher.executor = self._pool  # the spare catches up there while recording goes on
        if self.publish_process:
            assert self._lock.fd is not None
            self._process = PublishProcess(self.path, self.durable, self._lock.fd)
        self._open = True
        return self

    def close(self) -> None:
        """Drop an unfinished episode, remove the spare and release the lock."""
        self.discard_episode()
        if not self._open:
            return
        process, self._process = self._process, None
        try:
            if process is not None:
                process.close()  # waits for the episodes it holds; raises if one failed
        finally:
            self._publisher.close()
            self._publisher.executor = None
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            self._lock.release()
            self._open = False

    def __enter__(self) -> DemoWriter:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def published(self) -> list[str]:
        """Demos of this session on disk (with ``publish_process``, those it has confirmed)."""
        if self._process is None:
            return list(self.saved)
        self._process.poll()
        return self.saved[: len(self.saved) - len(self._process.pending)]

    def flush(self) -> None:
        """Wait until every saved episode is on disk (a no-op without ``publish_process``)."""
        if self._process is not None:
            self._process.flush()

    def _publish(self, edit: Any, replayable: bool = True) -> None:
        if self._process is not None:
            # This edit bypasses the helper: it forgets its spare, and the edit goes through a copy
            # so that no second spare (this process's) exists for the helper's to overwrite.
            self._process.reset_spare()
            replayable = False
        create = (lambda f: write_header(f.create_group("data"), self.meta)) if self._fresh else None
        try:
            self._publisher.publish(edit, create=create, replayable=replayable)
        except OSError as exc:  # disk full, permissions, ...: the published file is untouched
            kept = "" if self._fresh else f"; {self.path} still holds every demo saved before"
            raise UserError(f"cannot write {self.path}: {str(exc).splitlines()[0]}{kept}") from None
        self._fresh = False
        self._exists = True

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
        if self.meta.state_size is None:
            raise ValueError("recording needs the physics state size (EnvMeta.state_size)")
        self._episode = _EpisodeBuffer(
            self._obs_spaces,
            self._act_shape,
            self.meta.state_size,
            self._pool,
            self._process is not None,  # the publishing process compresses
            seed,
            source,
            model_file,
        )

    def _split_obs(self, obs: Any, what: str, step: int) -> dict[str, np.ndarray]:
        if self._single_key is not None and not isinstance(obs, dict):
            value = np.asarray(obs)
            box = self._obs_spaces[self._single_key]
            if value.shape != box.shape:
                raise ValueError(f"{what} at step {step} has shape {value.shape}, expected {box.shape}")
            return {self._single_key: value}
        if not isinstance(obs, dict):
            raise ValueError(f"{what} at step {step} is an array but the observation space is a Dict")
        if sorted(obs) != sorted(self._obs_spaces):
            raise ValueError(
                f"{what} at step {step} has keys {sorted(obs)}, expected {list(self._obs_spaces)}"
            )
        parts = {k: np.asarray(obs[k]) for k in self._obs_spaces}
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
            ValueError: NaN/inf or wrongly shaped action, wrong observation or state shapes, a step
                after a terminal step. Nothing is buffered then; earlier episodes stay saved.
        """
        # Every check comes before the first append, so a rejected step leaves the episode as it was.
        # This runs once per env step, hence the fast paths (a Humanoid step is ~200 us).
        ep = self._episode
        if ep is None:
            raise RuntimeError("call start_episode() before add_step()")
        step = len(ep.rewards)
        if step and (ep.terminated[-1] or ep.truncated[-1]):
            raise ValueError(f"step {step} follows a terminal step; end the episode first")
        act = np.asarray(action, dtype=np.float32)
        if act.shape != self._act_shape:
            raise ValueError(f"action at step {step} has shape {act.shape}, expected {self._act_shape}")
        # a sum is NaN/inf when any element is (and cheaper than isfinite().all()); huge finite
        # values that overflow it get the exact check. Not a dot product: BLAS releases the GIL,
        # and the compression thread then keeps the stepping thread waiting for it.
        if not math.isfinite(act.sum()) and not np.isfinite(act).all():
            raise ValueError(f"action at step {step} is not finite: {act.tolist()}")
        st = np.asarray(state, dtype=np.float64)
        if st.shape != self._state_shape:
            raise ValueError(
                f"physics state at step {step} has shape {st.shape}, expected ({self.meta.state_size},)"
            )
        key = self._single_key
        if (
            key is not None
            and step
            and type(obs) is np.ndarray
            and type(next_obs) is np.ndarray
            and obs.shape == next_obs.shape == self._single_shape
        ):
            ep.obs[key].add(obs, ep.last_next_obs[key])
            ep.next_obs[key].append(next_obs)
            ep.last_next_obs[key] = next_obs
        else:
            ep.add_obs(self._split_obs(obs, "obs", step), self._split_obs(next_obs, "next_obs", step))
        ep.actions.append(act)
        ep.states.append(st)
        ep.rewards.append(float(reward))
        ep.terminated.append(bool(terminated))
        ep.truncated.append(bool(truncated))

    def discard_episode(self) -> None:
        """Forget the episode in progress."""
        if self._episode is not None:
            self._episode.cancel()
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
        final = np.asarray(final_state, dtype=np.float64)
        if final.shape != (self.meta.state_size,):
            raise ValueError(f"final_state has shape {final.shape}, expected ({self.meta.state_size},)")
        if cut and not (ep.terminated[-1] or ep.truncated[-1]):
            ep.truncated[-1] = True
        for column in (*ep.obs.values(), *ep.next_obs.values(), ep.actions, ep.states):
            column.seal()  # all tails compress in the background while the first is awaited
        terminated = np.asarray(ep.terminated, dtype=bool)
        truncated = np.asarray(ep.truncated, dtype=bool)
        rewards = np.asarray(ep.rewards, dtype=np.float32)
        arrays: dict[str, Any] = {
            "obs": {k: c.finish() for k, c in ep.obs.items()},
            "next_obs": {k: c.finish() for k, c in ep.next_obs.items()},
            "actions": ep.actions.finish(),
            "rewards": rewards,
            "terminated": terminated,
            "truncated": truncated,
            "dones": (terminated | truncated).astype(np.uint8),
            "states": ep.states.finish(),
            "final_state": final,
        }
        attrs: dict[str, Any] = {
            "num_samples": len(ep),
            "seed": -1 if ep.seed is None else int(ep.seed),
            "source": ep.source,
            "success": bool(success),
            "return": float(np.sum(rewards, dtype=np.float64)),
        }
        if ep.model_file:
            attrs["model_file"] = ep.model_file
        name = demo_name(self._next_index)
        if self._process is not None:
            self._process.submit(name, arrays, attrs, self._images, self.meta if self._fresh else None)
            self._fresh = False
            self._exists = True
        else:
            self._publish(demo_edit(name, arrays, attrs, self._images))
        self._episode = None
        self._next_index += 1
        self.saved.append(name)
        self.saved_length = len(ep)
        return name

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
        written: list[str] = []

        def edit(f: h5py.File) -> None:
            for name, arrays, attrs in demos:
                n = int(attrs["num_samples"])
                for key in ("actions", "rewards", "terminated", "truncated", "dones", "states"):
                    if _rows(arrays[key]) != n:
                        raise ValueError(f"{name}: {key} has {_rows(arrays[key])} rows, num_samples is {n}")
                demo_edit(name, arrays, attrs, self._images)(f)
                written.append(name)

        self._publish(edit, replayable=False)  # the iterator can be consumed only once
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

        self._publish(edit)
