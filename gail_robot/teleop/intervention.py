"""Interventions: a policy drives, a person (or a simulated one) takes over and hands back.

``gail-robot record --policy RUN --intervene --device D`` wraps device ``D`` (the *person*) and the
policy into one :class:`InterventionDevice`. Every step the policy proposes an action and the person's
device computes theirs; a *gate* decides who drives. The recorder stores the executed action
(``actions``), the policy's proposal (``policy_actions``) and who drove (``interventions``), the
datasets of docs/DESIGN.md §3 that HG-DAgger (Kelly et al. 2019) and IWR (Mandlekar et al. 2020)
learn from.

Gates:

* a person (:class:`PersonGate`): the device says whether they want to drive: keyboard, the T (or
  Home) key toggles takeover; gamepad, a trigger is held; spacemouse, the puck moves beyond its dead
  zone (see :mod:`gail_robot.teleop.devices`);
* a simulated person (:class:`ExpertGate`, ``--device scripted``): the task's scripted expert watches
  and takes over by the documented rule below, deterministically for given seeds.

:class:`ExpertGate`'s rule, evaluated before each step while the policy drives:

1. **disagreement**: take over when ``||a_policy - a_expert||_2 > threshold``, both in ``[-1, 1]``
   units (the arm tasks' actions are already; other Box actions are divided by their half range);
2. **stall** (the task is visibly failing): take over when the task's progress distance has not
   dropped by at least :data:`PROGRESS_EPS` (5 mm) below its best value for ``stall_steps``
   consecutive steps. The progress distance is ``||tcp - goal||`` for reach and
   ``||tcp - cube|| + ||cube - goal||`` for push and pick-and-place (it falls while the gripper
   approaches the cube and while the cube moves toward the goal);
3. once in control, the expert drives ``handback_steps`` steps, then hands back; the stall window
   restarts at the hand-back.
"""

from __future__ import annotations

from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from gail_robot.errors import UserError
from gail_robot.teleop.devices import Device, Event, ScriptedDevice

#: a progress-distance drop smaller than this (metres) is not progress
PROGRESS_EPS = 0.005
#: the person devices that can take over (``record --intervene --device ...``)
INTERVENE_DEVICES = ("keyboard", "gamepad", "spacemouse", "scripted")


class Gate(Protocol):
    """Decides, before each step, whether the person drives."""

    def reset(self, obs: Any) -> None:
        """A new episode starts (the policy drives first)."""

    def person_drives(self, obs: Any, policy_action: np.ndarray, person_action: np.ndarray) -> bool:
        """Whether the person drives this step."""
        ...


class PersonGate:
    """A real person: the device's own takeover input (``device.takeover()``) decides."""

    def __init__(self, device: Any) -> None:
        if not callable(getattr(device, "takeover", None)):
            raise UserError(f"the {device.source} device cannot take over from a policy")
        self.device = device

    def reset(self, obs: Any) -> None:
        """Nothing to forget: the device hands back on its own reset."""

    def person_drives(self, obs: Any, policy_action: np.ndarray, person_action: np.ndarray) -> bool:
        """The device's takeover input."""
        return bool(self.device.takeover())


def arm_progress(task: str, obs: np.ndarray) -> float:
    """The progress distance of an arm task (metres; smaller is closer to done), see the module doc."""
    from gail_robot.envs.arm import OBS_SLICES

    obs = np.asarray(obs, dtype=np.float64)
    ee, cube, goal = obs[OBS_SLICES["ee_pos"]], obs[OBS_SLICES["cube_pos"]], obs[OBS_SLICES["goal_pos"]]
    if task == "reach":
        return float(np.linalg.norm(goal - ee))
    return float(np.linalg.norm(cube - ee) + np.linalg.norm(goal - cube))


class ExpertGate:
    """The simulated person's rule (module doc): disagreement or stall takes over for ``handback_steps``.

    Args:
        threshold: largest tolerated ``||a_policy - a_expert||_2`` in ``[-1, 1]`` units (> 0).
        stall_steps: steps without progress that count as failing (>= 1; 0 disables the stall rule).
        handback_steps: steps the expert drives per takeover (>= 1).
        progress: the progress distance of an observation, or None (no stall rule).
        half_range: per-dimension half range of the action space (actions are divided by it).
    """

    def __init__(
        self,
        threshold: float,
        stall_steps: int,
        handback_steps: int,
        progress: Any = None,
        half_range: np.ndarray | None = None,
    ) -> None:
        if not (np.isfinite(threshold) and threshold > 0):
            raise UserError(f"--takeover-threshold must be a positive number, got {threshold}")
        if stall_steps < 0:
            raise UserError(f"--stall-steps must be >= 0, got {stall_steps}")
        if handback_steps < 1:
            raise UserError(f"--handback-steps must be >= 1, got {handback_steps}")
        self.threshold = float(threshold)
        self.stall_steps = int(stall_steps)
        self.handback_steps = int(handback_steps)
        self.progress = progress
        self.half_range = None if half_range is None else np.asarray(half_range, dtype=np.float64)
        self.reset(None)

    def reset(self, obs: Any) -> None:
        """The policy drives; the stall window starts now."""
        self.remaining = 0
        self.best = float("inf")
        self.stalled = 0

    def _restart_window(self, obs: Any) -> None:
        self.best = self.progress(obs) if self.progress is not None else float("inf")
        self.stalled = 0

    def person_drives(self, obs: Any, policy_action: np.ndarray, person_action: np.ndarray) -> bool:
        """Apply the rule for one step (module doc)."""
        if self.remaining > 0:
            self.remaining -= 1
            if self.remaining == 0:
                self._restart_window(obs)  # hands back after this step
            return True
        take = False
        if self.progress is not None and self.stall_steps > 0:
            distance = self.progress(obs)
            if distance < self.best - PROGRESS_EPS or not np.isfinite(self.best):
                self.best, self.stalled = distance, 0
            else:
                self.stalled += 1
                take = self.stalled >= self.stall_steps
        gap = np.asarray(policy_action, dtype=np.float64) - np.asarray(person_action, dtype=np.float64)
        if self.half_range is not None:
            gap = gap / self.half_range
        if float(np.linalg.norm(gap)) > self.threshold:
            take = True
        if not take:
            return False
        self.remaining = self.handback_steps - 1
        if self.remaining == 0:
            self._restart_window(obs)
        return True


