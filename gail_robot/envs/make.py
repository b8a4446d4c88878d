"""Single-env construction: ``gymnasium.make`` + flat observations + normalised actions."""

from __future__ import annotations

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
    if normalize_actions:
        env = NormalizedActions(env)
    return env


def check_action_space(env_id: str, space: gym.Space[Any]) -> None:
    """Refuse action spaces the project cannot act in (only continuous Box actions, for now).

    Raises:
        UserError: one line naming the space and what is supported.
    """
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        if np.issubdtype(space.dtype, np.floating):
            return
    raise UserError(
        f"{env_id} has action space {space}; only continuous Box action spaces (a float vector) "
        "are supported (discrete and other action spaces are not, yet)"
    )


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
