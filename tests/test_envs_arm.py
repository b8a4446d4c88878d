"""The arm tasks: registration, spaces, reset bounds, determinism, replay, grasping, success, rendering."""

from __future__ import annotations

import importlib
from typing import Any, cast

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import gail_robot.envs
from gail_robot.envs import arm, physics
from gail_robot.envs.arm import OBS_DIM, OBS_SLICES
from gail_robot.errors import UserError

ARM_IDS = list(gail_robot.envs.ARM_TASKS)


def make(env_id: str, **kwargs: Any) -> gym.Env:
    return gym.make(env_id, **kwargs)


def arm_env(env: gym.Env) -> arm.ArmEnv:
    """The task under the Gymnasium wrappers."""
    return cast(arm.ArmEnv, env.unwrapped)


def field(obs: np.ndarray, name: str) -> np.ndarray:
    return obs[OBS_SLICES[name]]


def drive(env: gym.Env, waypoint: np.ndarray, grip: float, steps: int) -> np.ndarray:
    """Steer the TCP target to ``waypoint`` with plain actions (no expert); returns the last obs."""
    obs = arm_env(env)._get_obs()
    for _ in range(steps):
        move = (waypoint - field(obs, "ee_target")) / arm.ACTION_SCALE
        move /= max(1.0, float(np.abs(move).max()))
        obs, *_ = env.step(np.array([*move, grip], dtype=np.float32))
    return obs


# ---------------------------------------------------------------- registration and spaces
@pytest.mark.parametrize("env_id", ARM_IDS)
def test_registered_with_spaces_and_horizon(env_id: str) -> None:
    env = make(env_id)
    assert env.spec is not None
    assert env.spec.max_episode_steps == gail_robot.envs.ARM_TASKS[env_id].max_episode_steps
    assert env.observation_space.shape == (OBS_DIM,)
    assert isinstance(env.action_space, gym.spaces.Box)
    assert env.action_space.shape == (4,)
    np.testing.assert_array_equal(env.action_space.low, -1.0)
    np.testing.assert_array_equal(env.action_space.high, 1.0)
    assert arm_env(env).dt == pytest.approx(0.05)  # 20 Hz control
    assert arm_env(env).model.opt.timestep <= 0.002  # physics at 500 Hz or faster
    obs, info = env.reset(seed=0)
    assert obs.shape == (OBS_DIM,) and np.all(np.isfinite(obs))
    assert info["is_success"] is False
    env.close()


def test_obs_slices_cover_the_observation_once() -> None:
    covered = np.zeros(OBS_DIM, dtype=int)
    for part in OBS_SLICES.values():
        covered[part] += 1
    np.testing.assert_array_equal(covered, 1)


def test_reimport_does_not_reregister() -> None:
    importlib.reload(gail_robot.envs)  # would warn (an error under pytest config) if it re-registered
    assert all(env_id in gym.registry for env_id in ARM_IDS)


@pytest.mark.filterwarnings("ignore:.*Box observation space.*infinity:UserWarning")
@pytest.mark.parametrize("env_id", ARM_IDS)
def test_gymnasium_env_checker(env_id: str) -> None:
    from gymnasium.utils.env_checker import check_env

    check_env(make(env_id).unwrapped, skip_render_check=True)


def test_bad_options_are_user_errors() -> None:
    with pytest.raises(UserError, match="reward_type must be one of dense, sparse"):
        make("gail_robot/ArmReach-v0", reward_type="shaped")
    with pytest.raises(UserError, match="distance_threshold must be a positive number"):
        make("gail_robot/ArmReach-v0", distance_threshold=0.0)
    with pytest.raises(UserError, match="camera_name must be"):
        make("gail_robot/ArmReach-v0", camera_name="top")


def test_bad_actions_are_value_errors() -> None:
    env = arm_env(make("gail_robot/ArmPush-v0"))  # unwrapped: the passive checker would warn first
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([0.0, np.nan, 0.0, 0.0]))


