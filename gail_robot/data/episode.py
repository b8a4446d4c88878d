"""One recorded episode: :class:`Episode` (plain arrays), :class:`EpisodeBuffer` (built step by step)
and :func:`write_episode`, the only code that knows the per-demo datasets of schema v1 and how
they are chunked and compressed (``datasets/README.md``, ``docs/DESIGN.md §3``).

Imports only NumPy, h5py and ISA-L: the publishing process (:mod:`gail_robot.data.sink`) unpickles
episodes and writes them without loading Gymnasium or MuJoCo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
from isal import isal_zlib

# Numeric datasets: gzip level 1 without shuffle (measured, see datasets/README.md: levels 4-9
# gain <= 2 % size for 1.1-10x the time; shuffle does not help MuJoCo float64 data; LZF is 2x
# faster but only h5py reads it, gzip every HDF5 build). Compression runs in the publishing process,
# with ISA-L (see _deflate).
COMPRESSION = "gzip"
COMPRESSION_LEVEL = 1
#: target bytes per chunk of numeric data (rows per chunk = this / bytes per row).
CHUNK_BYTES = 64 * 1024


def chunk_rows(row_bytes: int, length: int) -> int:
    """Rows per chunk so that a chunk holds about :data:`CHUNK_BYTES` (at most ``length``)."""
    return int(max(1, min(length, CHUNK_BYTES // max(1, row_bytes))))


def dataset_options(array: np.ndarray) -> dict[str, Any]:
    """``create_dataset`` keyword arguments: chunked by rows and compressed; camera frames
    (``uint8`` ``(N, H, W, C)``) one frame per chunk, so a sampler decompresses only what it reads."""
    if array.ndim == 0 or array.size == 0:
        return {}
    if array.dtype == np.uint8 and array.ndim == 4:
        rows = 1
    else:
        rows = chunk_rows(int(array[0].nbytes) if array.ndim > 1 else array.dtype.itemsize, len(array))
    return {
        "chunks": (rows, *array.shape[1:]),
        "compression": COMPRESSION,
        "compression_opts": COMPRESSION_LEVEL,
    }


@dataclass(frozen=True)
class Episode:
    """One episode as plain arrays (N steps), checked and cast to the schema's dtypes on construction.

    Attributes:
        obs: ``{key: (N, ...)}`` observation before each step (a flat Box uses key ``"state"``).
        next_obs: ``{key: (N, ...)}`` the true successor of each ``obs`` (never a reset observation).
        actions: ``(N, A) float32`` actions passed to ``env.step``; for a ``Discrete`` action space
            ``(N,) int64`` indices (given as any integer array, schema version 2).
        rewards: ``(N,) float32``.
        terminated: ``(N,) bool``, only the last step may be True.
        truncated: ``(N,) bool``, only the last step may be True.
        states: ``(N, S) float64`` physics state before each step (S may be 0: not replayable).
        final_state: ``(S,) float64`` physics state after the last step.
        seed: the ``env.reset`` seed (-1: unknown).
        source: who acted (``"teleop:keyboard"``, ``"scripted"``, ``"policy:<file>"``, ...).
        success: whether the episode solved the task.
        model_file: MJCF XML of the model, when known.
        policy_actions: intervention recordings only (docs/DESIGN.md §3): ``(N, A) float32`` (``(N,)
            int64`` for ``Discrete``) the action the policy proposed at each step; None otherwise.
        interventions: intervention recordings only: ``(N,) uint8``, 1 where the person drove (the
            executed ``actions`` row is theirs), 0 where the policy did; None otherwise.

    Raises:
        ValueError: empty episode, row counts or shapes that disagree, an episode end before the
            last step, only one of ``policy_actions`` / ``interventions``, a flag other than 0/1.
    """

    obs: dict[str, np.ndarray]
    next_obs: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    states: np.ndarray
    final_state: np.ndarray
    seed: int = -1
    source: str = "unknown"
    success: bool = False
    model_file: str | None = field(default=None, repr=False)
    policy_actions: np.ndarray | None = field(default=None, repr=False)
    interventions: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        def cast(name: str, dtype: Any, ndim: int) -> np.ndarray:
            arr = np.asarray(getattr(self, name), dtype=dtype)
            if arr.ndim != ndim:
                raise ValueError(f"episode {name} must be {ndim}-D, got shape {arr.shape}")
            object.__setattr__(self, name, arr)
            return arr

        given = np.asarray(self.actions)
        discrete = given.ndim == 1 and np.issubdtype(given.dtype, np.integer)
        actions = cast("actions", np.int64, 1) if discrete else cast("actions", np.float32, 2)
        n = len(actions)
        if n == 0:
            raise ValueError("cannot save an empty episode")
        rows = {
            "actions": actions,
            "rewards": cast("rewards", np.float32, 1),
            "terminated": cast("terminated", np.bool_, 1),
            "truncated": cast("truncated", np.bool_, 1),
            "states": cast("states", np.float64, 2),
        }
        final = cast("final_state", np.float64, 1)
        if (self.policy_actions is None) != (self.interventions is None):
            raise ValueError("episode policy_actions and interventions come together (both or neither)")
        if self.policy_actions is not None:
            flags = np.asarray(self.interventions)
            if flags.ndim != 1 or not (np.issubdtype(flags.dtype, np.integer) or flags.dtype == np.bool_):
                raise ValueError(
                    f"episode interventions must be 1-D 0/1 flags, got {flags.dtype} {flags.shape}"
                )
            if flags.size and (flags.min() < 0 or flags.max() > 1):
                raise ValueError("episode interventions must be 0 or 1")
            flags8 = flags.astype(np.uint8)
            object.__setattr__(self, "interventions", flags8)
            proposed = cast("policy_actions", actions.dtype, actions.ndim)
            if proposed.shape[1:] != actions.shape[1:]:
                raise ValueError(
                    f"episode policy_actions have shape {proposed.shape[1:]} per step, "
                    f"actions {actions.shape[1:]}"
                )
            rows["policy_actions"] = proposed
            rows["interventions"] = flags8
        if sorted(self.obs) != sorted(self.next_obs) or not self.obs:
            raise ValueError(
                f"episode obs keys {list(self.obs)} differ from next_obs keys {list(self.next_obs)}"
            )
        for key in self.obs:
            obs, nxt = np.asarray(self.obs[key]), np.asarray(self.next_obs[key])
            if obs.shape != nxt.shape:
                raise ValueError(f"episode obs[{key!r}] has shape {obs.shape}, next_obs[{key!r}] {nxt.shape}")
            rows[f"obs[{key!r}]"] = obs
        for name, arr in rows.items():
            if len(arr) != n:
                raise ValueError(f"episode {name} has {len(arr)} rows, actions have {n}")
        if final.shape != self.states.shape[1:]:
            raise ValueError(
                f"episode final_state has shape {final.shape}, states rows {self.states.shape[1:]}"
            )
        ends = self.terminated | self.truncated
        if ends[:-1].any():
            raise ValueError(
                f"episode ends (terminated/truncated) before its last step, at step {int(ends.argmax())}"
            )

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def intervened(self) -> bool:
        """Whether this is an intervention recording (``policy_actions`` and ``interventions`` set)."""
        return self.interventions is not None

    @property
    def episode_return(self) -> float:
        """Sum of the rewards (in float64)."""
        return float(np.sum(self.rewards, dtype=np.float64))


def _deflate(block: np.ndarray, rows: int) -> bytes:
    """One stored chunk: ``block`` padded to ``rows`` rows (HDF5 stores edge chunks full size), deflated."""
    if len(block) < rows:
        block = np.concatenate([block, np.zeros((rows - len(block), *block.shape[1:]), block.dtype)])
    # ISA-L writes a standard zlib stream (HDF5's gzip filter decodes it) about 10x faster than zlib
    # at the same ratio (613 vs 61 MB/s on Humanoid-v5 observations); its level 1 is zlib's level 1.
    return isal_zlib.compress(np.ascontiguousarray(block).data.cast("B"), COMPRESSION_LEVEL)


def _create(group: h5py.Group, key: str, array: np.ndarray, cache: dict[str, list[bytes]] | None) -> None:
    """``group[key]`` with the schema's chunking and gzip filter; chunks compressed here, stored directly."""
    options = dataset_options(array)
    if not options:
        group.create_dataset(key, data=array)
        return
    ds = group.create_dataset(key, shape=array.shape, dtype=array.dtype, **options)
    rows = options["chunks"][0]
    chunks = cache.get(ds.name) if cache is not None else None
    if chunks is None:
        chunks = [_deflate(array[i : i + rows], rows) for i in range(0, len(array), rows)]
        if cache is not None:
            cache[ds.name] = chunks
    zeros = (0,) * (array.ndim - 1)
    for i, chunk in enumerate(chunks):
        ds.id.write_direct_chunk((i * rows, *zeros), chunk)


