"""The project's manipulation tasks: a 7-joint arm with a parallel-jaw gripper on a table.

Three Gymnasium tasks share one scene (``assets/arm_table.xml``) and one Cartesian controller:

=============================  =========================================  =====================
id                             goal                                       horizon (steps, s)
=============================  =========================================  =====================
``gail_robot/ArmReach-v0``     bring the tool centre point to a 3-D goal   50 (2.5 s)
``gail_robot/ArmPush-v0``      push the cube across the table to a goal    100 (5 s)
``gail_robot/ArmPickPlace-v0`` carry the cube to a goal in the air or on    100 (5 s)
                               the table (half of the goals each)
=============================  =========================================  =====================

Frames and units: world frame, metres, seconds. The table top is the plane ``z = 0``; the arm's base
stands on it at the origin, facing +x. The cube has 5 cm edges (rests at ``z = 0.025``) and 80 g mass.

Action ``(4,) float32`` in ``[-1, 1]`` (values outside are clipped):
    ``[dx, dy, dz, grip]``. ``dx, dy, dz`` move the Cartesian target of the tool centre point (TCP, the
    point between the finger pads) by up to :data:`ACTION_SCALE` = 3 cm per step (0.6 m/s at full
    deflection). The target lives in the physics state (a mocap body), is kept inside
    :data:`WORKSPACE_LOW`..:data:`WORKSPACE_HIGH` and within :data:`MAX_TARGET_LEAD` of the TCP (so a
    blocked arm does not wind up). ``grip`` sets the finger opening servo: -1 fully open (8 cm between the
    pads), +1 fully closed; fingers squeeze with at most 20 N each. The gripper always points straight
    down with its fingers opening along world y (the controller holds that orientation).

Control: 20 Hz (``dt = 0.05`` s); physics at 500 Hz (25 substeps per action). Every 5 substeps a
damped-least-squares differential IK step (:class:`~gail_robot.envs.arm_ik.DifferentialIK`, 6-D task:
TCP position + fixed downward orientation, null-space pull to the home posture) writes joint targets to
the arm's position servos, with the target's velocity as feedforward (the target moves linearly through
the step). The controller keeps no state outside MuJoCo's (its target is a mocap body), so
``gail_robot.envs.physics.get_physics_state``/``set_physics_state`` replay the env exactly.

Observation ``(49,) float64``, identical layout for all three tasks (:data:`OBS_SLICES` names them):

======  ==================  ==============================================================
index   name                meaning
======  ==================  ==============================================================
0:7     ``joint_pos``       arm joint angles (rad), joints 1..7
7:14    ``joint_vel``       arm joint velocities (rad/s)
14:17   ``ee_pos``          TCP position (m)
17:20   ``ee_vel``          TCP linear velocity (m/s)
20:23   ``ee_target``       the controller's TCP target (m): the actions integrate it
23      ``gripper_opening`` distance between the finger pads (m), 0 (closed) .. 0.08 (open)
24:27   ``cube_pos``        cube centre position (m)
27:31   ``cube_quat``       cube orientation quaternion (w, x, y, z), sign chosen so w >= 0
31:34   ``cube_linvel``     cube linear velocity (m/s), world frame
34:37   ``cube_angvel``     cube angular velocity (rad/s), cube's own frame (MuJoCo free joint)
37:40   ``goal_pos``        goal position (m): the TCP goal (reach) or the cube goal
40:43   ``cube_rel_ee``     ``cube_pos - ee_pos``
43:46   ``goal_rel_cube``   ``goal_pos - cube_pos``
46:49   ``goal_rel_ee``     ``goal_pos - ee_pos``
======  ==================  ==============================================================

Reset (per seed, uniform unless said otherwise; the arm always starts at the home pose, TCP at
(0.40, 0, 0.25), gripper open):
    * cube: x in [0.40, 0.60], y in [-0.20, 0.20], on the table, axis-aligned (:data:`CUBE_LOW`/``HIGH``).
    * reach goal: x in [0.35, 0.65], y in [-0.25, 0.25], z in [0.10, 0.35] (:data:`REACH_GOAL_LOW`/``HIGH``).
    * push goal: on the table (z = 0.025), x, y in the cube's range, at least 10 cm from the cube.
    * pick-and-place goal: x, y in the cube's range, at least 10 cm (in x, y) from the cube; with
      probability 1/2 on the table (z = 0.025), else z in [0.075, 0.225] (5 to 20 cm above resting).

Success (``info["is_success"]``): the achieved point (TCP for reach, cube centre otherwise) is within
``distance_threshold`` (default 5 cm) of the goal. Rewards (``reward_type``):
    * ``"dense"`` (default): reach ``-|goal - ee|``; push and pick-and-place
      ``-|goal - cube| - 0.5 |cube - ee|`` (the second term shapes the approach).
    * ``"sparse"``: ``0`` on success, else ``-1``.

``terminate_on_success`` (default ``True``) ends the episode (``terminated``) on the first successful
step; with ``False`` the episode only ends at the time limit (``truncated``, via ``max_episode_steps``).
``info`` also carries ``goal_distance`` (m).

Rendering: ``render_mode="rgb_array"`` (headless through EGL or OSMesa) or ``"depth_array"`` from the
``camera_name`` camera (``"front"``, default; ``"wrist"``, on the hand, fingers at the bottom of the image;
``None``, a free camera); ``"human"`` opens Gymnasium's MuJoCo viewer window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import mujoco
import numpy as np
from gymnasium import spaces, utils
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

from gail_robot.envs.arm_ik import DifferentialIK
from gail_robot.errors import UserError

MODEL_PATH = str(Path(__file__).resolve().parent / "assets" / "arm_table.xml")

FRAME_SKIP = 25
"""Physics substeps (2 ms each) per env step: 20 Hz control."""
IK_EVERY = 5
"""Substeps between two IK updates of the joint targets (100 Hz inner loop)."""
ACTION_SCALE = 0.03
"""Metres the TCP target moves per step at full action (|a| = 1)."""
MAX_TARGET_LEAD = 0.06
"""The TCP target stays within this distance (per axis, metres) of the TCP."""
WORKSPACE_LOW = np.array([0.30, -0.35, 0.015])
WORKSPACE_HIGH = np.array([0.72, 0.35, 0.45])
TABLE_Z = 0.0
CUBE_HALF_SIZE = 0.025
CUBE_LOW = np.array([0.40, -0.20])
CUBE_HIGH = np.array([0.60, 0.20])
REACH_GOAL_LOW = np.array([0.35, -0.25, 0.10])
REACH_GOAL_HIGH = np.array([0.65, 0.25, 0.35])
AIR_GOAL_HEIGHT = (0.05, 0.20)
"""Pick-and-place air goals: height of the cube centre above its resting height (m)."""
MIN_GOAL_DISTANCE = 0.10
GRIPPER_MAX_OPENING = 0.04
"""Per finger (m); the pads are 0.08 m apart when fully open."""
DOWN_QUAT = np.array([0.0, 1.0, 0.0, 0.0])
"""TCP orientation held by the controller: z pointing down, fingers opening along world y."""

ARM_JOINTS = [f"joint{i}" for i in range(1, 8)]
OBS_SLICES: dict[str, slice] = {
    "joint_pos": slice(0, 7),
    "joint_vel": slice(7, 14),
    "ee_pos": slice(14, 17),
    "ee_vel": slice(17, 20),
    "ee_target": slice(20, 23),
    "gripper_opening": slice(23, 24),
    "cube_pos": slice(24, 27),
    "cube_quat": slice(27, 31),
    "cube_linvel": slice(31, 34),
    "cube_angvel": slice(34, 37),
    "goal_pos": slice(37, 40),
    "cube_rel_ee": slice(40, 43),
    "goal_rel_cube": slice(43, 46),
    "goal_rel_ee": slice(46, 49),
}
OBS_DIM = 49
REWARD_TYPES = ("dense", "sparse")
FREE_CAMERA: dict[str, Any] = {
    "distance": 1.6,
    "azimuth": 160.0,
    "elevation": -25.0,
    "lookat": [0.4, 0.0, 0.1],
}
"""Viewpoint of the free camera (``camera_name=None``, and the start view of the ``"human"`` viewer)."""


class ArmEnv(MujocoEnv, utils.EzPickle):
    """Base of the arm tasks: scene, Cartesian controller, observation, reward and success.

    Subclasses set :attr:`task` and implement :meth:`_sample_goal` (and say what is achieved through
    :attr:`goal_is_for_cube`).

    Args:
        reward_type: ``"dense"`` or ``"sparse"`` (see the module docstring).
        terminate_on_success: end the episode on the first successful step.
        distance_threshold: success radius in metres.
        render_mode: ``None``, ``"rgb_array"``, ``"depth_array"`` or ``"human"`` (MuJoCo viewer).
        width: rendered image width in pixels.
        height: rendered image height in pixels.
        camera_name: ``"front"`` or ``"wrist"`` (the scene's cameras); ``None`` for a free camera.

    Raises:
        UserError: an unknown ``reward_type`` or camera, or a non-positive threshold.
    """

    metadata: ClassVar[dict[str, Any]] = {  # type: ignore[misc]
        "render_modes": ["human", "rgb_array", "depth_array"],
        "render_fps": 20,
    }
    task: ClassVar[str] = ""
    goal_is_for_cube: ClassVar[bool] = True

    def __init__(
        self,
        reward_type: str = "dense",
        terminate_on_success: bool = True,
        distance_threshold: float = 0.05,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
        camera_name: str | None = "front",
    ) -> None:
        if reward_type not in REWARD_TYPES:
            raise UserError(f"reward_type must be one of {', '.join(REWARD_TYPES)}, got {reward_type!r}")
        if not (np.isfinite(distance_threshold) and distance_threshold > 0):
            raise UserError(f"distance_threshold must be a positive number, got {distance_threshold!r}")
        if camera_name not in (None, "front", "wrist"):
            raise UserError(f"camera_name must be 'front', 'wrist' or None, got {camera_name!r}")
        utils.EzPickle.__init__(
            self,
            reward_type,
            terminate_on_success,
            distance_threshold,
            render_mode,
            width,
            height,
            camera_name,
        )
        self.reward_type = reward_type
        self.terminate_on_success = bool(terminate_on_success)
        self.distance_threshold = float(distance_threshold)
        observation_space = spaces.Box(-np.inf, np.inf, shape=(OBS_DIM,), dtype=np.float64)
        MujocoEnv.__init__(
            self,
            MODEL_PATH,
            FRAME_SKIP,
            observation_space=observation_space,
            render_mode=render_mode,
            width=width,
            height=height,
            camera_name=camera_name,
            default_camera_config=FREE_CAMERA,
        )
        model = self.model
        self._home_key = int(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_KEY, "home"))
        home_qpos = model.key_qpos[self._home_key]
        arm_joint_ids = [model.joint(name).id for name in ARM_JOINTS]
        self._arm_qpos = np.array([model.jnt_qposadr[j] for j in arm_joint_ids])
        self._arm_dof = np.array([model.jnt_dofadr[j] for j in arm_joint_ids])
        self._finger_qpos = np.array(
            [model.jnt_qposadr[model.joint(n).id] for n in ("finger_left", "finger_right")]
        )
        cube_joint = model.joint("cube").id
        self._cube_qpos = int(model.jnt_qposadr[cube_joint])
        self._cube_dof = int(model.jnt_dofadr[cube_joint])
        self._grip_site = model.site("grip").id
        self._goal_mocap = int(model.body_mocapid[model.body("goal").id])
        self._target_mocap = int(model.body_mocapid[model.body("ee_target").id])
        self._gripper_actuator = model.actuator("gripper").id
        self._arm_actuators = np.array([model.actuator(name).id for name in ARM_JOINTS])
        self.ik = DifferentialIK(model, "grip", ARM_JOINTS, rest_qpos=home_qpos[self._arm_qpos])
        self._site_vel = np.zeros(6)
        # A position servo ``kp (ctrl - q) - kv qdot`` lags a moving target by (kv / kp) qdot; adding
        # (kv / kp) qdot_target to its set point turns it into ``kp (q* - q) + kv (qdot* - qdot)``.
        gains = model.actuator_gainprm[self._arm_actuators, 0]
        self._servo_lag = -model.actuator_biasprm[self._arm_actuators, 2] / gains

    # ------------------------------------------------------------------ Gymnasium API
    def _set_action_space(self) -> spaces.Box:
        # The actuators take joint targets; the agent acts in Cartesian space.
        self.action_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        return self.action_space

    # MujocoEnv annotates info as dict[str, np.float64], narrower than Gymnasium's Env API (dict[str, Any]).
    def step(  # type: ignore[override]
        self, action: np.ndarray
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply one action for :data:`FRAME_SKIP` physics substeps (see the module docstring)."""
        act = np.asarray(action, dtype=np.float64)
        if act.shape != (4,):
            raise ValueError(f"action must have shape (4,), got {act.shape}")
        if not np.all(np.isfinite(act)):
            raise ValueError(f"action must be finite, got {act}")
        act = np.minimum(np.maximum(act, -1.0), 1.0)  # np.clip's result, without its dispatch cost
        data = self.data
        ee_pos = data.site_xpos[self._grip_site]
        start = data.mocap_pos[self._target_mocap].copy()
        target = start + ACTION_SCALE * act[:3]
        target = np.minimum(np.maximum(target, ee_pos - MAX_TARGET_LEAD), ee_pos + MAX_TARGET_LEAD)
        target = np.minimum(np.maximum(target, WORKSPACE_LOW), WORKSPACE_HIGH)
        data.mocap_pos[self._target_mocap] = target
        data.ctrl[self._gripper_actuator] = GRIPPER_MAX_OPENING * 0.5 * (1.0 - act[3])
        n_inner = FRAME_SKIP // IK_EVERY
        # The target moves linearly over the step; the servos get its velocity as feedforward, which
        # removes most of the lag (and the path distortion from unequal lags across joints).
        delta = target - start
        target_vel = delta / self.dt
        for i in range(n_inner):
            waypoint = start + (i + 1) / n_inner * delta
            q_des, qd_des = self.ik.joint_targets(data, waypoint, DOWN_QUAT, target_vel)
            data.ctrl[self._arm_actuators] = q_des + self._servo_lag * qd_des
            mujoco.mj_step(self.model, data, nstep=IK_EVERY)
        # mj_step leaves derived quantities (site poses, velocities) one substep old; refresh them so
        # the observation is a function of the current state alone (the same after set_physics_state).
        mujoco.mj_forward(self.model, data)

        obs = self._get_obs()
        distance = self._goal_distance(obs)
        success = distance < self.distance_threshold
        reward = self._reward(obs, distance, success)
        terminated = bool(success and self.terminate_on_success)
        if self.render_mode == "human":
            self.render()
        return obs, reward, terminated, False, {"is_success": bool(success), "goal_distance": distance}

    def reset_model(self) -> np.ndarray:
        """Home pose, a fresh cube position and goal from ``self.np_random``; returns the observation."""
        mujoco.mj_resetDataKeyframe(self.model, self.data, self._home_key)
        rng = self.np_random
        cube_xy = rng.uniform(CUBE_LOW, CUBE_HIGH)
        goal = self._sample_goal(rng, cube_xy)
        qpos = self.data.qpos.copy()
        qpos[self._cube_qpos : self._cube_qpos + 3] = (cube_xy[0], cube_xy[1], TABLE_Z + CUBE_HALF_SIZE)
        qpos[self._cube_qpos + 3 : self._cube_qpos + 7] = (1.0, 0.0, 0.0, 0.0)
        self.data.mocap_pos[self._goal_mocap] = goal
        self.set_state(qpos, np.zeros(self.model.nv))  # also runs mj_forward
        self.data.mocap_pos[self._target_mocap] = self.data.site_xpos[self._grip_site]
        return self._get_obs()

    def _get_reset_info(self) -> dict[str, Any]:
        distance = self._goal_distance(self._get_obs())
        return {"is_success": bool(distance < self.distance_threshold), "goal_distance": distance}

    # ------------------------------------------------------------------ task pieces
    def _sample_goal(self, rng: np.random.Generator, cube_xy: np.ndarray) -> np.ndarray:
        """``(3,) float64`` goal position for a new episode."""
        raise NotImplementedError

    def _get_obs(self) -> np.ndarray:
        data = self.data
        ee_pos = data.site_xpos[self._grip_site].copy()
        mujoco.mj_objectVelocity(
            self.model, data, mujoco.mjtObj.mjOBJ_SITE, self._grip_site, self._site_vel, 0
        )
        cube_pos = data.qpos[self._cube_qpos : self._cube_qpos + 3]
        cube_quat = data.qpos[self._cube_qpos + 3 : self._cube_qpos + 7]
        if cube_quat[0] < 0:  # q and -q are the same rotation; one sign keeps the feature continuous
            cube_quat = -cube_quat
        goal = data.mocap_pos[self._goal_mocap]
        return np.concatenate(
            [
                data.qpos[self._arm_qpos],
                data.qvel[self._arm_dof],
                ee_pos,
                self._site_vel[3:],
                data.mocap_pos[self._target_mocap],
                [data.qpos[self._finger_qpos].sum()],
                cube_pos,
                cube_quat,
                data.qvel[self._cube_dof : self._cube_dof + 6],
                goal,
                cube_pos - ee_pos,
                goal - cube_pos,
                goal - ee_pos,
            ]
        )

    def _goal_distance(self, obs: np.ndarray) -> float:
        rel = obs[OBS_SLICES["goal_rel_cube"] if self.goal_is_for_cube else OBS_SLICES["goal_rel_ee"]]
        return float(np.linalg.norm(rel))

    def _reward(self, obs: np.ndarray, distance: float, success: bool) -> float:
        if self.reward_type == "sparse":
            return 0.0 if success else -1.0
        if not self.goal_is_for_cube:
            return -distance
        return -distance - 0.5 * float(np.linalg.norm(obs[OBS_SLICES["cube_rel_ee"]]))


def _goal_away_from(rng: np.random.Generator, cube_xy: np.ndarray) -> np.ndarray:
    """An (x, y) in the cube's range at least :data:`MIN_GOAL_DISTANCE` from ``cube_xy``."""
    while True:  # rejection sampling: the accepted area is over 80 % of the range, so this is quick
        goal_xy = rng.uniform(CUBE_LOW, CUBE_HIGH)
        if np.linalg.norm(goal_xy - cube_xy) >= MIN_GOAL_DISTANCE:
            return goal_xy


class ArmReachEnv(ArmEnv):
    """Reach: move the TCP to a goal point above the table (the cube is only an obstacle)."""

    task = "reach"
    goal_is_for_cube = False

    def _sample_goal(self, rng: np.random.Generator, cube_xy: np.ndarray) -> np.ndarray:
        return rng.uniform(REACH_GOAL_LOW, REACH_GOAL_HIGH)


class ArmPushEnv(ArmEnv):
    """Push: slide the cube over the table to a goal on the table."""

    task = "push"

    def _sample_goal(self, rng: np.random.Generator, cube_xy: np.ndarray) -> np.ndarray:
        goal_xy = _goal_away_from(rng, cube_xy)
        return np.array([goal_xy[0], goal_xy[1], TABLE_Z + CUBE_HALF_SIZE])


class ArmPickPlaceEnv(ArmEnv):
    """Pick and place: grasp the cube and bring it to a goal in the air or on the table."""

    task = "pick_place"

    def _sample_goal(self, rng: np.random.Generator, cube_xy: np.ndarray) -> np.ndarray:
        goal_xy = _goal_away_from(rng, cube_xy)
        # Always draw both numbers so the random stream does not depend on the coin.
        in_air, height = rng.uniform() < 0.5, rng.uniform(*AIR_GOAL_HEIGHT)
        z = TABLE_Z + CUBE_HALF_SIZE + (height if in_air else 0.0)
        return np.array([goal_xy[0], goal_xy[1], z])
