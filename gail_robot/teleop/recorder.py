"""The recording loop: a device acts in an env, a :class:`~gail_robot.data.DemoWriter` stores episodes."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import gymnasium as gym
import numpy as np

from gail_robot.data.writer import DemoWriter
from gail_robot.envs.physics import get_physics_state, has_physics, model_xml
from gail_robot.envs.tasks import task_info
from gail_robot.errors import UserError
from gail_robot.teleop.devices import Device, Event


@dataclass
class RecordStats:
    """What a recording session did.

    Attributes:
        saved: names of the demos saved (on disk, confirmed by the writer's sink).
        discarded: episodes thrown away by the user.
        rejected: episodes dropped by ``only_success`` or ``min_return``.
        steps: env steps taken (all episodes, kept or not).
        saved_steps: steps in the saved demos.
        quit: the user quit before the requested number of episodes.
    """

    saved: list[str] = field(default_factory=list)
    discarded: int = 0
    rejected: int = 0
    steps: int = 0
    saved_steps: int = 0
    quit: bool = False


class StatusLine:
    """One self-overwriting line on a terminal (plain lines, rate-limited, elsewhere)."""

    def __init__(self, stream: TextIO | None = None, interval: float = 0.1) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self._last = 0.0

    def update(self, text: str, force: bool = False) -> None:
        """Show ``text`` (at most every ``interval`` s unless ``force``)."""
        now = time.monotonic()
        if not self.tty or (not force and now - self._last < self.interval):
            return
        self._last = now
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()

    def message(self, text: str) -> None:
        """A permanent line (clears the status line first)."""
        if self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()


def record(
    env: gym.Env[Any, Any],
    device: Device,
    writer: DemoWriter,
    *,
    episodes: int,
    seed: int | None = 0,
    only_success: bool = False,
    min_return: float | None = None,
    max_steps: int | None = None,
    max_attempts: int | None = None,
    realtime: bool | None = None,
    status: StatusLine | None = None,
    on_disconnect: str = "keep",
) -> RecordStats:
    """Record until ``episodes`` demos are saved, the user quits or ``max_attempts`` run out.

    Episodes end when the env terminates or truncates (saved automatically), when the user saves
    (stored as truncated at the current step), at ``max_steps`` (truncated), or when the user
    discards them. Episode ``i`` resets with seed ``seed + i`` (counting every attempt).

    A device with ``intervention = True`` (:class:`~gail_robot.teleop.intervention.InterventionDevice`)
    also gives ``last_policy_action`` and ``last_intervention`` after each ``act``: they are stored
    as ``policy_actions`` and ``interventions`` (docs/DESIGN.md §3).

    When the device reports :attr:`Event.DISCONNECT`, the episode in progress is saved as cut short
    (``on_disconnect="keep"``, when it has steps) or dropped (``"discard"``), every finished episode
    is saved, and recording stops with a one-line UserError.

    Raises:
        UserError: the device produced a non-finite action (the episode in progress is dropped),
            or an episode could not be saved (recording stops at once; the message names what is
            saved and what is not). Every episode saved before stays in the file.
    """
    if episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {episodes}")
    if on_disconnect not in ("keep", "discard"):
        raise UserError(f"--on-disconnect must be keep or discard, got {on_disconnect!r}")
    status = status if status is not None else StatusLine()
    stats = RecordStats()
    # demos handed to the writer and not yet reported: name -> (steps, the line to print when saved)
    waiting: dict[str, tuple[int, str]] = {}

    reported = len(writer.saved)

    def report() -> None:
        """Print the demos the writer has saved since the last call (saved = confirmed on disk)."""
        nonlocal reported
        for name in writer.saved[reported:]:
            if name in waiting:
                steps, line = waiting.pop(name)
                stats.saved.append(name)
                stats.saved_steps += steps
                status.message(f"saved {name}: {line}")
        reported = len(writer.saved)

    try:
        _loop(
            env,
            device,
            writer,
            stats,
            status,
            report,
            waiting,
            episodes=episodes,
            seed=seed,
            only_success=only_success,
            min_return=min_return,
            max_steps=max_steps,
            max_attempts=max_attempts,
            realtime=realtime,
            on_disconnect=on_disconnect,
        )
        writer.flush()
        report()
    except UserError:
        report()  # what was saved before the failure
        raise
    return stats


def _loop(
    env: gym.Env[Any, Any],
    device: Device,
    writer: DemoWriter,
    stats: RecordStats,
    status: StatusLine,
    report: Callable[[], None],
    waiting: dict[str, tuple[int, str]],
    *,
    episodes: int,
    seed: int | None,
    only_success: bool,
    min_return: float | None,
    max_steps: int | None,
    max_attempts: int | None,
    realtime: bool | None,
    on_disconnect: str = "keep",
) -> None:
    """The episodes of :func:`record` (same arguments); finished ones go into ``waiting``."""
    pace = device.interactive if realtime is None else realtime
    dt = float(getattr(env.unwrapped, "dt", 0.0))
    # envs without MuJoCo physics (classic control) store empty states: not replayable from states
    physics = has_physics(env)
    xml = model_xml(env) if physics else None
    no_state = np.zeros(0, np.float64)
    attempts = queued = 0
    limit = max_attempts if max_attempts is not None else 10 * episodes + 10
    describe = getattr(device, "describe", lambda: "")
    intervention = bool(getattr(device, "intervention", False))
    # what success means is the task's declaration (docs/DESIGN.md §6)
    task = task_info(env.spec.id if env.spec is not None else "")
    next_poll = 0.0
    while queued < episodes and attempts < limit:
        ep_seed = None if seed is None else seed + attempts
        attempts += 1
        obs, info = env.reset(seed=ep_seed)
        device.reset(obs)
        writer.start_episode(seed=ep_seed, source=device.source, model_file=xml, intervention=intervention)
        ep_return, terminated, truncated, outcome = 0.0, False, False, ""
        next_tick = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_poll:  # confirmations of earlier episodes; stops at a failed write
                next_poll = now + 0.05
                writer.poll()
                report()
            events = device.poll_events()
            if Event.DISCONNECT in events:
                success = bool(writer.episode_length) and task.success_from(info, terminated, True)
                _disconnected(env, device, writer, stats, report, waiting, attempts, on_disconnect, success)
            if Event.QUIT in events:
                writer.discard_episode()
                stats.quit = True
                return
            if Event.DISCARD in events:
                outcome = "discard"
                break
            if Event.SAVE in events and writer.episode_length > 0:
                outcome = "save"
                break
            state = get_physics_state(env) if physics else no_state
            action = device.act(obs)
            proposed = device.last_policy_action if intervention else None  # type: ignore[attr-defined]
            if not np.all(np.isfinite(action)) or (
                proposed is not None and not np.all(np.isfinite(proposed))
            ):
                if proposed is not None and np.all(np.isfinite(action)):
                    action = proposed  # name the policy's action in the message
                step = writer.episode_length
                writer.discard_episode()
                writer.flush()
                report()
                raise UserError(
                    f"the {device.source} device produced a non-finite action "
                    f"{np.asarray(action).tolist()} at step {step} of episode {attempts}; "
                    f"that episode was dropped, "
                    f"{len(writer.saved)} saved demos are intact in {writer.path}"
                )
            next_obs, reward, terminated, truncated, info = env.step(action)
            if intervention:
                writer.add_step(
                    obs,
                    action,
                    float(reward),
                    next_obs,
                    terminated,
                    truncated,
                    state,
                    proposed,
                    bool(device.last_intervention),  # type: ignore[attr-defined]
                )
            else:
                writer.add_step(obs, action, float(reward), next_obs, terminated, truncated, state)
            obs = next_obs
            ep_return += float(reward)
            stats.steps += 1
            device.sync(env)
            status.update(
                f"episode {queued + 1}/{episodes}  step {writer.episode_length}  "
                f"return {ep_return:8.2f}  "
                f"success {'yes' if task.success_from(info, terminated, truncated) else 'no'}"
                f"  {describe()}"
            )
            if terminated or truncated:
                outcome = "env"
                break
            if max_steps is not None and writer.episode_length >= max_steps:
                outcome = "save"
                break
            if pace and dt > 0:
                next_tick += dt
                delay = next_tick - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_tick = time.monotonic()  # fell behind: do not try to catch up
        if outcome == "discard":
            writer.discard_episode()
            stats.discarded += 1
            status.message(f"discarded episode {attempts}")
            continue
        success = task.success_from(info, terminated, outcome == "save" or truncated)
        reject = ""
        if only_success and not success:
            reject = "not successful, not kept (--only-success)"
        elif min_return is not None and ep_return < min_return:
            reject = f"return {ep_return:.2f} < {min_return:g}, not kept (--min-return)"
        if reject:
            writer.discard_episode()
            stats.rejected += 1
            status.message(f"episode {attempts}: {reject}")
            continue
        steps = writer.episode_length
        final_state = get_physics_state(env) if physics else no_state
        name = writer.end_episode(success=success, final_state=final_state, cut=outcome == "save")
        queued += 1
        # reported as saved only once the writer's sink confirms it is on disk
        line = f"{steps} steps, return {ep_return:.2f}, success {'yes' if success else 'no'}"
        waiting[name] = (steps, line)


def _disconnected(
    env: gym.Env[Any, Any],
    device: Device,
    writer: DemoWriter,
    stats: RecordStats,
    report: Callable[[], None],
    waiting: dict[str, tuple[int, str]],
    attempt: int,
    on_disconnect: str,
    success: bool,
) -> None:
    """The device went away mid-episode: keep (cut short) or drop the episode, save the rest, stop."""
    steps = writer.episode_length
    kept = ""
    if on_disconnect == "keep" and steps > 0:
        final_state = get_physics_state(env) if has_physics(env) else np.zeros(0, np.float64)
        name = writer.end_episode(success=success, final_state=final_state, cut=True)
        waiting[name] = (steps, f"{steps} steps, cut short by the disconnect")
        kept = f"the {steps} steps of episode {attempt} were kept as {name}"
    else:
        writer.discard_episode()
        kept = f"episode {attempt} ({steps} steps) was discarded"
    writer.flush()
    report()
    stats.quit = True
    raise UserError(
        f"the {device.source} device disconnected; {kept} (--on-disconnect {on_disconnect}); "
        f"{len(writer.saved)} demos of this session are saved in {writer.path}"
    )