# ---------------------------------------------------------------- reset distribution
@pytest.mark.parametrize("env_id", ARM_IDS)
def test_reset_within_documented_bounds(env_id: str) -> None:
    env = make(env_id)
    home = arm_env(env).model.key_qpos[arm_env(env)._home_key][:7]
    cubes, goals = [], []
    for seed in range(150):
        obs, _ = env.reset(seed=seed)
        cube, goal, ee = field(obs, "cube_pos"), field(obs, "goal_pos"), field(obs, "ee_pos")
        cubes.append(cube)
        goals.append(goal)
        np.testing.assert_allclose(field(obs, "joint_pos"), home)
        np.testing.assert_allclose(ee, [0.4, 0.0, 0.25], atol=1e-4)
        np.testing.assert_allclose(field(obs, "ee_target"), ee)
        assert field(obs, "gripper_opening")[0] == pytest.approx(0.08)
        np.testing.assert_allclose(field(obs, "cube_quat"), [1, 0, 0, 0])
        assert np.all(cube[:2] >= arm.CUBE_LOW) and np.all(cube[:2] <= arm.CUBE_HIGH)
        assert cube[2] == pytest.approx(arm.TABLE_Z + arm.CUBE_HALF_SIZE)
        # the relative vectors are what they say
        np.testing.assert_allclose(field(obs, "cube_rel_ee"), cube - ee)
        np.testing.assert_allclose(field(obs, "goal_rel_cube"), goal - cube)
        np.testing.assert_allclose(field(obs, "goal_rel_ee"), goal - ee)
        if env_id.endswith("ArmReach-v0"):
            assert np.all(goal >= arm.REACH_GOAL_LOW) and np.all(goal <= arm.REACH_GOAL_HIGH)
        else:
            assert np.all(goal[:2] >= arm.CUBE_LOW) and np.all(goal[:2] <= arm.CUBE_HIGH)
            assert np.linalg.norm(goal[:2] - cube[:2]) >= arm.MIN_GOAL_DISTANCE
    goals_arr, cubes_arr = np.array(goals), np.array(cubes)
    # randomised, and spread over the range (not stuck in a corner)
    assert np.ptp(cubes_arr[:, 0]) > 0.15 and np.ptp(cubes_arr[:, 1]) > 0.3
    rest_z = arm.TABLE_Z + arm.CUBE_HALF_SIZE
    if env_id.endswith("ArmPush-v0"):
        np.testing.assert_allclose(goals_arr[:, 2], rest_z)
    if env_id.endswith("ArmPickPlace-v0"):
        in_air = goals_arr[:, 2] > rest_z + 1e-9
        assert 0.3 < in_air.mean() < 0.7
        heights = goals_arr[in_air, 2] - rest_z
        assert heights.min() >= arm.AIR_GOAL_HEIGHT[0] and heights.max() <= arm.AIR_GOAL_HEIGHT[1]


# ---------------------------------------------------------------- determinism and replay
def random_actions(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, 4)).astype(np.float32)


@pytest.mark.parametrize("env_id", ARM_IDS)
def test_same_seed_same_trajectory(env_id: str) -> None:
    actions = random_actions(30, seed=1)
    runs = []
    for _ in range(2):
        env = make(env_id)
        obs, _ = env.reset(seed=7)
        trajectory = [obs]
        for action in actions:
            obs, *_ = env.step(action)
            trajectory.append(obs)
        runs.append(np.array(trajectory))
    np.testing.assert_array_equal(runs[0], runs[1])
    other, _ = make(env_id).reset(seed=8)
    assert not np.array_equal(other, runs[0][0])


@pytest.mark.parametrize("env_id", ARM_IDS)
def test_state_round_trip_reproduces_next_50_steps(env_id: str) -> None:
    env = make(env_id, terminate_on_success=False)
    env.reset(seed=3)
    for action in random_actions(10, seed=2):
        env.step(action)
    state = physics.get_physics_state(env)
    assert state.shape == (physics.state_size(env),)
    actions = random_actions(50, seed=4)

    def rollout(target: gym.Env) -> tuple[np.ndarray, np.ndarray]:
        observations, rewards = [], []
        for action in actions:
            obs, reward, *_ = arm_env(target).step(action)  # unwrapped: no time limit in the way
            observations.append(obs)
            rewards.append(reward)
        return np.array(observations), np.array(rewards)

    first_obs, first_rewards = rollout(env)
    # The same env after wandering off, and a fresh env after a different reset, both replay exactly:
    # the controller keeps no state outside MuJoCo's.
    physics.set_physics_state(env, state)
    fresh = make(env_id, terminate_on_success=False)
    fresh.reset(seed=99)
    physics.set_physics_state(fresh, state)
    for replayed in (env, fresh):
        replay_obs, replay_rewards = rollout(replayed)
        np.testing.assert_array_equal(replay_obs, first_obs)
        np.testing.assert_array_equal(replay_rewards, first_rewards)