def write_episode(
    data: h5py.Group, name: str, episode: Episode, cache: dict[str, list[bytes]] | None = None
) -> None:
    """Create the demo group ``data[name]`` (schema v1) and add its steps to ``data.attrs["total"]``.

    Args:
        data: the ``/data`` group.
        name: ``demo_<i>``.
        episode: what to write.
        cache: compressed chunks by dataset, filled on the first call and reused by the next ones
            (the publishing process writes each episode twice: see :mod:`gail_robot.data.transaction`).

    Raises:
        ValueError: ``name`` exists already.
    """
    if name in data:
        raise ValueError(f"{name} exists already")
    group = data.create_group(name)
    group.attrs["num_samples"] = len(episode)
    group.attrs["seed"] = int(episode.seed)
    group.attrs["source"] = episode.source
    group.attrs["success"] = bool(episode.success)
    group.attrs["return"] = episode.episode_return
    if episode.model_file:
        group.attrs["model_file"] = episode.model_file
    for part, values in (("obs", episode.obs), ("next_obs", episode.next_obs)):
        sub = group.create_group(part)
        for key, arr in values.items():
            _create(sub, key, np.asarray(arr), cache)
    ends = episode.terminated | episode.truncated
    for key, arr in (
        ("actions", episode.actions),
        ("rewards", episode.rewards),
        ("terminated", episode.terminated),
        ("truncated", episode.truncated),
        ("dones", ends.astype(np.uint8)),  # robomimic reads dones
        ("states", episode.states),
        ("final_state", episode.final_state),
    ):
        _create(group, key, arr, cache)
    if episode.policy_actions is not None and episode.interventions is not None:
        # optional intervention datasets (docs/DESIGN.md §3): older readers ignore them
        _create(group, "policy_actions", episode.policy_actions, cache)
        _create(group, "interventions", episode.interventions, cache)
    data.attrs["total"] = int(data.attrs["total"]) + len(episode)


