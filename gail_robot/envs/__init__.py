"""Environments: the project's manipulation tasks (registered on import) and env helpers.

Importing this package registers three Gymnasium tasks (see :mod:`gail_robot.envs.arm` for the robot,
observation layout, rewards and reset bounds)::

    import gymnasium as gym
    import gail_robot.envs  # noqa: F401

    env = gym.make("gail_robot/ArmPickPlace-v0", reward_type="sparse", render_mode="rgb_array")

The env modules themselves load only when an env is made, so this import stays light.
"""

from __future__ import annotations

import gymnasium as gym

ARM_TASKS: dict[str, tuple[str, int]] = {
    # id: (entry point, max_episode_steps at 20 Hz)
    "gail_robot/ArmReach-v0": ("gail_robot.envs.arm:ArmReachEnv", 50),
    "gail_robot/ArmPush-v0": ("gail_robot.envs.arm:ArmPushEnv", 100),
    "gail_robot/ArmPickPlace-v0": ("gail_robot.envs.arm:ArmPickPlaceEnv", 100),
}


def _register_arm_tasks() -> None:
    for env_id, (entry_point, max_episode_steps) in ARM_TASKS.items():
        # Re-registering warns (and warnings are errors in the tests), e.g. after importlib.reload.
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_episode_steps)


_register_arm_tasks()

__all__ = ["ARM_TASKS"]
