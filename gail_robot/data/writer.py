"""Crash-safe demo recording: :class:`DemoWriter` (``docs/DESIGN.md §3``).

The episode being recorded lives in an :class:`~gail_robot.data.episode.EpisodeBuffer`; a finished
:class:`~gail_robot.data.episode.Episode` goes to the sink (:mod:`gail_robot.data.sink`, a helper
process) which publishes it as one transaction (:mod:`gail_robot.data.transaction`): the demo file
on disk is never modified in place, so killing the recorder at any instant loses at most the
episode in progress, and the file opens and validates afterwards without repair tools. An
episode is *saved* once the sink confirms it (:attr:`DemoWriter.saved`), not when it is handed over.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import gymnasium as gym
import h5py
import numpy as np

from gail_robot.data.episode import Episode, EpisodeBuffer, write_episode
from gail_robot.data.schema import (
    EnvMeta,
    demo_index,
    demo_name,
    describe_space,
    header_attrs,
    is_discrete,
    obs_key_spaces,
    open_h5,
    read_header,
)
from gail_robot.data.sink import PublishError, PublishProcess, failure_reason
from gail_robot.data.transaction import FileLock, publish_once, remove_leftovers
from gail_robot.errors import UserError


def describe_names(names: list[str]) -> str:
    """``demo_0..demo_11, demo_14`` (runs of consecutive demos as ranges)."""
    runs: list[list[int]] = []
    for i in sorted(demo_index(n) for n in names):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(demo_name(a) if a == b else f"{demo_name(a)}..{demo_name(b)}" for a, b in runs)


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
        # closing waited until every episode was saved (writer.saved)

    Args:
        path: the demo file. Created when missing.
        env: the env being recorded (its id, kwargs, spaces and state size go into the header);
            or give ``meta`` instead.
        meta: env metadata when no env is at hand (converters, merge).
        mode: ``"a"`` appends to an existing file after checking it holds the same env and
            spaces; ``"x"`` refuses an existing file; ``"w"`` replaces it when the first
            transaction is published (never before).
        durable: fsync each transaction (survives power loss, not only killed processes).
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
        self._lock = FileLock(self.path)
        self._sink: PublishProcess | None = None
        self._buffer: EpisodeBuffer | None = None  # the episode in progress
        self._idle_buffer: EpisodeBuffer | None = None  # reused for the next one
        self._open = False
        self._failed = False
        self._next_index = 0
        self._fresh = False  # the next transaction creates the file (new file or mode "w")
        self._sink_base = 0  # len(saved) when the sink started (its own list starts empty)
        self._before: list[str] = []  # demos in the file when it was opened, or written by write_demos
        #: demos of this session that are on disk (confirmed by the sink), in order
        self.saved: list[str] = []

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
            exists = self.path.exists()
            if exists and self.mode == "x":
                raise UserError(f"{self.path}: exists already (append to it or choose another file)")
            if exists and self.mode == "a":
                with open_h5(self.path) as f:
                    existing = read_header(f, self.path)
                    self._before = [n for n in f["data"] if n.startswith("demo_")]
                problem = existing.mismatch(self.meta)
                if problem is not None:
                    raise UserError(f"{self.path}: cannot append: {problem}")
                self._next_index = max((demo_index(n) for n in self._before), default=-1) + 1
            self._fresh = not exists or self.mode == "w"
        except BaseException:
            self._lock.release()
            raise
        self._open = True
        return self

    def close(self) -> None:
        """Drop an unfinished episode, wait until every finished one is saved, release the lock.

        Raises:
            UserError: an episode could not be saved (the message names what is safe).
        """
        self.discard_episode()
        if not self._open:
            return
        try:
            self._stop_sink()
        finally:
            remove_leftovers(self.path)  # a publishing process that died leaves its spare
            self._lock.release()
            self._open = False

    def __enter__(self) -> DemoWriter:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.close()
            return
        try:  # the exception in flight is what the user sees
            self.close()
        except UserError:
            pass

    # -- the sink ----------------------------------------------------------------------------

    def _failure(self, err: PublishError) -> UserError:
        """One line: what failed, what is saved, what is not."""
        self._failed = True
        saved = self._before + self.saved
        safe = "no demo is saved"
        if saved:
            safe = f"{describe_names(saved)} {'is' if len(saved) == 1 else 'are'} saved"
        lost = ", ".join(err.lost)
        if lost and self._buffer is not None:
            lost += " (and the episode in progress) were not"
        elif lost:
            lost += " was not" if len(err.lost) == 1 else " were not"
        elif self._buffer is not None:
            lost = "the episode in progress was not"
        return UserError(f"cannot write {self.path}: {err.reason}; {safe}{', ' + lost if lost else ''}")

    def _sync(self, call: Any) -> None:
        """Run a sink call and move its confirmations into :attr:`saved`."""
        sink = self._sink
        if sink is None:
            return
        try:
            call()
        except PublishError as err:
            self.saved.extend(sink.saved[len(self.saved) - self._sink_base :])
            raise self._failure(err) from None
        self.saved.extend(sink.saved[len(self.saved) - self._sink_base :])

    def _stop_sink(self) -> None:
        sink = self._sink
        if sink is None:
            return
        reported = self._failed  # a failure raised before is not raised again
        try:
            self._sync(sink.close)
        except UserError:
            if not reported:
                raise
        finally:
            self._sink = None

    @property
    def pending(self) -> list[str]:
        """Episodes handed to the sink and not yet saved, in order."""
        return [] if self._sink is None else self._sink.pending

    def poll(self) -> None:
        """Collect the sink's confirmations into :attr:`saved` without waiting.

        Raises:
            UserError: an episode could not be saved. Nothing more is saved after it.
        """
        if self._sink is not None:
            self._sync(self._sink.poll)

    def flush(self) -> None:
        """Wait until every finished episode is saved (in :attr:`saved`).

        Raises:
            UserError: as :meth:`poll`.
        """
        if self._sink is not None:
            self._sync(self._sink.flush)

    # -- episodes ----------------------------------------------------------------------------

    def next_demo_name(self, offset: int = 0) -> str:
        """The name the next finished demo gets (``offset`` further demos later)."""
        if not self._open:
            self.open()
        return demo_name(self._next_index + offset)

    @property
    def episode_length(self) -> int:
        """Steps recorded so far in the current episode (0 outside an episode)."""
        return 0 if self._buffer is None else len(self._buffer)

    def start_episode(
        self,
        seed: int | None = None,
        source: str = "unknown",
        model_file: str | None = None,
        intervention: bool = False,
    ) -> None:
        """Begin buffering a new episode.

        Args:
            seed: the ``env.reset`` seed of the episode (stored; -1 when None).
            source: who acted: ``"teleop:keyboard"``, ``"scripted"``, ``"policy:<name>"``,
                ``"intervention:<device>"``, ...
            model_file: MJCF XML of the model, when known.
            intervention: a policy drives and a person may take over: every :meth:`add_step`
                gives ``policy_action`` and ``intervention`` (stored as ``policy_actions`` and
                ``interventions``, docs/DESIGN.md §3).

        Raises:
            UserError: an earlier episode could not be saved.
        """
        if not self._open:
            self.open()
        if self._buffer is not None:
            raise RuntimeError("an episode is already in progress: end or discard it first")
        if self.meta.state_size is None:
            raise ValueError("recording needs the physics state size (EnvMeta.state_size)")
        self.poll()
        if self._sink is None:  # started now: it starts up while the episode is recorded
            assert self._lock.fd is not None
            self._sink = PublishProcess(self.path, self.durable, self._lock.fd)
            self._sink_base = len(self.saved)
        if self._idle_buffer is None:
            shapes = {k: (box.shape, box.dtype) for k, box in self._obs_spaces.items()}
            space = self.meta.action_space
            act_shape = tuple(space.shape or ())
            n_actions = int(space.n) if isinstance(space, gym.spaces.Discrete) else 0
            self._idle_buffer = EpisodeBuffer(shapes, act_shape, self.meta.state_size, n_actions=n_actions)
        self._buffer, self._idle_buffer = self._idle_buffer, None
        self._buffer.reset(seed, source, model_file, intervention)

    def add_step(
        self,
        obs: Any,
        action: np.ndarray,
        reward: float,
        next_obs: Any,
        terminated: bool,
        truncated: bool,
        state: np.ndarray,
        policy_action: np.ndarray | None = None,
        intervention: bool | None = None,
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
            policy_action: intervention episodes only: the action the policy proposed.
            intervention: intervention episodes only: whether the person drove this step.

        Raises:
            ValueError: NaN/inf or wrongly shaped action, wrong observation or state shapes, a step
                after a terminal step. Nothing is buffered then; earlier episodes stay saved.
        """
        if self._buffer is None:
            raise RuntimeError("call start_episode() before add_step()")
        self._buffer.add_step(
            obs, action, reward, next_obs, terminated, truncated, state, policy_action, intervention
        )

    def discard_episode(self) -> None:
        """Forget the episode in progress."""
        if self._buffer is not None:
            self._buffer, self._idle_buffer = None, self._buffer

    def end_episode(self, success: bool, final_state: np.ndarray, cut: bool = False) -> str:
        """Hand the buffered episode to the sink and return its name (``demo_<i>``) at once.

        The demo is saved (in :attr:`saved`) once the sink confirms it: see :meth:`poll`,
        :meth:`flush` and :meth:`close`. It is saved even if this process is killed right after.

        Args:
            success: whether the episode solved the task.
            final_state: ``(S,) float64`` physics state after the last step.
            cut: the episode was ended early (by the user or a step limit): its last step is
                marked truncated unless the env already ended it.

        Raises:
            UserError: an earlier episode could not be saved.
        """
        if self._buffer is None:
            raise RuntimeError("no episode in progress")
        episode = self._buffer.finish(success, final_state, cut)
        assert self._sink is not None
        name = demo_name(self._next_index)
        header = header_attrs(self.meta) if self._fresh else None
        sink = self._sink
        self._sync(lambda: sink.submit(name, episode, header))
        self._buffer, self._idle_buffer = None, self._buffer  # the episode was copied out of it
        self._fresh = False
        self._next_index += 1
        return name

    # -- one-off transactions (converters, merge, split) ---------------------------------------

    def _check(self, name: str, episode: Episode) -> None:
        demo_index(name)
        shapes = {k: box.shape for k, box in self._obs_spaces.items()}
        got = {k: v.shape[1:] for k, v in episode.obs.items()}
        if got != shapes:
            raise UserError(f"{self.path}: {name} has observations {got}, the observation space {shapes}")
        act = tuple(self.meta.action_space.shape or ())
        if episode.actions.shape[1:] != act:
            raise UserError(
                f"{self.path}: {name} has actions of shape {episode.actions.shape[1:]}, expected {act}"
            )
        if (episode.actions.dtype == np.int64) != is_discrete(self.meta.action_space):
            raise UserError(
                f"{self.path}: {name} has {episode.actions.dtype} actions, the action space is "
                f"{describe_space(self.meta.action_space)}"
            )
        if episode.policy_actions is not None and episode.policy_actions.shape != episode.actions.shape:
            raise UserError(
                f"{self.path}: {name} has policy_actions of shape {episode.policy_actions.shape}, "
                f"actions {episode.actions.shape}"
            )

    def _publish_once(self, edit: Any) -> None:
        """One transaction in this process (the sink, if running, is stopped first: one spare at a time)."""
        if not self._open:
            self.open()
        self._stop_sink()
        header = header_attrs(self.meta) if self._fresh else None
        create = (lambda f: f.create_group("data").attrs.update(header)) if header is not None else None
        try:
            publish_once(self.path, edit, create, self.durable)
        except OSError as exc:  # disk full, permissions, ...: the published file is untouched
            kept = "" if self._fresh else f"; {self.path} still holds every demo saved before"
            raise UserError(f"cannot write {self.path}: {failure_reason(exc)}{kept}") from None
        self._fresh = False

    def write_demos(
        self, demos: Iterable[tuple[str, Episode]], masks: Mapping[str, list[str]] | None = None
    ) -> list[str]:
        """Write complete demos (and masks) in one transaction (converters, merge).

        Args:
            demos: ``(name, episode)`` pairs, consumed lazily (one demo in memory at a time).
            masks: ``/mask/<name>`` lists of demo names, read after ``demos`` is consumed.

        Returns:
            The names written.
        """
        written: list[str] = []

        def edit(f: h5py.File) -> None:
            for name, episode in demos:
                self._check(name, episode)
                write_episode(f["data"], name, episode)
                written.append(name)
            if masks:
                _write_masks(f, masks)

        self._publish_once(edit)
        self._before.extend(written)
        if written:
            self._next_index = max(self._next_index, max(demo_index(n) for n in written) + 1)
        return written

    def write_masks(self, masks: Mapping[str, list[str]]) -> None:
        """Publish ``/mask/<name>`` datasets (replacing masks of the same names)."""
        if not self._open:
            self.open()
        if self._fresh:
            raise UserError(f"{self.path}: no demos to mask")
        self._publish_once(lambda f: _write_masks(f, masks))


def _write_masks(f: h5py.File, masks: Mapping[str, list[str]]) -> None:
    group = f.require_group("mask")
    for mask_name, names in masks.items():
        if mask_name in group:
            del group[mask_name]
        group.create_dataset(mask_name, data=np.array([n.encode() for n in names], dtype="S"))
