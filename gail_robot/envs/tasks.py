"""Task properties, declared where a task is registered instead of guessed from its id.

Each task says (docs/DESIGN.md §6):

* ``reward_kind``: the discriminator reward that GAIL's ``reward: auto`` picks (docs/DESIGN.md §2).
  A task that ends on *failure* (a walker falls) wants ``gail`` (``-log(1 - D) >= 0``: every step
  alive earns a bonus); a task that ends on *success* wants ``neg`` (``log D <= 0``: a cost per
  step, so finishing early pays). The wrong sign teaches the policy to stall or to end the episode
  early (Kostrikov et al. 2019, "Discriminator-Actor-Critic", sec. 4.1).
* ``success``: what counts as a successful episode when recording and evaluating: ``info`` reads
  ``info["is_success"]`` of the last step; ``survive`` means reaching the time limit without
  terminating; ``goal`` means terminating (the goal is reached) before the time limit; ``auto`` is
  ``info`` when the env reports ``is_success`` and ``survive`` otherwise.
* ``teleop``: how teleop input maps to actions: ``cartesian`` (``[dx, dy, dz, grip]`` of the arm's
  Cartesian controller) or ``joint`` (one action dimension at a time).
* ``expert``: entry point ``"module:Class"`` of the task's scripted expert, or ``None``.

The project's arm tasks are declared next to their ``gym.register`` calls
(:mod:`gail_robot.envs`); the Gymnasium MuJoCo tasks and the classic-control tasks with
``Discrete`` actions (CartPole, Acrobot, MountainCar) are declared here by name, for every version.
Any other env gets :data:`DEFAULT_TASK`: ``gail`` reward, ``auto`` success, joint teleop, no expert.
Another project registering its own tasks declares them with :func:`declare_task`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gymnasium.envs.registration import parse_env_id

from gail_robot.core import DiscRewardKind

SuccessKind = Literal["info", "survive", "goal", "auto"]
TeleopKind = Literal["cartesian", "joint"]


@dataclass(frozen=True)
class TaskInfo:
    """Properties of one task (see the module docstring).

    Attributes:
        reward_kind: discriminator reward for ``gail.reward: auto``: ``"gail"``, ``"neg"`` or ``"airl"``.
        success: ``"info"``, ``"survive"``, ``"goal"`` or ``"auto"``.
        teleop: ``"cartesian"`` or ``"joint"``.
        expert: scripted expert entry point ``"module:Class"``, or ``None``.
    """

    reward_kind: DiscRewardKind = "gail"
    success: SuccessKind = "auto"
    teleop: TeleopKind = "joint"
    expert: str | None = None

    def __post_init__(self) -> None:
        if self.reward_kind not in ("gail", "airl", "neg"):
            raise ValueError(f"reward_kind must be gail, airl or neg, got {self.reward_kind!r}")
        if self.success not in ("info", "survive", "goal", "auto"):
            raise ValueError(f"success must be info, survive, goal or auto, got {self.success!r}")
        if self.teleop not in ("cartesian", "joint"):
            raise ValueError(f"teleop must be cartesian or joint, got {self.teleop!r}")
        if self.expert is not None and ":" not in self.expert:
            raise ValueError(f"expert must be an entry point 'module:Class', got {self.expert!r}")

    def success_from(self, info: dict[str, Any], terminated: bool, truncated: bool) -> bool:
        """Whether an episode whose last step gave ``info``, ``terminated``, ``truncated`` succeeded."""
        if self.success == "info" or (self.success == "auto" and "is_success" in info):
            return bool(info.get("is_success", False))
        if self.success == "goal":
            return bool(terminated)
        return bool(truncated and not terminated)


DEFAULT_TASK = TaskInfo()
"""What an env nobody declared gets: ``gail`` reward, ``auto`` success, joint teleop, no expert."""

# Gymnasium's MuJoCo tasks, by name (every version). The walkers and pendulums end on failure (a
# fall); HalfCheetah, Swimmer, Reacher, Pusher and HumanoidStandup never terminate, so ``gail`` has
# no early-ending bias to fight there, and surviving to the time limit is their only notion of success.
_WALKER = TaskInfo(reward_kind="gail", success="survive", teleop="joint")
GYMNASIUM_MUJOCO_TASKS: dict[str, TaskInfo] = {
    name: _WALKER
    for name in (
        "Ant",
        "HalfCheetah",
        "Hopper",
        "Humanoid",
        "HumanoidStandup",
        "InvertedDoublePendulum",
        "InvertedPendulum",
        "Pusher",
        "Reacher",
        "Swimmer",
        "Walker2d",
    )
}

# Gymnasium's classic control with Discrete actions (the GAIL paper's first tasks, Ho & Ermon 2016):
# CartPole ends on failure (the pole falls) like a walker; Acrobot and MountainCar end on success
# (the goal height is reached), so GAIL wants the per-step cost log D <= 0 (docs/DESIGN.md §8.1).
CLASSIC_CONTROL_TASKS: dict[str, TaskInfo] = {
    "CartPole": _WALKER,
    "Acrobot": TaskInfo(reward_kind="neg", success="goal", teleop="joint"),
    "MountainCar": TaskInfo(reward_kind="neg", success="goal", teleop="joint"),
}

_BY_ID: dict[str, TaskInfo] = {}
_BY_NAME: dict[str, TaskInfo] = {**GYMNASIUM_MUJOCO_TASKS, **CLASSIC_CONTROL_TASKS}


def declare_task(env_id: str, info: TaskInfo) -> None:
    """Declare the properties of ``env_id`` (exactly this id, version included).

    Raises:
        ValueError: ``env_id`` was declared before with different properties.
    """
    old = _BY_ID.get(env_id)
    if old is not None and old != info:
        raise ValueError(f"{env_id} is already declared as {old}")
    _BY_ID[env_id] = info


def task_info(env_id: str) -> TaskInfo:
    """The declared properties of ``env_id``, else those of its name (any version), else :data:`DEFAULT_TASK`.

    Args:
        env_id: a Gymnasium id, e.g. ``"gail_robot/ArmPush-v0"`` or ``"Hopper-v4"``.
    """
    # The project's tasks are declared already: importing this module ran gail_robot/envs/__init__.py.
    if env_id in _BY_ID:
        return _BY_ID[env_id]
    try:
        namespace, name, _ = parse_env_id(env_id)
    except Exception:  # not a well-formed id: nothing declared for it
        return DEFAULT_TASK
    key = f"{namespace}/{name}" if namespace else name
    return _BY_NAME.get(key, DEFAULT_TASK)


def declared_tasks() -> dict[str, TaskInfo]:
    """All tasks declared by exact id (a copy)."""
    return dict(_BY_ID)


__all__ = [
    "CLASSIC_CONTROL_TASKS",
    "DEFAULT_TASK",
    "GYMNASIUM_MUJOCO_TASKS",
    "TaskInfo",
    "declare_task",
    "declared_tasks",
    "task_info",
]