def test_model_xml_is_the_self_contained_scene() -> None:
    env = make("gail_robot/ArmPickPlace-v0")
    xml = physics.model_xml(env)
    assert xml is not None and 'model="gail_robot_arm_table"' in xml
    rebuilt = mujoco.MjModel.from_xml_string(xml)  # no include files or assets needed
    assert rebuilt.nq == arm_env(env).model.nq


# ---------------------------------------------------------------- control and physics
def test_cartesian_control_tracks_and_keeps_the_gripper_down() -> None:
    env = make("gail_robot/ArmReach-v0", terminate_on_success=False)
    env.reset(seed=0)
    base = arm_env(env)
    for waypoint in ([0.6, 0.2, 0.1], [0.45, -0.25, 0.3], [0.5, 0.0, 0.03]):
        obs = drive(env, np.array(waypoint), grip=-1.0, steps=30)
        np.testing.assert_allclose(field(obs, "ee_pos"), waypoint, atol=2e-3)
        np.testing.assert_allclose(field(obs, "ee_vel"), 0.0, atol=0.02)
        tool_z_axis = base.data.site_xmat[base._grip_site].reshape(3, 3)[:, 2]
        assert tool_z_axis[2] < -0.999  # pointing straight down


def test_target_stays_in_the_workspace() -> None:
    env = make("gail_robot/ArmReach-v0", terminate_on_success=False)
    obs, _ = env.reset(seed=0)
    for _ in range(40):
        obs, *_ = env.step(np.array([1.0, 1.0, -1.0, 0.0], dtype=np.float32))
    target = field(obs, "ee_target")
    assert np.all(target >= arm.WORKSPACE_LOW - 1e-12) and np.all(target <= arm.WORKSPACE_HIGH + 1e-12)
    assert np.all(np.abs(target - field(obs, "ee_pos")) <= arm.MAX_TARGET_LEAD + 1e-9)


def test_gripper_grasps_lifts_holds_and_releases_the_cube() -> None:
    """Physics only: plain actions, no expert."""
    env = make("gail_robot/ArmPickPlace-v0", terminate_on_success=False)
    obs, _ = env.reset(seed=5)
    cube = field(obs, "cube_pos").copy()
    drive(env, cube + np.array([0, 0, 0.08]), grip=-1.0, steps=20)
    obs = drive(env, cube, grip=-1.0, steps=15)
    assert field(obs, "cube_pos")[2] == pytest.approx(cube[2], abs=2e-3)  # not pushed around
    obs = drive(env, cube, grip=1.0, steps=5)
    opening = field(obs, "gripper_opening")[0]
    assert 2 * arm.CUBE_HALF_SIZE - 0.004 < opening < 2 * arm.CUBE_HALF_SIZE + 0.002  # pinching the cube
    lifted = cube + np.array([0, 0, 0.15])
    obs = drive(env, lifted, grip=1.0, steps=15)
    carried = lifted + np.array([0.05, 0.1, 0.0])
    heights = []
    for _ in range(3):
        obs = drive(env, carried, grip=1.0, steps=10)
        heights.append(field(obs, "cube_pos")[2])
        offset = field(obs, "cube_pos") - field(obs, "ee_pos")
        assert np.linalg.norm(offset) < 0.01  # held firmly at the finger pads
    assert min(heights) > cube[2] + 0.14  # lifted 15 cm and held there while carried
    assert np.ptp(heights) < 0.003  # not slipping
    assert abs(field(obs, "cube_quat")[0]) > 0.99  # barely rotated in the grasp
    obs = drive(env, carried, grip=-1.0, steps=20)  # let go: it falls back onto the table
    assert field(obs, "cube_pos")[2] == pytest.approx(arm.TABLE_Z + arm.CUBE_HALF_SIZE, abs=3e-3)


