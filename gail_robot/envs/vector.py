"""Vector envs for rollouts: subprocess-parallel by default, same-step autoreset.

Gymnasium 1.x defaults to NEXT_STEP autoreset, where the step after an episode end returns the
reset observation and ignores the action: a wasted step the buffer would have to mask. We use
SAME_STEP instead: a finished sub-env is reset inside the same ``step`` call, the returned
observation is the new episode's first one, and ``info["final_obs"]`` / ``info["final_info"]``
hold the true last observation and info (masks ``_final_obs`` / ``_final_info``). The collector
uses ``final_obs`` for ``next_obs`` so truncated steps bootstrap from V(final observation).
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

from gail_robot.envs.make import ensure_registered, make_env

VectorMode = Literal["async", "sync"]


def _env_fn(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
    # Module-level so that AsyncVectorEnv can pickle it for the worker processes.
    return make_env(env_id, env_kwargs)


def make_vector_env(
    env_id: str,
    num_envs: int,
    env_kwargs: dict[str, Any] | None = None,
    mode: VectorMode = "async",
) -> VectorEnv:
    """``num_envs`` copies of :func:`make_env` in a SAME_STEP-autoreset vector env.

    Args:
        env_id: Gymnasium id.
        num_envs: number of parallel envs.
        env_kwargs: keyword arguments for ``gymnasium.make``.
        mode: ``"async"`` (one subprocess per env, uses all cores) or ``"sync"`` (in-process).
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    ensure_registered(env_id)
    make_env(env_id, env_kwargs).close()  # fail here, with a clear error, not inside a worker
    fns = [functools.partial(_env_fn, env_id, dict(env_kwargs or {})) for _ in range(num_envs)]
    if mode == "async":
        # forkserver/spawn would re-import torch in every worker; fork is fast and safe here
        # because workers never touch torch.
        return AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP, context="fork")
    if mode == "sync":
        return SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    raise ValueError(f"vector mode must be 'async' or 'sync', got {mode!r}")


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