class InterventionDevice:
    """A policy that drives and a person device that can take over (the recorder's device).

    Attributes:
        source: ``"intervention:<device>"`` (stored in each demo's ``source``).
        intervention: True: the recorder stores ``policy_actions`` and ``interventions``.
        last_policy_action: the policy's proposal at the last :meth:`act`.
        last_intervention: whether the person drove at the last :meth:`act`.
    """

    intervention = True

    def __init__(self, person: Device, policy: Any, gate: Gate, device_name: str) -> None:
        self.person = person
        self.policy = policy
        self.gate = gate
        self.source = f"intervention:{device_name}"
        self.interactive = bool(person.interactive)
        self.last_policy_action: np.ndarray = np.zeros(0, np.float32)
        self.last_intervention = False
        self.takeovers = 0  # in the episode in progress
        self.person_steps = 0

    def reset(self, obs: Any) -> None:
        """New episode: the policy drives."""
        self.person.reset(obs)
        self.gate.reset(obs)
        self.last_intervention = False
        self.takeovers = self.person_steps = 0

    def act(self, obs: Any) -> np.ndarray:
        """The executed action: the person's while they drive, the policy's otherwise."""
        proposed = np.asarray(self.policy.act(np.asarray(obs, dtype=np.float32)), dtype=np.float32)
        own = self.person.act(obs)
        drives = self.gate.person_drives(obs, proposed, own)
        if drives and not self.last_intervention:
            self.takeovers += 1
            sync = getattr(self.person, "take_over_from", None)
            if sync is not None:  # e.g. the teleop gripper keeps the policy's state
                sync(proposed)
                own = self.person.act(obs)
        self.person_steps += int(drives)
        self.last_policy_action = proposed
        self.last_intervention = drives
        return np.asarray(own, dtype=np.float32) if drives else proposed

    def poll_events(self) -> set[Event]:
        """The person's events (save, discard, quit, disconnect)."""
        return self.person.poll_events()

    def sync(self, env: gym.Env[Any, Any]) -> None:
        """Redraw the person's viewer."""
        self.person.sync(env)

    def describe(self) -> str:
        """Status line: who drives, and the takeovers of this episode."""
        who = "PERSON" if self.last_intervention else "policy"
        extra = getattr(self.person, "describe", lambda: "")()
        return f"driving: {who}  takeovers {self.takeovers} ({self.person_steps} steps)  {extra}".rstrip()

    def close(self) -> None:
        """Close the person's device."""
        self.person.close()


def load_driving_policy(path: str, env: gym.Env[Any, Any]) -> Any:
    """The policy that drives (``policy_io.load_policy``), checked against ``env``: one line when it
    was trained on another env or its observation / action sizes differ."""
    from gail_robot.policy_io import load_policy

    bundle = load_policy(path)
    env_id = env.spec.id if env.spec is not None else None
    if env_id is not None and bundle.env_id and bundle.env_id != env_id:
        raise UserError(f"{path}: the policy was trained on '{bundle.env_id}', not '{env_id}'")
    obs_shape = getattr(env.observation_space, "shape", None)
    act_shape = getattr(env.action_space, "shape", None)
    if bundle.discrete or obs_shape != (bundle.obs_dim,) or act_shape != (bundle.act_dim,):
        raise UserError(
            f"{path}: the policy expects obs ({bundle.obs_dim},) / actions {bundle.describe_actions()}, "
            f"the env has {obs_shape} / {env.action_space}"
        )
    return bundle


def make_intervention_device(
    device: str,
    env: gym.Env[Any, Any],
    policy: Any,
    person: Device,
    *,
    threshold: float = 0.5,
    stall_steps: int = 20,
    handback_steps: int = 10,
) -> InterventionDevice:
    """Wrap ``person`` (made by ``make_device(device, ...)``) and ``policy`` with the device's gate.

    ``threshold``, ``stall_steps`` and ``handback_steps`` configure :class:`ExpertGate` (``scripted``).
    """
    gate: Gate
    if device == "scripted":
        if not isinstance(person, ScriptedDevice):
            raise UserError("--device scripted --intervene needs the task's scripted expert")
        task = getattr(env.unwrapped, "task", None)
        progress = (lambda obs: arm_progress(str(task), obs)) if task is not None else None
        space = env.action_space
        half = None
        if isinstance(space, gym.spaces.Box):
            low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
            finite = np.isfinite(low) & np.isfinite(high)
            half = np.where(finite, (high - low) / 2, 1.0)
        gate = ExpertGate(threshold, stall_steps, handback_steps, progress, half)
    elif device in INTERVENE_DEVICES:
        if device == "gamepad":
            stick = getattr(person, "stick", None)
            if stick is not None and stick.get_numaxes() <= min(getattr(person, "TRIGGER_AXES", (5, 2))):
                raise UserError("--intervene with a gamepad needs trigger axes; this pad has none")
        gate = PersonGate(person)
    else:
        raise UserError(
            f"--intervene takes over with a person's device: --device {'|'.join(INTERVENE_DEVICES)}, "
            f"not {device}"
        )
    return InterventionDevice(person, policy, gate, device)
