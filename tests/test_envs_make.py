"""make_env: videos of walkers follow the robot; envs with their own camera keep it."""

from __future__ import annotations

import mujoco
import pytest

from gail_robot.data.schema import EnvMeta
from gail_robot.envs.make import make_env


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Humanoid-v5"])
def test_walker_videos_use_the_track_camera(env_id: str) -> None:
    env = make_env(env_id, render_mode="rgb_array")
    renderer = env.unwrapped.mujoco_renderer
    assert renderer.camera_id == mujoco.mj_name2id(renderer.model, mujoco.mjtObj.mjOBJ_CAMERA, "track") >= 0
    assert make_env(env_id).unwrapped.mujoco_renderer.camera_id == -1  # no rendering asked: untouched
    # a demo file's env (data replay --video) renders the same way
    replay_env = EnvMeta.from_env(make_env(env_id)).make_env(render_mode="rgb_array")
    assert replay_env.unwrapped.mujoco_renderer.camera_id == renderer.camera_id


def test_arm_task_keeps_its_front_camera() -> None:
    env = make_env("gail_robot/ArmReach-v0", render_mode="rgb_array")
    renderer = env.unwrapped.mujoco_renderer
    assert renderer.camera_id == mujoco.mj_name2id(renderer.model, mujoco.mjtObj.mjOBJ_CAMERA, "front") >= 0
