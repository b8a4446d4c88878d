"""What the C++ controller needs to know about a task: the observation layout and the task rules.

The controller (``csrc/controller/``) runs the Gymnasium v5 locomotion family (Hopper, Walker2d,
HalfCheetah, Ant, Humanoid) without Python. It rebuilds the observation from ``mjData`` arrays using
the layout written here into ``meta.json``, and reports reward and termination from the task spec.
Both are read from the env built with the policy's own kwargs (Gymnasium keeps them in private
attributes such as ``_healthy_z_range``), and the layout is checked against the env's observation
before it is written, so an unknown Gymnasium variant is refused for C++ instead of mis-deployed
(docs/DESIGN.md §5).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_V5_FAMILIES = {
    "gymnasium.envs.mujoco.hopper_v5": "hopper",
    "gymnasium.envs.mujoco.walker2d_v5": "walker2d",
    "gymnasium.envs.mujoco.half_cheetah_v5": "half_cheetah",
    "gymnasium.envs.mujoco.ant_v5": "ant",
    "gymnasium.envs.mujoco.humanoid_v5": "humanoid",
}


def json_range(values: Any) -> list[float | None]:
    """A (low, high) pair for JSON: infinite bounds become null (JSON has no infinity)."""
    return [None if not math.isfinite(float(v)) else float(v) for v in values]


def locomotion_family(env: Any) -> str | None:
    """``hopper`` ... ``humanoid`` for a Gymnasium v5 locomotion env (read from its class), else None."""
    return _V5_FAMILIES.get(type(getattr(env, "unwrapped", env)).__module__)


def observation_layout(env: Any) -> list[dict[str, Any]] | None:
    """The observation as slices of mjData arrays, in the v5 env's order, or None if unsupported.

    Each segment is ``{"field", "offset", "size", "clip"}``: ``field`` is an mjData array (flattened
    row-major), ``offset``/``size`` select elements, ``clip`` is ``[low, high]`` or null. The C++
    controller builds the observation from this list alone.
    """
    family = locomotion_family(env)
    if family is None:
        return None
    base = env.unwrapped
    nq, nv, nbody = int(base.model.nq), int(base.model.nv), int(base.model.nbody)
    skip = 0
    if base._exclude_current_positions_from_observation:
        skip = 2 if family in ("ant", "humanoid") else 1
    layout: list[dict[str, Any]] = [{"field": "qpos", "offset": skip, "size": nq - skip, "clip": None}]
    qvel_clip = [-10.0, 10.0] if family in ("hopper", "walker2d") else None
    layout.append({"field": "qvel", "offset": 0, "size": nv, "clip": qvel_clip})
    rest = nbody - 1  # the world body (row 0) is never observed
    if family == "ant" and base._include_cfrc_ext_in_observation:
        force_clip = json_range(base._contact_force_range)
        layout.append({"field": "cfrc_ext", "offset": 6, "size": 6 * rest, "clip": force_clip})
    if family == "humanoid":
        if base._include_cinert_in_observation:
            layout.append({"field": "cinert", "offset": 10, "size": 10 * rest, "clip": None})
        if base._include_cvel_in_observation:
            layout.append({"field": "cvel", "offset": 6, "size": 6 * rest, "clip": None})
        if base._include_qfrc_actuator_in_observation:
            layout.append({"field": "qfrc_actuator", "offset": 6, "size": nv - 6, "clip": None})
        if base._include_cfrc_ext_in_observation:
            layout.append({"field": "cfrc_ext", "offset": 6, "size": 6 * rest, "clip": None})
    return layout


def observation_from_layout(data: Any, layout: list[dict[str, Any]]) -> np.ndarray:
    """Rebuild the observation ``(obs_dim,) float64`` from ``mjData`` as the C++ controller does."""
    parts = []
    for seg in layout:
        values = np.asarray(getattr(data, seg["field"]), dtype=np.float64).reshape(-1)
        part = values[seg["offset"] : seg["offset"] + seg["size"]]
        if seg["clip"] is not None:
            lo, hi = (-np.inf if v is None else v for v in seg["clip"])
            part = np.clip(part, lo, hi)
        parts.append(part)
    return np.concatenate(parts)


def check_layout(env: Any, layout: list[dict[str, Any]], steps: int = 30, seed: int = 0) -> None:
    """Check that ``layout`` reproduces ``env``'s observation exactly over a short random rollout.

    ``env`` acts in its own units (not wrapped to [-1, 1]).

    Raises:
        RuntimeError: the layout disagrees with the env (a Gymnasium version this code does not know).
    """
    base = env.unwrapped
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    for t in range(steps + 1):
        rebuilt = observation_from_layout(base.data, layout)
        if rebuilt.shape != np.shape(obs) or not np.array_equal(rebuilt, obs):
            raise RuntimeError(
                f"observation layout disagrees with {env.spec.id if env.spec else base} at step {t}"
            )
        if t < steps:
            obs, _, terminated, truncated, _ = env.step(rng.uniform(low, high).astype(np.float32))
            if terminated or truncated:
                obs, _ = env.reset(seed=seed + t + 1)


def task_spec(env: Any) -> dict[str, Any] | None:
    """Reward weights and health rules of a v5 locomotion env with its actual kwargs, or None."""
    family = locomotion_family(env)
    if family is None:
        return None
    base = env.unwrapped
    spec: dict[str, Any] = {
        "family": family,
        "forward_reward_weight": float(base._forward_reward_weight),
        "ctrl_cost_weight": float(base._ctrl_cost_weight),
    }
    if family != "half_cheetah":
        spec["healthy_reward"] = float(base._healthy_reward)
        spec["terminate_when_unhealthy"] = bool(base._terminate_when_unhealthy)
        spec["healthy_z_range"] = json_range(base._healthy_z_range)
    if family in ("hopper", "walker2d"):
        spec["healthy_angle_range"] = json_range(base._healthy_angle_range)
    if family == "hopper":
        spec["healthy_state_range"] = json_range(base._healthy_state_range)
    if family == "ant":
        import mujoco

        body = base._main_body
        if isinstance(body, str):
            body = mujoco.mj_name2id(base.model, mujoco.mjtObj.mjOBJ_BODY, body)
        spec["main_body"] = int(body)
        spec["contact_cost_weight"] = float(base._contact_cost_weight)
        spec["contact_force_range"] = json_range(base._contact_force_range)
    if family == "humanoid":
        spec["contact_cost_weight"] = float(base._contact_cost_weight)
        spec["contact_cost_range"] = json_range(base._contact_cost_range)
    return spec


def controller_spec(env: Any) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None, str | None]:
    """``(observation_layout, task, note)`` of ``env`` for meta.json.

    A checked layout and its task spec; or ``(None, None, note)`` with the reason the C++ controller
    cannot run this env (not a v5 locomotion env, or a layout that disagrees with the env).
    """
    layout = observation_layout(env)
    if layout is None:
        return None, None, "the C++ controller supports the Gymnasium v5 locomotion envs only"
    try:
        check_layout(env, layout)
    except RuntimeError as exc:  # an unknown Gymnasium variant: refuse in C++, keep the export
        return None, None, str(exc)
    return layout, task_spec(env), None