_sum = np.add.reduce  # without ndarray.sum's Python wrapper


class EpisodeBuffer:
    """The episode being recorded: every step checked, then copied into preallocated growing arrays.

    Args:
        obs_spaces: ``{key: (row shape, dtype)}`` of the observation (one key for a flat Box).
        act_shape: shape of one action (``()`` for ``Discrete``).
        state_size: length S of the physics state.
        seed, source, model_file: stored with the episode (see :class:`Episode`).
        capacity: rows allocated at first (doubled when full).
        n_actions: ``n`` of a ``Discrete(n)`` action space: actions are integers in ``[0, n)``
            stored as int64; 0 for a Box.
    """

    def __init__(
        self,
        obs_spaces: dict[str, tuple[tuple[int, ...], Any]],
        act_shape: tuple[int, ...],
        state_size: int,
        seed: int | None = None,
        source: str = "unknown",
        model_file: str | None = None,
        capacity: int = 1024,
        n_actions: int = 0,
    ) -> None:
        self.reset(seed, source, model_file)
        self._n_actions = int(n_actions)
        self._shapes = {k: tuple(shape) for k, (shape, _) in obs_spaces.items()}
        self._single = next(iter(obs_spaces)) if len(obs_spaces) == 1 else None
        self._act_shape = tuple(act_shape)
        self._state_shape = (int(state_size),)
        self._obs = {k: np.empty((capacity, *shape), dtype) for k, (shape, dtype) in obs_spaces.items()}
        self._next = {k: np.empty((capacity, *shape), dtype) for k, (shape, dtype) in obs_spaces.items()}
        self._actions = np.empty((capacity, *act_shape), np.int64 if self._n_actions else np.float32)
        self._states = np.empty((capacity, state_size), np.float64)

    def reset(
        self,
        seed: int | None = None,
        source: str = "unknown",
        model_file: str | None = None,
        intervention: bool = False,
    ) -> None:
        """Start a new episode in the same arrays (already in memory: no page faults on the first rows).

        ``intervention``: every step carries the policy's proposed action and a takeover flag.
        """
        self.seed = -1 if seed is None else int(seed)
        self.source = source
        self.model_file = model_file
        self.intervention = bool(intervention)
        self._proposed: list[np.ndarray] = []
        self._flags: list[int] = []
        self._rewards: list[float] = []
        self._terminated: list[bool] = []
        self._truncated: list[bool] = []
        # Within an episode the caller usually passes the previous next_obs (the same object) as
        # obs: while it does, obs rows are not copied (they are next_obs shifted by one step).
        self._shifted = True
        self._last_next: Any = None

    def _unshift(self, step: int) -> None:
        """Copy the obs rows so far out of next_obs (the caller passed an obs of its own)."""
        for k in self._obs:
            self._obs[k][1:step] = self._next[k][: step - 1]
        self._shifted = False

    def __len__(self) -> int:
        return len(self._rewards)

    def _parts(self, obs: Any, what: str, step: int) -> dict[str, np.ndarray]:
        """``obs`` as ``{key: array}`` with every shape checked."""
        if self._single is not None and not isinstance(obs, dict):
            parts = {self._single: obs if type(obs) is np.ndarray else np.asarray(obs)}
        elif not isinstance(obs, dict):
            raise ValueError(f"{what} at step {step} is an array but the observation space is a Dict")
        elif sorted(obs) != sorted(self._shapes):
            raise ValueError(f"{what} at step {step} has keys {sorted(obs)}, expected {list(self._shapes)}")
        else:
            parts = {k: np.asarray(obs[k]) for k in self._shapes}
        for key, value in parts.items():
            if value.shape != self._shapes[key]:
                where = "" if self._single is not None else f"[{key!r}]"
                raise ValueError(
                    f"{what}{where} at step {step} has shape {value.shape}, expected {self._shapes[key]}"
                )
        return parts

    def add_step(
        self,
        obs: Any,
        action: Any,
        reward: float,
        next_obs: Any,
        terminated: bool,
        truncated: bool,
        state: Any,
        policy_action: Any = None,
        intervention: bool | None = None,
    ) -> None:
        """Append one transition (argument meanings: :meth:`gail_robot.data.DemoWriter.add_step`).

        Raises:
            ValueError: a wrongly shaped or non-finite action, wrong observation or state shapes,
                a step after a terminal step, a missing (or unexpected) policy action / intervention
                flag. The buffer is then unchanged.
        """
        # Every check comes before the first write, so a rejected step leaves the buffer as it was.
        # This runs once per env step (a Humanoid step is ~200 us): keep it to a few microseconds.
        step = len(self._rewards)
        if step and (self._terminated[-1] or self._truncated[-1]):
            raise ValueError(f"step {step} follows a terminal step; end the episode first")
        if self._n_actions:
            act = self._discrete_action(action, step)
        else:
            act = np.asarray(action, dtype=np.float32)
            if act.shape != self._act_shape:
                raise ValueError(f"action at step {step} has shape {act.shape}, expected {self._act_shape}")
            # a sum is NaN/inf when any element is (cheaper than isfinite().all()); huge finite
            # values that overflow it get the exact check
            if not math.isfinite(_sum(act)) and not np.isfinite(act).all():
                raise ValueError(f"action at step {step} is not finite: {act.tolist()}")
        proposed = None
        if self.intervention:
            if policy_action is None or intervention is None:
                raise ValueError(
                    f"step {step} of an intervention episode needs policy_action and intervention"
                )
            if self._n_actions:
                proposed = self._discrete_action(policy_action, step)
            else:
                proposed = np.array(policy_action, dtype=np.float32)
                if proposed.shape != self._act_shape or not np.isfinite(proposed).all():
                    raise ValueError(
                        f"policy action at step {step} is {proposed.tolist()}: expected a finite "
                        f"{self._act_shape} action"
                    )
        elif policy_action is not None or intervention is not None:
            raise ValueError(
                "policy_action / intervention given for an episode not started as an intervention one"
            )
        st = np.asarray(state, dtype=np.float64)
        if st.shape != self._state_shape:
            raise ValueError(
                f"physics state at step {step} has shape {st.shape}, expected {self._state_shape}"
            )
        key = self._single
        obs_parts: tuple[tuple[str, np.ndarray], ...]
        next_parts: tuple[tuple[str, np.ndarray], ...]
        if (  # the common case, one array per observation: no dicts
            key is not None
            and type(obs) is np.ndarray
            and type(next_obs) is np.ndarray
            and obs.shape == next_obs.shape == self._shapes[key]
        ):
            obs_parts, next_parts = ((key, obs),), ((key, next_obs),)
        else:
            obs_parts = tuple(self._parts(obs, "obs", step).items())
            next_parts = tuple(self._parts(next_obs, "next_obs", step).items())
        if step == len(self._actions):
            self._grow()
        if self._shifted and step and obs is not self._last_next:
            self._unshift(step)
        if not (self._shifted and step):  # while shifted, obs[t] is next_obs[t - 1]: not copied
            for k, value in obs_parts:
                self._obs[k][step] = value
        self._last_next = next_obs
        for k, value in next_parts:
            self._next[k][step] = value
        self._actions[step] = act
        self._states[step] = st
        self._rewards.append(float(reward))
        self._terminated.append(bool(terminated))
        self._truncated.append(bool(truncated))
        if proposed is not None:
            self._proposed.append(proposed)
            self._flags.append(1 if intervention else 0)

    def _discrete_action(self, action: Any, step: int) -> np.ndarray:
        """A ``Discrete(n)`` action as an int64 scalar array; ValueError unless an integer in ``[0, n)``."""
        value = np.asarray(action)
        if value.shape != () or not np.issubdtype(value.dtype, np.integer):
            raise ValueError(
                f"action at step {step} is {value.tolist()!r} ({value.dtype}), expected one integer "
                f"in [0, {self._n_actions})"
            )
        if not 0 <= int(value) < self._n_actions:
            raise ValueError(f"action at step {step} is {int(value)}, outside [0, {self._n_actions})")
        return value.astype(np.int64)

    def _grow(self) -> None:
        def doubled(arr: np.ndarray) -> np.ndarray:
            out = np.empty((2 * len(arr), *arr.shape[1:]), arr.dtype)
            out[: len(arr)] = arr
            return out

        self._obs = {k: doubled(v) for k, v in self._obs.items()}
        self._next = {k: doubled(v) for k, v in self._next.items()}
        self._actions = doubled(self._actions)
        self._states = doubled(self._states)

    def finish(self, success: bool, final_state: Any, cut: bool = False) -> Episode:
        """The recorded steps as an :class:`Episode` (its arrays are views into this buffer: valid
        until :meth:`reset`).

        Args:
            success: whether the episode solved the task.
            final_state: ``(S,) float64`` physics state after the last step.
            cut: the episode was ended early (by the user or a step limit): its last step is
                marked truncated unless the env already ended it.
        """
        n = len(self)
        if n == 0:
            raise ValueError("cannot save an empty episode")
        final = np.asarray(final_state, dtype=np.float64)
        if final.shape != self._state_shape:
            raise ValueError(f"final_state has shape {final.shape}, expected {self._state_shape}")
        truncated = np.array(self._truncated, dtype=bool)
        terminated = np.array(self._terminated, dtype=bool)
        if cut and not (terminated[-1] or truncated[-1]):
            truncated[-1] = True
        if self._shifted:
            self._unshift(n)
        return Episode(
            obs={k: v[:n] for k, v in self._obs.items()},
            next_obs={k: v[:n] for k, v in self._next.items()},
            actions=self._actions[:n],
            rewards=np.array(self._rewards, dtype=np.float32),
            terminated=terminated,
            truncated=truncated,
            states=self._states[:n],
            final_state=final,
            seed=self.seed,
            source=self.source,
            success=bool(success),
            model_file=self.model_file,
            policy_actions=np.stack(self._proposed) if self.intervention else None,
            interventions=np.array(self._flags, dtype=np.uint8) if self.intervention else None,
        )
