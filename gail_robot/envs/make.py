"""Single-env construction: ``gymnasium.make`` + flat observations + normalised actions.

The action spaces the project acts in: a continuous ``Box`` (a float vector, normalised to
``[-1, 1]``) or ``Discrete(n)`` (int64 indices ``0 .. n - 1``, passed through unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from gail_robot.envs.wrappers import NormalizedActions
from gail_robot.errors import UserError


def ensure_registered(env_id: str) -> None:
    """Register the project's own tasks (``import gail_robot.envs``) and check ``env_id`` exists."""
    import gail_robot.envs  # noqa: F401  (registers gail_robot/Arm* tasks where available)

    if env_id not in gym.registry:
        close = [k for k in gym.registry if env_id.split("-")[0].split("/")[-1].lower() in k.lower()]
        hint = f" (did you mean {', '.join(sorted(close)[:4])}?)" if close else ""
        raise UserError(f"unknown environment '{env_id}'{hint}")


def make_env(
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    *,
    render_mode: str | None = None,
    normalize_actions: bool = True,
) -> gym.Env:
    """Build one env with flat Box observations and (by default) ``[-1, 1]`` actions.

    Args:
        env_id: Gymnasium id, e.g. ``"Hopper-v5"`` or ``"gail_robot/ArmReach-v0"``.
        env_kwargs: keyword arguments for ``gymnasium.make``.
        render_mode: e.g. ``"rgb_array"`` for videos.
        normalize_actions: wrap with :class:`NormalizedActions`.

    Raises:
        UserError: unknown env id, bad keyword arguments, or an unsupported observation or action space.
    """
    ensure_registered(env_id)
    try:
        extra: dict[str, Any] = {"render_mode": render_mode} if render_mode is not None else {}
        env = gym.make(env_id, **extra, **(env_kwargs or {}))
    except TypeError as exc:
        raise UserError(f"bad env_kwargs for {env_id}: {exc}") from exc
    if render_mode == "rgb_array":
        follow_robot(env)
    if isinstance(env.observation_space, gym.spaces.Dict):
        # Flattened in key order, matching DemoDataset.transitions() (docs/DESIGN.md §3).
        env = gym.wrappers.FlattenObservation(env)
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        raise UserError(f"{env_id}: only flat Box (or Dict) observation spaces are supported")
    check_action_space(env_id, env.action_space)
    if normalize_actions and isinstance(env.action_space, gym.spaces.Box):
        env = NormalizedActions(env)
    return env


#: what :func:`check_action_space` accepts, for its one-line refusals
SUPPORTED_ACTIONS = "a continuous Box (a float vector) or Discrete(n)"


def check_action_space(env_id: str, space: gym.Space[Any]) -> None:
    """Refuse action spaces the project cannot act in: only a 1-D float ``Box`` or ``Discrete(n)``.

    Raises:
        UserError: one line naming the space and what is supported (MultiDiscrete, MultiBinary,
            Dict, Tuple, image or integer Box action spaces, a ``Discrete`` with ``start != 0`` or
            fewer than 2 actions).
    """
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        if np.issubdtype(space.dtype, np.floating):
            return
    if isinstance(space, gym.spaces.Discrete) and int(space.start) == 0 and int(space.n) >= 2:
        return
    raise UserError(f"{env_id} has action space {space}; supported action spaces: {SUPPORTED_ACTIONS}")


@dataclass(frozen=True)
class PolicyActions:
    """What a policy for an env outputs, read off the env (see :func:`policy_actions`).

    Attributes:
        low: ``(act_dim,) float32`` env action bounds of a Box; ``(0,)`` for ``Discrete``.
        high: ``(act_dim,) float32``; ``(0,)`` for ``Discrete``.
        n_actions: ``n`` of a ``Discrete(n)`` space; 0 for a Box.
    """

    low: np.ndarray
    high: np.ndarray
    n_actions: int = 0

    @property
    def discrete(self) -> bool:
        return self.n_actions > 0

    @property
    def act_dim(self) -> int:
        """Continuous action dimensions (0 for ``Discrete``)."""
        return int(self.low.shape[0])


def policy_actions(env: gym.Env[Any, Any]) -> PolicyActions:
    """The :class:`PolicyActions` of an env built by :func:`make_env` (normalised or not)."""
    if isinstance(env, NormalizedActions):
        return PolicyActions(env.low.copy(), env.high.copy())
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        return PolicyActions(np.zeros(0, np.float32), np.zeros(0, np.float32), int(space.n))
    assert isinstance(space, gym.spaces.Box)
    return PolicyActions(space.low.astype(np.float32), space.high.astype(np.float32))


def follow_robot(env: gym.Env[Any, Any]) -> None:
    """Render from the model's ``track`` camera when the env would use its free camera.

    Gymnasium (1.x) renders the locomotion tasks from a free camera that stays where the robot
    started, so a walker leaves the video within seconds; their models all have a ``track``
    camera that follows the body. Envs given a camera (the arm tasks, or ``camera_name``) keep it.
    """
    import mujoco

    renderer = getattr(env.unwrapped, "mujoco_renderer", None)
    if renderer is None or getattr(renderer, "camera_id", None) != -1:
        return
    track = mujoco.mj_name2id(renderer.model, mujoco.mjtObj.mjOBJ_CAMERA, "track")
    if track >= 0:
        renderer.camera_id = track
