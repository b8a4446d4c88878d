"""Vector envs for rollouts: subprocess-parallel by default, same-step autoreset.

Four modes (the fourth, ``ray``, is :mod:`gail_robot.envs.ray_vector`):

- ``batched`` (:class:`BatchedSubprocVectorEnv`): W worker processes (default: one per CPU core),
  each stepping its share of the N envs in a SAME_STEP ``SyncVectorEnv``. One message per worker
  per step instead of one per env: on a 2-core machine with cheap envs (Hopper steps in ~80 us)
  the per-message cost of one-process-per-env dominates, and this mode is the fastest.
- ``async``: Gymnasium's ``AsyncVectorEnv``, one process per env (best for expensive envs with
  many cores).
- ``sync``: all envs in the learner's process.

Gymnasium 1.x defaults to NEXT_STEP autoreset, where the step after an episode end returns the
reset observation and ignores the action: a wasted step the buffer would have to mask. We use
SAME_STEP instead: a finished sub-env is reset inside the same ``step`` call, the returned
observation is the new episode's first one, and ``info["final_obs"]`` / ``info["final_info"]``
hold the true last observation and info (masks ``_final_obs`` / ``_final_info``). The collector
uses ``final_obs`` for ``next_obs`` so truncated steps bootstrap from V(final observation).
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing as mp
import os
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

from gail_robot.envs.make import ensure_registered, make_env

VectorMode = Literal["batched", "async", "sync"]


def _env_fn(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
    # Module-level so that AsyncVectorEnv can pickle it for the worker processes.
    return make_env(env_id, env_kwargs)


def make_vector_env(
    env_id: str,
    num_envs: int,
    env_kwargs: dict[str, Any] | None = None,
    mode: VectorMode = "batched",
    num_workers: int | None = None,
) -> VectorEnv:
    """``num_envs`` copies of :func:`make_env` in a SAME_STEP-autoreset vector env.

    Args:
        env_id: Gymnasium id.
        num_envs: number of parallel envs.
        env_kwargs: keyword arguments for ``gymnasium.make``.
        mode: ``"batched"`` (W processes with N/W envs each), ``"async"`` (one process per env) or
            ``"sync"`` (in-process). The fourth mode, ``ray``, is
            :class:`~gail_robot.envs.ray_vector.RayVectorEnv`.
        num_workers: worker processes for ``batched`` (default: the number of CPU cores).
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    ensure_registered(env_id)
    make_env(env_id, env_kwargs).close()  # fail here, with a clear error, not inside a worker
    fns = [functools.partial(_env_fn, env_id, dict(env_kwargs or {})) for _ in range(num_envs)]
    if mode == "batched":
        workers = num_workers if num_workers else (os.cpu_count() or 1)
        return BatchedSubprocVectorEnv(fns, min(max(1, workers), num_envs))
    if mode == "async":
        # forkserver/spawn would re-import torch in every worker; fork is fast and safe here
        # because workers never touch torch.
        return AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP, context="fork")
    if mode == "sync":
        return SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    raise ValueError(f"vector mode must be 'batched', 'async' or 'sync', got {mode!r}")


def _batched_worker(remote: Connection, parent: Connection, env_fns: Sequence[Callable[[], gym.Env]]) -> None:
    """Worker loop: a SAME_STEP SyncVectorEnv answering ``reset`` / ``step`` / ``call`` / ``close``.

    ``call`` runs ``fn(envs, obs, *args) -> (result, obs)`` on the worker's envs, where ``obs`` is
    their current observation: a whole rollout can run here without a message per step.
    """
    parent.close()
    envs = None
    obs = None
    try:
        envs = SyncVectorEnv(list(env_fns), autoreset_mode=AutoresetMode.SAME_STEP)
        remote.send(("ok", None))
        while True:
            command, data = remote.recv()
            if command == "step":
                result = envs.step(data)
                obs = result[0]
                remote.send(("ok", result))
            elif command == "reset":
                obs, infos = envs.reset(seed=data)
                remote.send(("ok", (obs, infos)))
            elif command == "call":
                fn, args = data
                if obs is None:
                    raise RuntimeError("reset the vector env before calling into its workers")
                result, obs = fn(envs, obs, *args)
                remote.send(("ok", result))
            elif command == "close":
                remote.send(("ok", None))
                break
    except (KeyboardInterrupt, EOFError):
        pass
    except Exception:  # report to the learner instead of dying silently
        remote.send(("error", traceback.format_exc()))
    finally:
        if envs is not None:
            envs.close()
        remote.close()


