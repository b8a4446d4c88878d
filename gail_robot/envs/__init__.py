"""Environments: the project's manipulation tasks (registered on import) and env helpers.

Importing this package registers three Gymnasium tasks (see :mod:`gail_robot.envs.arm` for the robot,
observation layout, rewards and reset bounds) and declares their task properties
(:mod:`gail_robot.envs.tasks`, docs/DESIGN.md §6)::

    import gymnasium as gym
    import gail_robot.envs  # noqa: F401

    env = gym.make("gail_robot/ArmPickPlace-v0", reward_type="sparse", render_mode="rgb_array")

The env modules themselves load only when an env is made, so this import stays light.
"""

from __future__ import annotations

from typing import NamedTuple

import gymnasium as gym

from gail_robot.envs.tasks import TaskInfo, declare_task


class ArmTask(NamedTuple):
    """One of the project's tasks: how Gymnasium makes it, and what it is (its :class:`TaskInfo`)."""

    entry_point: str
    max_episode_steps: int  # at the 20 Hz control rate
    info: TaskInfo


def _arm(expert: str) -> TaskInfo:
    # The arm tasks end on success (terminate_on_success), report info["is_success"], and take
    # Cartesian [dx, dy, dz, grip] actions.
    return TaskInfo(reward_kind="neg", success="info", teleop="cartesian", expert=expert)


ARM_TASKS: dict[str, ArmTask] = {
    "gail_robot/ArmReach-v0": ArmTask(
        "gail_robot.envs.arm:ArmReachEnv", 50, _arm("gail_robot.envs.experts:ReachExpert")
    ),
    "gail_robot/ArmPush-v0": ArmTask(
        "gail_robot.envs.arm:ArmPushEnv", 100, _arm("gail_robot.envs.experts:PushExpert")
    ),
    "gail_robot/ArmPickPlace-v0": ArmTask(
        "gail_robot.envs.arm:ArmPickPlaceEnv", 100, _arm("gail_robot.envs.experts:PickPlaceExpert")
    ),
}


def _register_arm_tasks() -> None:
    for env_id, task in ARM_TASKS.items():
        # Re-registering warns (and warnings are errors in the tests), e.g. after importlib.reload.
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=task.entry_point, max_episode_steps=task.max_episode_steps)
        declare_task(env_id, task.info)


_register_arm_tasks()


def _register_variants() -> None:
    # Changed-dynamics variants of Gymnasium tasks (the AIRL transfer experiment): same spaces and
    # reward as the original, so they share its task properties (docs/DESIGN.md §6).
    from gail_robot.envs.tasks import task_info
    from gail_robot.envs.variants import VARIANTS

    for env_id, variant in VARIANTS.items():
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point="gail_robot.envs.variants:make_variant",
                max_episode_steps=gym.registry[variant.original].max_episode_steps,
                kwargs={"variant_id": env_id},
            )
        declare_task(env_id, task_info(variant.original))


_register_variants()

__all__ = ["ARM_TASKS", "ArmTask"]
