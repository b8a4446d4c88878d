"""What the C++ controller needs to know about a task: the observation layout and the task rules.

The controller (``csrc/controller/``) runs the Gymnasium v5 locomotion family (Hopper, Walker2d,
HalfCheetah, Ant, Humanoid) and the project's arm tasks (ArmReach, ArmPush, ArmPickPlace) without
Python.

- Walkers: it rebuilds the observation from ``mjData`` arrays using the layout written here into
  ``meta.json``, and reports reward and termination from the task spec. Both are read from the env
  built with the policy's own kwargs (Gymnasium keeps them in private attributes such as
  ``_healthy_z_range``).
- Arm tasks: the layout names the observation fields of ``gail_robot.envs.arm`` (``joint_pos`` ...
  ``goal_rel_ee``, offset 0, full size) in order, and the task spec (``family: "arm"``) carries
  everything the C++ Cartesian controller, reset sampler, reward and success test need: the scene's
  names, the controller's constants and IK gains, the reset ranges and the env's kwargs.

Either layout is checked against the env's observation before it is written (:func:`check_layout`), so
an unknown variant is refused for C++ instead of mis-deployed (docs/DESIGN.md §5).
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


def is_arm_task(env: Any) -> bool:
    """Whether ``env`` is one of the project's arm tasks (``gail_robot.envs.arm.ArmEnv``)."""
    from gail_robot.envs.arm import ArmEnv

    return isinstance(getattr(env, "unwrapped", env), ArmEnv)


def observation_layout(env: Any) -> list[dict[str, Any]] | None:
    """The observation as slices of mjData arrays, in the v5 env's order, or None if unsupported.

    Each segment is ``{"field", "offset", "size", "clip"}``: ``field`` is an mjData array (flattened
    row-major), ``offset``/``size`` select elements, ``clip`` is ``[low, high]`` or null. The C++
    controller builds the observation from this list alone. For an arm task ``field`` is a named
    observation field of ``gail_robot.envs.arm.OBS_SLICES`` (offset 0, its full size, no clip).
    """
    if is_arm_task(env):
        from gail_robot.envs.arm import OBS_SLICES

        return [
            {"field": name, "offset": 0, "size": sl.stop - sl.start, "clip": None}
            for name, sl in OBS_SLICES.items()
        ]
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


def arm_fields(model: Any, data: Any, task: dict[str, Any]) -> dict[str, np.ndarray]:
    """The arm tasks' named observation fields from ``mjData``, found by the names in ``task``.

    What ``csrc/controller/arm.cpp`` computes, in the same arithmetic: the Python mirror used to check a
    layout before it is written.
    """
    import mujoco

    def joint(name: str) -> tuple[int, int]:
        j = model.joint(name).id
        return int(model.jnt_qposadr[j]), int(model.jnt_dofadr[j])

    arm = [joint(n) for n in task["arm_joints"]]
    qpos_ids, dof_ids = [a for a, _ in arm], [b for _, b in arm]
    site = model.site(task["site"]).id
    cube_q, cube_v = joint(task["cube_joint"])
    goal = data.mocap_pos[model.body_mocapid[model.body(task["goal_body"]).id]]
    target = data.mocap_pos[model.body_mocapid[model.body(task["target_body"]).id]]
    velocity = np.zeros(6)
    mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_SITE, site, velocity, 0)
    ee = data.site_xpos[site].copy()
    cube = data.qpos[cube_q : cube_q + 3]
    quat = data.qpos[cube_q + 3 : cube_q + 7]
    opening = 0.0
    for name in task["fingers"]:
        opening += data.qpos[joint(name)[0]]
    return {
        "joint_pos": data.qpos[qpos_ids],
        "joint_vel": data.qvel[dof_ids],
        "ee_pos": ee,
        "ee_vel": velocity[3:],
        "ee_target": target.copy(),
        "gripper_opening": np.array([opening]),
        "cube_pos": cube.copy(),
        "cube_quat": -quat if quat[0] < 0 else quat.copy(),
        "cube_linvel": data.qvel[cube_v : cube_v + 3],
        "cube_angvel": data.qvel[cube_v + 3 : cube_v + 6],
        "goal_pos": goal.copy(),
        "cube_rel_ee": cube - ee,
        "goal_rel_cube": goal - cube,
        "goal_rel_ee": goal - ee,
    }


