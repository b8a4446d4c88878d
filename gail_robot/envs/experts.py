"""Scripted experts for the arm tasks: small state machines that read only the observation.

Contract (``gail-robot record --device scripted`` and the data tools use it):

* :func:`has_scripted_expert` tells whether an env id has one (a task declares its expert where it is
  registered: ``TaskInfo.expert``, docs/DESIGN.md §6);
* :func:`make_expert` returns an object with ``reset()`` (call it at every episode start) and
  ``__call__(obs) -> action`` (``(4,) float32`` in ``[-1, 1]``, the env's own units).

The experts read nothing but the observation (layout in :mod:`gail_robot.envs.arm`), so they also run
on recorded observations. They steer the controller's Cartesian target (``ee_target`` in the
observation) toward waypoints: the action is the waypoint offset in units of
:data:`~gail_robot.envs.arm.ACTION_SCALE`, scaled down (direction kept) to at most ``speed`` per axis.

Noise: ``noise`` is the standard deviation of Gaussian noise added to every action component before
clipping to ``[-1, 1]`` (0.1 moves the controller target by 3 mm rms per step). :data:`DEMO_NOISE`
(0.1) is the level used for demos: every task still succeeds in at least 95 % of episodes with it, with
or without termination on success (see the tests and the README for measured rates).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from gail_robot.envs.arm import ACTION_SCALE, CUBE_HALF_SIZE, OBS_DIM, OBS_SLICES, TABLE_Z
from gail_robot.envs.tasks import declared_tasks, task_info
from gail_robot.errors import UserError

DEMO_NOISE = 0.1
"""Default action-noise standard deviation for recording demos."""

OPEN, CLOSE = -1.0, 1.0


class Expert(Protocol):
    """What :func:`make_expert` returns."""

    def reset(self) -> None:
        """Forget the episode in progress (call after every ``env.reset``)."""

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """``(4,) float32`` action for one ``(49,)`` observation."""
        ...


def expert_env_ids() -> list[str]:
    """The env ids whose task declares a scripted expert, e.g. ``["gail_robot/ArmReach-v0", ...]``."""
    return [env_id for env_id, info in declared_tasks().items() if info.expert is not None]


def has_scripted_expert(env_id: str) -> bool:
    """Whether :func:`make_expert` supports ``env_id`` (e.g. ``"gail_robot/ArmPush-v0"``)."""
    return task_info(env_id).expert is not None


def _env_id_of(env: Any) -> str | None:
    """The Gymnasium id of ``env``: its spec's, else the id registered with its class as entry point."""
    for candidate in (env, getattr(env, "unwrapped", env)):
        spec = getattr(candidate, "spec", None)
        if spec is not None:
            return str(spec.id)
    base_type = type(getattr(env, "unwrapped", env))
    entry_point = f"{base_type.__module__}:{base_type.__qualname__}"
    for env_id, spec in gym.registry.items():
        if spec.entry_point == entry_point:
            return env_id
    return None


def make_expert(env: Any, noise: float = 0.0, seed: int | None = None) -> Expert:
    """The scripted expert of ``env``'s task (a Gymnasium env, wrapped or not).

    Args:
        env: an env whose task declares an expert (see :func:`expert_env_ids`); only its id is used.
        noise: standard deviation of the Gaussian action noise (0 for none).
        seed: seed of the noise RNG.

    Raises:
        UserError: the env has no scripted expert, or ``noise`` is negative or not finite.
    """
    if not (np.isfinite(noise) and noise >= 0):
        raise UserError(f"expert noise must be a non-negative number, got {noise!r}")
    env_id = _env_id_of(env)
    entry_point = task_info(env_id).expert if env_id is not None else None
    if entry_point is None:
        name = env_id if env_id is not None else type(getattr(env, "unwrapped", env)).__name__
        raise UserError(
            f"no scripted expert for {name}; scripted experts exist for {', '.join(expert_env_ids())}"
        )
    module_name, _, class_name = entry_point.partition(":")
    expert_type = getattr(importlib.import_module(module_name), class_name)
    expert: Expert = expert_type(noise=noise, seed=seed)
    return expert