# ---------------------------------------------------------------- success, reward, termination
def put_cube(env: gym.Env, position: np.ndarray) -> None:
    base = arm_env(env)
    qpos, qvel = base.data.qpos.copy(), base.data.qvel.copy()
    qpos[base._cube_qpos : base._cube_qpos + 3] = position
    base.set_state(qpos, qvel)


@pytest.mark.parametrize("terminate_on_success", [True, False])
def test_success_detection_reward_and_termination(terminate_on_success: bool) -> None:
    zero = np.zeros(4, dtype=np.float32)
    for reward_type in ("dense", "sparse"):
        env = make(
            "gail_robot/ArmPush-v0", reward_type=reward_type, terminate_on_success=terminate_on_success
        )
        obs, _ = env.reset(seed=11)
        goal = field(obs, "goal_pos")
        obs, reward, terminated, truncated, info = env.step(zero)
        assert not info["is_success"] and not terminated and not truncated
        far = np.linalg.norm(field(obs, "goal_rel_cube"))
        assert info["goal_distance"] == pytest.approx(far)
        if reward_type == "sparse":
            assert reward == -1.0
        else:
            reach = np.linalg.norm(field(obs, "cube_rel_ee"))
            assert reward == pytest.approx(-far - 0.5 * reach)
        put_cube(env, goal + np.array([0.03, 0.0, 0.0]))  # inside the 5 cm threshold
        obs, reward, terminated, truncated, info = env.step(zero)
        assert info["is_success"] and terminated == terminate_on_success and not truncated
        if reward_type == "sparse":
            assert reward == 0.0


def test_reach_success_uses_the_tool_not_the_cube() -> None:
    env = make("gail_robot/ArmReach-v0")
    obs, _ = env.reset(seed=2)
    goal = field(obs, "goal_pos")
    put_cube(env, goal)  # a cube at the goal does not count for reach
    obs, _, terminated, _, info = env.step(np.zeros(4, dtype=np.float32))
    assert not info["is_success"]
    for _ in range(40):
        move = (goal - field(obs, "ee_target")) / arm.ACTION_SCALE
        move /= max(1.0, float(np.abs(move).max()))
        obs, _, terminated, _, info = env.step(np.array([*move, -1.0], dtype=np.float32))
        if terminated:
            break
    assert terminated and info["is_success"] and np.linalg.norm(field(obs, "goal_rel_ee")) < 0.05


def test_time_limit_truncates_without_terminating() -> None:
    env = make("gail_robot/ArmReach-v0", terminate_on_success=False)
    env.reset(seed=0)
    for step in range(1, 51):
        _, _, terminated, truncated, _ = env.step(np.zeros(4, dtype=np.float32))
        assert not terminated
        assert truncated == (step == 50)


# ---------------------------------------------------------------- rendering
@pytest.mark.parametrize("camera_name", ["front", "wrist"])
def test_rgb_array_rendering_headless(camera_name: str) -> None:
    env = make(
        "gail_robot/ArmPickPlace-v0", render_mode="rgb_array", camera_name=camera_name, width=96, height=64
    )
    env.reset(seed=0)
    frame = env.render()
    env.close()
    assert isinstance(frame, np.ndarray) and frame.shape == (64, 96, 3) and frame.dtype == np.uint8
    assert frame.std() > 10  # a scene, not a blank image


def test_velocities_in_the_observation_match_finite_differences() -> None:
    env = make("gail_robot/ArmReach-v0", terminate_on_success=False)
    obs, _ = env.reset(seed=0)
    put_cube(env, np.array([0.5, 0.2, 0.3]))  # let the cube fall freely
    base = arm_env(env)
    data = base.data
    action = np.array([0.7, -0.4, 0.3, 0.0], dtype=np.float32)
    for _ in range(3):
        obs, *_ = env.step(action)
    # one physics substep with the controls the env set: compare against the substep's displacement
    ee_before, cube_before = field(obs, "ee_pos").copy(), field(obs, "cube_pos").copy()
    timestep = base.model.opt.timestep
    mujoco.mj_step(base.model, data)
    mujoco.mj_forward(base.model, data)
    after = base._get_obs()
    np.testing.assert_allclose(
        (field(after, "ee_pos") - ee_before) / timestep, field(obs, "ee_vel"), rtol=0.05, atol=2e-3
    )
    np.testing.assert_allclose(
        (field(after, "cube_pos") - cube_before) / timestep, field(obs, "cube_linvel"), rtol=0.02, atol=2e-3
    )
    assert field(obs, "cube_linvel")[2] < -0.5  # falling
    assert np.linalg.norm(field(obs, "ee_vel")) > 0.2  # moving