def split_envs(num_envs: int, num_workers: int) -> list[slice]:
    """Contiguous, near-equal env slices, one per worker (the first ones smaller when uneven)."""
    bounds = np.linspace(0, num_envs, num_workers + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


def merge_infos(parts: Sequence[dict[str, Any]], sizes: Sequence[int]) -> dict[str, Any]:
    """Concatenate per-worker vector-env info dicts (each with ``_key`` masks) into one.

    Args:
        parts: info dicts of consecutive env slices.
        sizes: number of envs in each slice.
    """
    total = int(sum(sizes))
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    keys: list[str] = []
    for part in parts:
        keys += [k for k in part if not k.startswith("_") and k not in keys]
    out: dict[str, Any] = {}
    for key in keys:
        values = [part.get(key) for part in parts]
        if any(isinstance(v, dict) for v in values):
            out[key] = merge_infos([v if isinstance(v, dict) else {} for v in values], sizes)
        else:
            present = [np.asarray(v) for v in values if v is not None]
            is_object = any(a.dtype == np.dtype(object) for a in present)
            dtype = np.dtype(object) if is_object else np.result_type(*present)
            array = np.zeros((total, *present[0].shape[1:]), dtype=dtype)
            if is_object:
                array[:] = None
            for i, value in enumerate(values):
                if value is not None:
                    array[offsets[i] : offsets[i + 1]] = value
            out[key] = array
        mask = np.zeros(total, dtype=bool)
        for i, part in enumerate(parts):
            if f"_{key}" in part:
                mask[offsets[i] : offsets[i + 1]] = part[f"_{key}"]
        out[f"_{key}"] = mask
    return out


class SlicedVectorEnv(VectorEnv):
    """N envs split into W contiguous slices, one worker per slice; SAME_STEP autoreset, Gymnasium's API.

    The shared half of :class:`BatchedSubprocVectorEnv` (worker processes) and
    :class:`~gail_robot.envs.ray_vector.RayVectorEnv` (Ray actors): spaces, slices, seed expansion
    and merging the workers' answers. A subclass says how to reach its workers in :meth:`_send`.
    """

    def _init_slices(self, probe: gym.Env, num_envs: int, num_workers: int) -> None:
        if not 1 <= num_workers <= num_envs:
            raise ValueError(f"num_workers must be in [1, {num_envs}], got {num_workers}")
        self.single_observation_space = probe.observation_space
        self.single_action_space = probe.action_space
        self.metadata = {**probe.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}
        self.num_envs = num_envs
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._slices = split_envs(num_envs, num_workers)
        self._sizes = [s.stop - s.start for s in self._slices]

    def _send(self, command: str, payloads: list[Any]) -> list[Any]:
        """Send ``(command, payloads[i])`` to worker i, all at once; their answers in order."""
        raise NotImplementedError

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        del options  # not forwarded: the trainer never uses reset options
        if seed is None or isinstance(seed, int):
            seeds: list[int | None] = [None if seed is None else seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
        results = self._send("reset", [seeds[sl] for sl in self._slices])
        obs = np.concatenate([r[0] for r in results])
        return obs, merge_infos([r[1] for r in results], self._sizes)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions)
        results = self._send("step", [actions[sl] for sl in self._slices])
        obs, rewards, terminated, truncated = (np.concatenate([r[i] for r in results]) for i in range(4))
        return obs, rewards, terminated, truncated, merge_infos([r[4] for r in results], self._sizes)

    @property
    def parts(self) -> list[slice]:
        """The env slices of the workers, in order."""
        return list(self._slices)

    def call_parts(
        self, fn: Callable[..., tuple[Any, np.ndarray]], args: Sequence[tuple[Any, ...]]
    ) -> list[Any]:
        """Run ``fn(envs, obs, *args[i]) -> (result, obs)`` in every worker at once; the results.

        ``fn`` must be a module-level function (it is pickled by name); ``envs`` is the worker's
        SAME_STEP ``SyncVectorEnv`` over its slice and ``obs`` its current observation.
        """
        return self._send("call", [(fn, part_args) for part_args in args])


class BatchedSubprocVectorEnv(SlicedVectorEnv):
    """N envs in W worker processes (contiguous slices), SAME_STEP autoreset, Gymnasium's API.

    Args:
        env_fns: one constructor per env (picklable).
        num_workers: worker processes (1 <= W <= N).
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], num_workers: int):
        probe = env_fns[0]()
        self._init_slices(probe, len(env_fns), num_workers)
        probe.close()
        # fork: workers inherit the registry (the project's own envs) and never touch torch.
        ctx = mp.get_context("fork")
        self._remotes: list[Connection] = []
        self._processes = []
        for sl in self._slices:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_batched_worker, args=(child, parent, list(env_fns[sl])), daemon=True)
            proc.start()
            child.close()
            self._remotes.append(parent)
            self._processes.append(proc)
        self._closed = False
        self._gather()

    def _gather(self) -> list[Any]:
        results = []
        for remote in self._remotes:
            status, payload = remote.recv()
            if status == "error":
                self.close()
                raise RuntimeError(f"vector env worker failed:\n{payload}")
            results.append(payload)
        return results

    def _send(self, command: str, payloads: list[Any]) -> list[Any]:
        for remote, payload in zip(self._remotes, payloads, strict=True):
            remote.send((command, payload))
        return self._gather()

    def close_extras(self, **kwargs: Any) -> None:
        if self._closed:
            return
        self._closed = True
        for remote in self._remotes:
            try:
                remote.send(("close", None))
                remote.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
            remote.close()
        for proc in self._processes:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()


def final_observations(obs: np.ndarray, infos: dict[str, Any], done: np.ndarray) -> np.ndarray:
    """The true successor observations of a vector step: ``obs`` with done rows replaced by final_obs.

    Args:
        obs: ``(N, obs_dim)`` observations returned by ``step`` (reset obs for done envs).
        infos: the step's info dict (SAME_STEP autoreset).
        done: ``(N,)`` bool, terminated or truncated.

    Returns:
        ``(N, obs_dim)`` float32 copy.
    """
    next_obs = np.array(obs, dtype=np.float32, copy=True)
    if np.any(done):
        if "final_obs" not in infos:
            raise RuntimeError("vector env did not report final_obs: it must use SAME_STEP autoreset")
        mask = infos["_final_obs"]
        for i in np.flatnonzero(done & mask):
            next_obs[i] = infos["final_obs"][i]
    return next_obs


def step_info_value(infos: dict[str, Any], key: str, done: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-env value of ``key`` for the step just taken (from ``final_info`` for done envs).

    Returns:
        ``(values (N,) float64, present (N,) bool)``; values are 0 where absent.
    """
    n = done.shape[0]
    values = np.zeros(n, dtype=np.float64)
    present = np.zeros(n, dtype=bool)
    if key in infos:
        mask = infos[f"_{key}"] & ~done
        values[mask] = np.asarray(infos[key], dtype=np.float64)[mask]
        present |= mask
    final = infos.get("final_info")
    if isinstance(final, dict) and key in final:
        mask = final[f"_{key}"] & done
        values[mask] = np.asarray(final[key], dtype=np.float64)[mask]
        present |= mask
    return values, present
