"""Reading demo files: :class:`DemoDataset`, per-demo arrays and transition batches.

The HDF5 handle is opened lazily and per process (h5py handles do not survive ``fork``; the
dataset can be pickled to DataLoader workers), demos are listed in numeric order, and the
transition arrays used for training are read once and cached in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np

from gail_robot.data.episode import Episode
from gail_robot.data.schema import (
    EnvMeta,
    describe_space,
    is_discrete,
    obs_keys,
    open_h5,
    read_header,
    same_shapes,
    same_space,
    sorted_demo_names,
)
from gail_robot.errors import UserError


@dataclass(frozen=True)
class Transitions:
    """Transition pairs for the discriminator and BC (validated on construction).

    Attributes:
        obs: ``(M, obs_dim) float32`` observations (dict observations flattened in key order).
        actions: ``(M, act_dim) float32``, or ``(M,) int64`` indices for a ``Discrete`` action space.
        next_obs: ``(M, obs_dim) float32`` true successors of ``obs``.
        terminated: ``(M,) bool`` whether ``next_obs`` is terminal (truncations are not).
    """

    obs: np.ndarray
    actions: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray

    def __post_init__(self) -> None:
        m = len(self.obs)
        discrete = isinstance(self.actions, np.ndarray) and self.actions.dtype == np.int64
        for name, arr, ndim, dtype in (
            ("obs", self.obs, 2, np.float32),
            ("actions", self.actions, *((1, np.int64) if discrete else (2, np.float32))),
            ("next_obs", self.next_obs, 2, np.float32),
            ("terminated", self.terminated, 1, np.bool_),
        ):
            if not isinstance(arr, np.ndarray) or arr.ndim != ndim or arr.dtype != dtype:
                got = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
                raise ValueError(
                    f"Transitions.{name} must be a {ndim}-D {np.dtype(dtype).name} array, got {got}"
                )
            if len(arr) != m:
                raise ValueError(f"Transitions.{name} has {len(arr)} rows, obs has {m}")
        if self.next_obs.shape != self.obs.shape:
            raise ValueError(f"next_obs shape {self.next_obs.shape} differs from obs shape {self.obs.shape}")

    def __len__(self) -> int:
        return len(self.obs)

    def index(self, idx: np.ndarray | slice) -> Transitions:
        """The transitions at ``idx`` (fancy index or slice)."""
        return Transitions(self.obs[idx], self.actions[idx], self.next_obs[idx], self.terminated[idx])

    def sample(self, batch_size: int, rng: np.random.Generator) -> Transitions:
        """A uniform batch drawn with replacement."""
        if len(self) == 0:
            raise ValueError("cannot sample from empty transitions")
        return self.index(rng.integers(0, len(self), size=batch_size))

    def batches(self, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[Transitions]:
        """One pass in minibatches (shuffled when ``rng`` is given; the last batch may be short)."""
        order = np.arange(len(self)) if rng is None else rng.permutation(len(self))
        for start in range(0, len(self), batch_size):
            yield self.index(order[start : start + batch_size])


@dataclass(frozen=True)
class Demo:
    """One recorded episode, read fully into memory.

    Attributes:
        name: ``demo_<i>``.
        obs: ``{key: (N, ...)}`` observations before each step.
        next_obs: ``{key: (N, ...)}`` true successor observations.
        actions: ``(N, A) float32``, or ``(N,) int64`` for a ``Discrete`` action space.
        rewards: ``(N,) float32``.
        terminated: ``(N,) bool``.
        truncated: ``(N,) bool``.
        states: ``(N, S) float64`` physics state before each step.
        final_state: ``(S,) float64`` physics state after the last step.
        attrs: the demo group's attributes (seed, source, success, return, model_file, ...).
        policy_actions: intervention recordings (docs/DESIGN.md §3): ``(N, A)`` the actions the
            policy proposed; None when the demo has none.
        interventions: intervention recordings: ``(N,) uint8``, 1 where the person drove; None when
            the demo has none.
    """

    name: str
    obs: dict[str, np.ndarray]
    next_obs: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    states: np.ndarray
    final_state: np.ndarray
    attrs: dict[str, Any]
    policy_actions: np.ndarray | None = None
    interventions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def success(self) -> bool:
        """The recorded success flag."""
        return bool(self.attrs.get("success", False))

    def episode(self) -> Episode:
        """This demo as an :class:`~gail_robot.data.episode.Episode` (to write it elsewhere)."""
        return Episode(
            obs=self.obs,
            next_obs=self.next_obs,
            actions=self.actions,
            rewards=self.rewards,
            terminated=self.terminated,
            truncated=self.truncated,
            states=self.states,
            final_state=self.final_state,
            seed=int(self.attrs.get("seed", -1)),
            source=str(self.attrs.get("source", "unknown")),
            success=self.success,
            model_file=self.attrs.get("model_file"),
            policy_actions=self.policy_actions,
            interventions=self.interventions,
        )


def _attrs_dict(attrs: h5py.AttributeManager) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def flatten_obs(parts: dict[str, np.ndarray], keys: list[str]) -> np.ndarray:
    """Concatenate per-key arrays ``(N, ...)`` into ``(N, obs_dim) float32`` in ``keys`` order."""
    n = len(parts[keys[0]])
    return np.concatenate([parts[k].reshape(n, -1).astype(np.float32, copy=False) for k in keys], axis=1)


class DemoDataset:
    """A demo file opened for reading.

    Args:
        path: the demo file (schema v1).

    Raises:
        UserError: missing file, not HDF5, truncated, another format or version, damaged header.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._handle: h5py.File | None = None
        self._pid = -1
        f = self._file()
        self.meta: EnvMeta = read_header(f, self.path)
        self.demo_names: list[str] = sorted_demo_names(f["data"].keys())
        self._lengths = [
            int(f["data"][n].attrs.get("num_samples", len(f["data"][n]["actions"]))) for n in self.demo_names
        ]
        self._cache: dict[tuple[Any, ...], Transitions] = {}

    # -- process-local handle ----------------------------------------------------------------

    def _file(self) -> h5py.File:
        """The HDF5 handle of this process (reopened after fork)."""
        if self._handle is None or self._pid != os.getpid():
            self._handle = open_h5(self.path, "r")
            self._pid = os.getpid()
        return self._handle

    def close(self) -> None:
        """Close the handle of this process (it reopens on the next read)."""
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None

    def __enter__(self) -> DemoDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"] = None  # handles never cross processes
        state["_pid"] = -1
        return state

    # -- header ------------------------------------------------------------------------------

    @property
    def env_id(self) -> str:
        """Gymnasium id the demos were recorded on."""
        return self.meta.env_id

    @property
    def env_kwargs(self) -> dict[str, Any]:
        """``gym.make`` keyword arguments of the recording env."""
        return dict(self.meta.env_kwargs)

    @property
    def observation_space(self) -> gym.Space[Any]:
        """Observation space of the recording env (Box or Dict of Boxes)."""
        return self.meta.observation_space

    @property
    def action_space(self) -> gym.spaces.Box | gym.spaces.Discrete:
        """Action space of the recording env."""
        return self.meta.action_space

    @property
    def action_dtype(self) -> type[np.generic]:
        """How actions are read: int64 indices for a ``Discrete`` action space, else float32."""
        return np.int64 if is_discrete(self.meta.action_space) else np.float32

    @property
    def obs_keys(self) -> list[str]:
        """Observation keys in storage order (``["state"]`` for a flat Box)."""
        return obs_keys(self.meta.observation_space)

    @property
    def lengths(self) -> list[int]:
        """Steps per demo, in :attr:`demo_names` order."""
        return list(self._lengths)

    @property
    def num_steps(self) -> int:
        """Steps over all demos."""
        return int(sum(self._lengths))

    def __len__(self) -> int:
        return len(self.demo_names)

    def masks(self) -> dict[str, list[str]]:
        """``/mask/<name>`` -> demo names."""
        f = self._file()
        if "mask" not in f:
            return {}
        return {
            name: [n.decode() if isinstance(n, bytes) else str(n) for n in f["mask"][name][()]]
            for name in f["mask"]
        }

    def mask_names(self, mask: str | None) -> list[str]:
        """Demos selected by a mask (all demos for None), in numeric order."""
        if mask is None:
            return list(self.demo_names)
        masks = self.masks()
        if mask not in masks:
            known = ", ".join(sorted(masks)) or "none"
            raise UserError(
                f"{self.path}: no mask '{mask}' (masks: {known}; create them with 'gail-robot data split')"
            )
        chosen = set(masks[mask])
        missing = chosen.difference(self.demo_names)
        if missing:
            raise UserError(f"{self.path}: mask '{mask}' names missing demos: {', '.join(sorted(missing))}")
        return [n for n in self.demo_names if n in chosen]

    def check_compatible(self, env: gym.Env[Any, Any]) -> None:
        """Raise a one-line UserError when ``env`` differs from the recording env.

        Compares the env id, the observation space (keys and shapes; a wrapper that only casts
        dtypes is compatible) and the action shape.
        """
        spec_id = env.spec.id if env.spec is not None else None
        if spec_id is not None and spec_id != self.env_id:
            raise UserError(f"{self.path} holds demos of '{self.env_id}', not of '{spec_id}'")
        if not same_shapes(self.observation_space, env.observation_space):
            raise UserError(
                f"{self.path}: observation space {describe_space(self.observation_space)} differs from "
                f"the env's {describe_space(env.observation_space)}"
            )
        act = env.action_space
        if is_discrete(self.action_space) or is_discrete(act):
            if not same_space(act, self.action_space):
                raise UserError(
                    f"{self.path}: action space {describe_space(self.action_space)} differs from the "
                    f"env's {describe_space(act)}"
                )
        elif not isinstance(act, gym.spaces.Box) or act.shape != self.action_space.shape:
            shape = getattr(act, "shape", None)
            raise UserError(
                f"{self.path}: action shape {tuple(self.action_space.shape or ())} differs from the "
                f"env's {shape}"
            )

    # -- demos -------------------------------------------------------------------------------

    def _group(self, name: str) -> h5py.Group:
        f = self._file()
        if name not in f["data"]:
            raise UserError(f"{self.path}: no demo '{name}' (demos: {self._name_range()})")
        return f["data"][name]

    def _name_range(self) -> str:
        if not self.demo_names:
            return "none"
        return f"{self.demo_names[0]} .. {self.demo_names[-1]} ({len(self.demo_names)})"

    def resolve(self, demo: int | str) -> str:
        """``3`` or ``"3"`` or ``"demo_3"`` -> ``"demo_3"`` (checked to exist)."""
        name = f"demo_{demo}" if isinstance(demo, int) or str(demo).isdigit() else str(demo)
        if name not in self.demo_names:
            raise UserError(f"{self.path}: no demo '{name}' (demos: {self._name_range()})")
        return name

    def demo(self, demo: int | str) -> Demo:
        """Read one demo fully (``3``, ``"3"`` and ``"demo_3"`` all name ``demo_3``)."""
        name = self.resolve(demo)
        g = self._group(name)
        return Demo(
            name=name,
            obs={k: g["obs"][k][()] for k in self.obs_keys},
            next_obs={k: g["next_obs"][k][()] for k in self.obs_keys},
            actions=g["actions"][()],
            rewards=g["rewards"][()],
            terminated=g["terminated"][()].astype(bool),
            truncated=g["truncated"][()].astype(bool),
            states=g["states"][()],
            final_state=g["final_state"][()],
            attrs=_attrs_dict(g.attrs),
            policy_actions=g["policy_actions"][()] if "policy_actions" in g else None,
            interventions=g["interventions"][()] if "interventions" in g else None,
        )

    def intervention_counts(self) -> tuple[int, int]:
        """``(steps the person drove, steps of demos recorded with interventions)`` over all demos."""
        taken = total = 0
        for name in self.demo_names:
            g = self._group(name)
            if "interventions" in g:
                flags = g["interventions"][()]
                taken += int(np.count_nonzero(flags))
                total += len(flags)
        return taken, total

    def demo_attrs(self, demo: int | str) -> dict[str, Any]:
        """Attributes of one demo without reading its arrays."""
        return _attrs_dict(self._group(self.resolve(demo)).attrs)

    def __iter__(self) -> Iterator[Demo]:
        for name in self.demo_names:
            yield self.demo(name)

    # -- transitions -------------------------------------------------------------------------

    def transitions(
        self, subsample: int = 1, mask: str | None = None, *, seed: int | None = None
    ) -> Transitions:
        """All transition pairs, read once and cached in memory.

        Args:
            subsample: keep every k-th pair of each demo (the GAIL paper subsampled expert
                trajectories so that consecutive, highly correlated pairs do not dominate).
            mask: restrict to the demos of ``/mask/<mask>`` (e.g. ``"train"``).
            seed: with ``subsample > 1``, draw each demo's start offset in ``[0, k)`` from this seed
                (default: offset 0).

        Returns:
            :class:`Transitions` with float32 ``obs``/``next_obs`` flattened in key order (per-key
            arrays: :meth:`demo`).
        """
        if subsample < 1:
            raise ValueError(f"subsample must be >= 1, got {subsample}")
        key = (subsample, mask, seed)
        if key in self._cache:
            return self._cache[key]
        names = self.mask_names(mask)
        if not names:
            raise UserError(f"{self.path}: no demos{'' if mask is None else f' in mask {mask!r}'}")
        rng = np.random.default_rng(seed) if seed is not None else None
        keys = self.obs_keys
        parts_obs, parts_next, parts_act, parts_term = [], [], [], []
        for name in names:
            g = self._group(name)
            n = len(g["actions"])
            start = int(rng.integers(0, subsample)) if rng is not None and subsample > 1 else 0
            sel = slice(start, n, subsample)
            parts_obs.append(flatten_obs({k: g["obs"][k][sel] for k in keys}, keys))
            parts_next.append(flatten_obs({k: g["next_obs"][k][sel] for k in keys}, keys))
            parts_act.append(np.asarray(g["actions"][sel], dtype=self.action_dtype))
            parts_term.append(np.asarray(g["terminated"][sel], dtype=bool))
        result = Transitions(
            obs=np.ascontiguousarray(np.concatenate(parts_obs)),
            actions=np.ascontiguousarray(np.concatenate(parts_act)),
            next_obs=np.ascontiguousarray(np.concatenate(parts_next)),
            terminated=np.concatenate(parts_term),
        )
        self._cache[key] = result
        return result

    def sample_from_file(
        self, batch_size: int, rng: np.random.Generator, mask: str | None = None
    ) -> Transitions:
        """A uniform batch read straight from the file (for datasets too big for memory).

        Indices are sorted per demo so that each dataset gets one fancy-indexed read.
        """
        names = self.mask_names(mask)
        lengths = np.array([self._lengths[self.demo_names.index(n)] for n in names])
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        flat = np.sort(rng.integers(0, offsets[-1], size=batch_size))
        which = np.searchsorted(offsets, flat, side="right") - 1
        keys = self.obs_keys
        chunks: list[tuple[np.ndarray, ...]] = []
        for d in np.unique(which):
            g = self._group(names[d])
            local = flat[which == d] - offsets[d]
            uniq, counts = np.unique(local, return_counts=True)  # h5py needs increasing unique indices
            o = flatten_obs({k: g["obs"][k][uniq] for k in keys}, keys)
            no = flatten_obs({k: g["next_obs"][k][uniq] for k in keys}, keys)
            a = np.asarray(g["actions"][uniq], dtype=self.action_dtype)
            t = np.asarray(g["terminated"][uniq], dtype=bool)
            rep = np.repeat(np.arange(len(uniq)), counts)
            chunks.append((o[rep], a[rep], no[rep], t[rep]))
        obs, act, nxt, term = (np.concatenate(parts) for parts in zip(*chunks, strict=True))
        perm = rng.permutation(batch_size)  # sorted reads; return in random order
        return Transitions(obs[perm], act[perm], nxt[perm], term[perm])