def test_ik_converges_and_stays_finite_out_of_reach() -> None:
    from gail_robot.envs.arm_ik import DifferentialIK

    model = mujoco.MjModel.from_xml_path(arm.MODEL_PATH)
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, 0)
    mujoco.mj_forward(model, data)
    ik = DifferentialIK(model, "grip", arm.ARM_JOINTS, rest_qpos=data.qpos[:7].copy())
    for target, reachable in (([0.55, -0.15, 0.05], True), ([1.5, 0.0, 0.2], False)):
        for _ in range(200):  # kinematic iteration: set the joints to the targets and repeat
            qpos, _ = ik.joint_targets(data, np.array(target), arm.DOWN_QUAT)
            data.qpos[:7] = qpos
            mujoco.mj_forward(model, data)
        assert np.all(np.isfinite(data.qpos))
        assert np.all(qpos >= ik.joint_low) and np.all(qpos <= ik.joint_high)
        error = np.linalg.norm(data.site("grip").xpos - target)
        assert (error < 1e-3) if reachable else (error > 0.3)
    with pytest.raises(ValueError, match="no site named"):
        DifferentialIK(model, "nope", arm.ARM_JOINTS, rest_qpos=np.zeros(7))


def test_ik_step_equals_the_damped_least_squares_formula() -> None:
    """The mju_* Cholesky path (what arm.cpp reproduces bit for bit) is the textbook DLS step.

    Reference in NumPy: dq = clip(J^T (J J^T + lambda^2 I)^-1 (e - J p) + p), qdot = J^T (...)^-1 [v; 0],
    with p the null-space posture pull, over states of a random rollout and random targets.
    """
    env = gym.make("gail_robot/ArmPush-v0")
    env.reset(seed=1)
    base = arm_env(env)
    ik, model, data = base.ik, base.model, base.data
    rng = np.random.default_rng(0)
    for _ in range(20):
        env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        target = data.site_xpos[ik.site_id] + rng.uniform(-0.05, 0.05, 3)
        velocity = rng.uniform(-0.5, 0.5, 3)
        qpos_target, qvel_target = ik.joint_targets(data, target, arm.DOWN_QUAT, velocity)

        jacp, jacr = np.zeros((3, model.nv)), np.zeros((3, model.nv))
        mujoco.mj_jacSite(model, data, jacp, jacr, ik.site_id)
        jac = np.vstack([jacp[:, ik.dof_ids], ik.orientation_weight * jacr[:, ik.dof_ids]])
        site_quat, inverse, error_quat, rotation = np.zeros(4), np.zeros(4), np.zeros(4), np.zeros(3)
        mujoco.mju_mat2Quat(site_quat, data.site_xmat[ik.site_id])
        mujoco.mju_negQuat(inverse, site_quat)
        mujoco.mju_mulQuat(error_quat, arm.DOWN_QUAT, inverse)
        mujoco.mju_quat2Vel(rotation, error_quat, 1.0)
        error = np.concatenate([target - data.site_xpos[ik.site_id], ik.orientation_weight * rotation])
        qpos = data.qpos[ik.qpos_ids]
        posture = ik.null_gain * (ik.rest_qpos - qpos)
        gram = jac @ jac.T + ik.damping**2 * np.eye(6)
        step = np.clip(jac.T @ np.linalg.solve(gram, error - jac @ posture) + posture, -0.25, 0.25)
        np.testing.assert_allclose(
            qpos_target, np.clip(qpos + step, ik.joint_low, ik.joint_high), rtol=0, atol=1e-12
        )
        feedforward = jac.T @ np.linalg.solve(gram, np.concatenate([velocity, np.zeros(3)]))
        np.testing.assert_allclose(qvel_target, feedforward, rtol=0, atol=1e-11)
    env.close()