class _ScriptedExpert:
    """Shared parts: observation checks, waypoint steering and action noise."""

    def __init__(self, noise: float = 0.0, seed: int | None = None) -> None:
        self.noise = float(noise)
        self._rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        """Forget the episode in progress."""

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """One action ``(4,) float32`` for the observation ``(49,)``."""
        obs = np.asarray(obs, dtype=np.float64)
        if obs.shape != (OBS_DIM,):
            raise ValueError(f"expected an observation of shape ({OBS_DIM},), got {obs.shape}")
        action = self._act(obs)
        if self.noise > 0:
            action = action + self._rng.normal(0.0, self.noise, size=4)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _act(self, obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def _steer(obs: np.ndarray, waypoint: np.ndarray, grip: float, speed: float = 1.0) -> np.ndarray:
        """Action moving the controller target to ``waypoint`` (at most ``speed`` per axis)."""
        move = (waypoint - obs[OBS_SLICES["ee_target"]]) / ACTION_SCALE
        largest = float(np.abs(move).max())
        if largest > speed:
            move *= speed / largest
        return np.array([move[0], move[1], move[2], grip])


class ReachExpert(_ScriptedExpert):
    """Straight to the goal, gripper open."""

    def _act(self, obs: np.ndarray) -> np.ndarray:
        return self._steer(obs, obs[OBS_SLICES["goal_pos"]], OPEN)


class PushExpert(_ScriptedExpert):
    """Go behind the cube (seen from the goal) at a safe height, lower, push it along the line to the goal.

    Phases: ``approach`` (rise, travel above the pre-push point, descend) and ``push``; pushing falls
    back to ``approach`` when the fingers are no longer behind the cube (it turned or slid sideways).
    """

    PUSH_Z = TABLE_Z + 0.02  # TCP height while pushing: finger tips 11 mm above the table
    SAFE_Z = TABLE_Z + 0.09  # travel height: finger tips clear the cube's top
    STANDOFF = 0.075  # pre-push point distance behind the cube centre
    CONTACT = 0.035  # TCP-to-cube-centre distance aimed at while pushing (slightly inside contact)
    DONE = 0.012  # cube-to-goal distance at which the expert stops pushing

    def reset(self) -> None:
        self.phase = "approach"

    def _act(self, obs: np.ndarray) -> np.ndarray:
        ee = obs[OBS_SLICES["ee_pos"]]
        cube = obs[OBS_SLICES["cube_pos"]]
        to_goal = obs[OBS_SLICES["goal_rel_cube"]][:2]
        distance = float(np.linalg.norm(to_goal))
        if distance < self.DONE:
            return self._steer(obs, obs[OBS_SLICES["ee_target"]], CLOSE)
        direction = to_goal / distance
        rel = ee[:2] - cube[:2]
        along = float(rel @ direction)
        lateral = float(np.linalg.norm(rel - along * direction))

        if self.phase == "push" and (lateral > 0.025 or along > -0.02 or ee[2] > self.PUSH_Z + 0.02):
            self.phase = "approach"
        if self.phase == "push":
            # Slow down near the goal: a fast-pushed cube slides on after the fingers stop.
            ahead = cube[:2] + direction * (min(distance, 0.03) - self.CONTACT)
            speed = float(np.clip(distance / 0.1, 0.2, 0.6))
            return self._steer(obs, np.array([ahead[0], ahead[1], self.PUSH_Z]), CLOSE, speed=speed)

        pre_push = cube[:2] - direction * self.STANDOFF
        horizontal_gap = float(np.linalg.norm(ee[:2] - pre_push))
        if horizontal_gap > 0.015:
            if ee[2] < self.SAFE_Z - 0.015:  # rise before travelling so the fingers miss the cube
                waypoint = np.array([ee[0], ee[1], self.SAFE_Z])
            else:
                waypoint = np.array([pre_push[0], pre_push[1], self.SAFE_Z])
            return self._steer(obs, waypoint, CLOSE)
        if ee[2] > self.PUSH_Z + 0.008:
            return self._steer(obs, np.array([pre_push[0], pre_push[1], self.PUSH_Z]), CLOSE)
        self.phase = "push"
        return self._act(obs)


class PickPlaceExpert(_ScriptedExpert):
    """Approach above the cube, descend, grasp, lift, carry, lower to the goal; release on table goals.

    Phases: ``approach`` -> ``descend`` -> ``grasp`` -> ``carry`` -> (``release`` for goals on the table).
    A cube lost on the way sends it back to ``approach``.
    """

    HOVER = 0.07  # approach height above the cube centre
    CARRY_Z = TABLE_Z + CUBE_HALF_SIZE + 0.08  # lowest cube height while travelling
    GRASP_STEPS = 3  # steps to close the fingers before lifting
    AT_GOAL = 0.01
    DROP = 0.008  # release height of the cube above a table goal

    def reset(self) -> None:
        self.phase = "approach"
        self.timer = 0
        self.release_xy = np.zeros(2)

    def _act(self, obs: np.ndarray) -> np.ndarray:
        ee = obs[OBS_SLICES["ee_pos"]]
        cube = obs[OBS_SLICES["cube_pos"]]
        goal = obs[OBS_SLICES["goal_pos"]]
        opening = float(obs[OBS_SLICES["gripper_opening"]][0])
        cube_offset = cube - ee
        held = float(np.linalg.norm(cube_offset)) < 0.02

        if self.phase in ("grasp", "carry") and (
            not held or (self.timer >= self.GRASP_STEPS and opening < 2 * CUBE_HALF_SIZE - 0.01)
        ):
            self.phase, self.timer = "approach", 0  # dropped, or closed on nothing

        if self.phase == "approach":
            horizontal_gap = float(np.linalg.norm(cube[:2] - ee[:2]))
            if horizontal_gap > 0.008:
                if ee[2] < cube[2] + 0.04 and horizontal_gap > 0.02:  # rise first: do not sweep the cube
                    return self._steer(obs, np.array([ee[0], ee[1], cube[2] + self.HOVER]), OPEN)
                return self._steer(obs, cube + np.array([0.0, 0.0, self.HOVER]), OPEN)
            self.phase = "descend"
        if self.phase == "descend":
            horizontal_gap = float(np.linalg.norm(cube_offset[:2]))
            if horizontal_gap > 0.02:  # pushed off line (noise): hover again rather than hit the cube
                self.phase = "approach"
                return self._act(obs)
            # Close enough: centred within 1 cm between the pads (1.5 cm clearance each side when open).
            if horizontal_gap > 0.01 or abs(float(cube_offset[2])) > 0.008:
                height = cube[2] if horizontal_gap < 0.01 else ee[2]  # re-centre before going lower
                return self._steer(obs, np.array([cube[0], cube[1], height]), OPEN, speed=0.8)
            self.phase, self.timer = "grasp", 0
        if self.phase == "grasp":
            self.timer += 1
            if self.timer <= self.GRASP_STEPS:
                return self._steer(obs, obs[OBS_SLICES["ee_target"]], CLOSE)
            self.phase = "carry"
        if self.phase == "carry":
            on_table = goal[2] < TABLE_Z + CUBE_HALF_SIZE + 0.01
            # Table goals: stop 8 mm above the table and let go there; pressing the pinched cube into
            # the table would make it jump when the fingers open.
            place_at = goal + np.array([0.0, 0.0, self.DROP if on_table else 0.0])
            to_goal = place_at - cube
            if float(np.linalg.norm(to_goal)) < self.AT_GOAL:
                if on_table:
                    self.phase, self.timer = "release", 0
                    self.release_xy = ee[:2].copy()
                else:  # a goal in the air: hold the cube there
                    return self._steer(obs, obs[OBS_SLICES["ee_target"]], CLOSE)
            else:
                carry_z = max(place_at[2], self.CARRY_Z)
                if float(np.linalg.norm(to_goal[:2])) > 0.02:
                    if cube[2] < carry_z - 0.02:  # lift before travelling
                        cube_waypoint = np.array([cube[0], cube[1], carry_z])
                    else:
                        cube_waypoint = np.array([place_at[0], place_at[1], carry_z])
                else:
                    cube_waypoint = place_at
                return self._steer(obs, cube_waypoint - cube_offset, CLOSE)
        # release: open in place, then straight up (back to where it let go, so the open fingers do not
        # sweep the cube when the actions are noisy)
        self.timer += 1
        if self.timer <= 2:
            return self._steer(obs, obs[OBS_SLICES["ee_target"]], OPEN)
        return self._steer(obs, np.array([*self.release_xy, cube[2] + 0.12]), OPEN)
