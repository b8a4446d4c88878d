"""Task properties are declared at registration (docs/DESIGN.md §6), never guessed from ids."""

from __future__ import annotations

import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import gail_robot
import gail_robot.envs
from gail_robot.algos.gail import reward_kind_for
from gail_robot.envs.experts import expert_env_ids, has_scripted_expert, make_expert
from gail_robot.envs.tasks import DEFAULT_TASK, TaskInfo, declare_task, declared_tasks, task_info
from gail_robot.teleop.devices import cartesian_teleop

ARM_IDS = list(gail_robot.envs.ARM_TASKS)


def test_every_registered_arm_task_declares_its_properties() -> None:
    declared = declared_tasks()
    for env_id in ARM_IDS:
        assert env_id in gym.registry
        info = declared[env_id]
        assert info is gail_robot.envs.ARM_TASKS[env_id].info
        assert info.reward_kind == "neg"  # they end on success: a per-step cost, not a survival bonus
        assert info.success == "info"
        assert info.teleop == "cartesian"
        assert info.expert is not None
    assert sorted(expert_env_ids()) == sorted(ARM_IDS)


@pytest.mark.parametrize(
    ("env_id", "reward", "cartesian", "expert"),
    [
        ("gail_robot/ArmReach-v0", "neg", True, "ReachExpert"),
        ("gail_robot/ArmPush-v0", "neg", True, "PushExpert"),
        ("gail_robot/ArmPickPlace-v0", "neg", True, "PickPlaceExpert"),
        ("Hopper-v5", "gail", False, None),
        ("InvertedPendulum-v5", "gail", False, None),
        ("Pendulum-v1", "gail", False, None),
    ],
)
def test_reward_kind_teleop_and_expert_per_task(
    env_id: str, reward: str, cartesian: bool, expert: str | None
) -> None:
    assert reward_kind_for(env_id, "auto") == reward
    assert reward_kind_for(env_id, "airl") == "airl"  # a configured kind always wins
    env = gym.make(env_id)
    try:
        assert cartesian_teleop(env) is cartesian
        assert has_scripted_expert(env_id) is (expert is not None)
        if expert is not None:
            assert type(make_expert(env)).__name__ == expert
            # Made without gym.make (no spec): found through the registered entry point.
            assert type(make_expert(type(env.unwrapped)())).__name__ == expert
    finally:
        env.close()


def test_gymnasium_mujoco_tasks_are_declared_for_every_version() -> None:
    for env_id in ("Hopper-v4", "Hopper-v5", "Walker2d-v5", "Humanoid-v5", "Ant-v5", "HalfCheetah-v5"):
        info = task_info(env_id)
        assert info.reward_kind == "gail"
        assert info.success == "survive"
        assert info.teleop == "joint"
        assert info.expert is None
    # A walker that reaches the time limit succeeded, one that fell did not, whatever the info says.
    walker = task_info("Hopper-v5")
    assert walker.success_from({}, terminated=False, truncated=True)
    assert not walker.success_from({}, terminated=True, truncated=False)
    assert not walker.success_from({"is_success": True}, terminated=True, truncated=False)


def test_unknown_env_gets_the_documented_default() -> None:
    for env_id in ("Pendulum-v1", "MyLab/Robot-v3", "not an id at all"):
        assert task_info(env_id) is DEFAULT_TASK
    assert DEFAULT_TASK == TaskInfo(reward_kind="gail", success="auto", teleop="joint", expert=None)
    # auto: is_success when the env reports it, else surviving to the time limit.
    assert DEFAULT_TASK.success_from({"is_success": np.True_}, terminated=True, truncated=False)
    assert not DEFAULT_TASK.success_from({"is_success": False}, terminated=False, truncated=True)
    assert DEFAULT_TASK.success_from({}, terminated=False, truncated=True)
    assert not DEFAULT_TASK.success_from({}, terminated=True, truncated=False)


def test_arm_success_reads_is_success_only() -> None:
    arm = task_info("gail_robot/ArmPush-v0")
    assert arm.success_from({"is_success": True}, terminated=True, truncated=False)
    assert not arm.success_from({"is_success": False}, terminated=False, truncated=True)
    assert not arm.success_from({}, terminated=False, truncated=True)


def test_declare_task_and_bad_declarations() -> None:
    info = TaskInfo(reward_kind="neg", success="info", teleop="cartesian")
    declare_task("gail_robot_test/Declared-v0", info)
    declare_task("gail_robot_test/Declared-v0", info)  # the same again (a module reload) is fine
    assert task_info("gail_robot_test/Declared-v0") is info
    assert task_info("gail_robot_test/Declared-v1") is DEFAULT_TASK  # exact ids only
    with pytest.raises(ValueError, match="already declared"):
        declare_task("gail_robot_test/Declared-v0", TaskInfo())
    with pytest.raises(ValueError, match="reward_kind"):
        TaskInfo(reward_kind="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="success"):
        TaskInfo(success="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="teleop"):
        TaskInfo(teleop="mind")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="entry point"):
        TaskInfo(expert="NoColon")


def test_no_task_property_is_guessed_from_an_id_prefix() -> None:
    package = Path(gail_robot.__file__).parent
    guess = re.compile(r"""startswith\(\s*["']gail_robot/Arm""")
    offenders = [
        f"{path.relative_to(package)}:{number}"
        for path in sorted(package.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if guess.search(line)
    ]
    assert offenders == []
