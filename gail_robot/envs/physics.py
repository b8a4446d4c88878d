"""Full MuJoCo physics state of any Gymnasium MuJoCo env: get, set, and the model XML.

The demo format stores ``mj_getState(..., mjSTATE_INTEGRATION)`` before every step and after the
last one; with these two functions a demo can be replayed or re-rendered exactly.
"""

from __future__ import annotations

import weakref
from typing import Any

import mujoco
import numpy as np

from gail_robot.errors import UserError

STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION


def mujoco_env(env: Any) -> Any:
    """The innermost env that owns ``model`` and ``data`` (unwraps Gymnasium wrappers)."""
    base = getattr(env, "unwrapped", env)
    if not (hasattr(base, "model") and hasattr(base, "data")):
        raise UserError(f"{type(base).__name__} is not a MuJoCo env (it has no model/data)")
    return base


def has_physics(env: Any) -> bool:
    """Whether ``env`` is a MuJoCo env (classic-control tasks such as CartPole are not)."""
    base = getattr(env, "unwrapped", env)
    return hasattr(base, "model") and hasattr(base, "data")


def state_size(env: Any) -> int:
    """Length S of the physics state vector of ``env``."""
    base = mujoco_env(env)
    return int(mujoco.mj_stateSize(base.model, STATE_SPEC))


# env -> (its MuJoCo env, the model the size was computed for, the state size): the recorder calls
# get_physics_state before every step, and unwrapping plus mj_stateSize were half of its cost.
_STATE_CACHE: weakref.WeakKeyDictionary[Any, tuple[Any, Any, int]] = weakref.WeakKeyDictionary()


def get_physics_state(env: Any) -> np.ndarray:
    """The integration state (time, qpos, qvel, act, warmstart, ctrl, ...) as ``(S,) float64``."""
    cached = _STATE_CACHE.get(env) if hasattr(env, "__weakref__") else None
    if cached is None or cached[0].model is not cached[1]:
        base = mujoco_env(env)
        cached = (base, base.model, int(mujoco.mj_stateSize(base.model, STATE_SPEC)))
        if hasattr(env, "__weakref__"):
            _STATE_CACHE[env] = cached
    base, model, size = cached
    state = np.empty(size, dtype=np.float64)
    mujoco.mj_getState(model, base.data, state, STATE_SPEC)
    return state


def set_physics_state(env: Any, state: np.ndarray) -> None:
    """Restore a state from :func:`get_physics_state` and recompute derived quantities."""
    base = mujoco_env(env)
    state = np.ascontiguousarray(state, dtype=np.float64)
    expected = mujoco.mj_stateSize(base.model, STATE_SPEC)
    if state.shape != (expected,):
        raise UserError(f"physics state has shape {state.shape}, this env expects ({expected},)")
    mujoco.mj_setState(base.model, base.data, state, STATE_SPEC)
    mujoco.mj_forward(base.model, base.data)


def model_xml(env: Any) -> str | None:
    """The MJCF XML the env was built from, when it is known (a file path on the env)."""
    base = mujoco_env(env)
    path = getattr(base, "fullpath", None)
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()