def observation_from_layout(
    data: Any, layout: list[dict[str, Any]], model: Any = None, task: dict[str, Any] | None = None
) -> np.ndarray:
    """Rebuild the observation ``(obs_dim,) float64`` from ``mjData`` as the C++ controller does.

    An arm task's layout (named fields) needs ``model`` and its ``task`` spec too.
    """
    if task is not None and task.get("family") == "arm":
        fields = arm_fields(model, data, task)
        arm_parts = []
        for seg in layout:
            if seg["field"] not in fields:
                raise RuntimeError(f"unknown arm observation field {seg['field']!r}")
            arm_parts.append(fields[seg["field"]][seg["offset"] : seg["offset"] + seg["size"]])
        return np.concatenate(arm_parts)
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
    task = task_spec(env) if is_arm_task(env) else None
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    for t in range(steps + 1):
        rebuilt = observation_from_layout(base.data, layout, base.model, task)
        if rebuilt.shape != np.shape(obs) or not np.array_equal(rebuilt, obs):
            raise RuntimeError(
                f"observation layout disagrees with {env.spec.id if env.spec else base} at step {t}"
            )
        if t < steps:
            obs, _, terminated, truncated, _ = env.step(rng.uniform(low, high).astype(np.float32))
            if terminated or truncated:
                obs, _ = env.reset(seed=seed + t + 1)


def arm_task_spec(env: Any) -> dict[str, Any]:
    """What the C++ arm controller needs (``family: "arm"``), read from the env and ``gail_robot.envs.arm``.

    Scene names (resolved by the C++ side with ``mj_name2id``), the Cartesian controller's constants and
    the IK gains of the env's :class:`~gail_robot.envs.arm_ik.DifferentialIK`, the reset ranges, and the
    env's kwargs (reward type, termination, threshold) and time limit.
    """
    from gail_robot.envs import arm

    base = env.unwrapped
    ik = base.ik
    spec = getattr(env, "spec", None)
    return {
        "family": "arm",
        "task": base.task,
        "goal_is_for_cube": bool(base.goal_is_for_cube),
        "reward_type": base.reward_type,
        "terminate_on_success": bool(base.terminate_on_success),
        "distance_threshold": float(base.distance_threshold),
        "max_episode_steps": int(spec.max_episode_steps) if spec and spec.max_episode_steps else None,
        "site": "grip",
        "arm_joints": list(arm.ARM_JOINTS),
        "arm_actuators": list(arm.ARM_JOINTS),
        "fingers": ["finger_left", "finger_right"],
        "gripper_actuator": "gripper",
        "cube_joint": "cube",
        "goal_body": "goal",
        "target_body": "ee_target",
        "home_key": "home",
        "ik_every": int(arm.IK_EVERY),
        "action_scale": float(arm.ACTION_SCALE),
        "max_target_lead": float(arm.MAX_TARGET_LEAD),
        "workspace_low": [float(v) for v in arm.WORKSPACE_LOW],
        "workspace_high": [float(v) for v in arm.WORKSPACE_HIGH],
        "gripper_max_opening": float(arm.GRIPPER_MAX_OPENING),
        "target_quat": [float(v) for v in arm.DOWN_QUAT],
        "ik": {
            "damping": float(ik.damping),
            "orientation_weight": float(ik.orientation_weight),
            "null_gain": float(ik.null_gain),
            "max_joint_step": float(ik.max_joint_step),
            "rest_qpos": [float(v) for v in ik.rest_qpos],
        },
        "reset": {
            "table_z": float(arm.TABLE_Z),
            "cube_half_size": float(arm.CUBE_HALF_SIZE),
            "cube_low": [float(v) for v in arm.CUBE_LOW],
            "cube_high": [float(v) for v in arm.CUBE_HIGH],
            "reach_goal_low": [float(v) for v in arm.REACH_GOAL_LOW],
            "reach_goal_high": [float(v) for v in arm.REACH_GOAL_HIGH],
            "air_goal_height": [float(v) for v in arm.AIR_GOAL_HEIGHT],
            "min_goal_distance": float(arm.MIN_GOAL_DISTANCE),
        },
    }


def task_spec(env: Any) -> dict[str, Any] | None:
    """Reward weights and health rules of a v5 locomotion env with its actual kwargs, the arm task spec
    (:func:`arm_task_spec`), or None."""
    if is_arm_task(env):
        return arm_task_spec(env)
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
        return (
            None,
            None,
            "the C++ controller supports the Gymnasium v5 locomotion envs and the arm tasks only",
        )
    try:
        check_layout(env, layout)
    except RuntimeError as exc:  # an unknown Gymnasium variant: refuse in C++, keep the export
        return None, None, str(exc)
    return layout, task_spec(env), None
