"""Input devices for recording: keyboard (MuJoCo viewer or terminal), gamepad, spacemouse, experts.

Every device maps the observation (and, for people, their input) to one action in the env's own
units and reports events (save / discard / quit). Teleop devices produce a *command* in
``[-1, 1]`` per action dimension that :class:`CommandMapper` turns into an action:

* the project's arm tasks (``gail_robot/Arm*``, action ``[dx, dy, dz, grip]``): Cartesian motion of
  the tool centre point and a gripper toggle;
* any other env ("joint mode"): one action dimension at a time is driven, the others stay at the
  middle of their range; keys / buttons select the dimension.

Keyboard map (viewer window and terminal alike)::

    W / S   or  Up / Down          +x / -x   (joint mode: drive the selected dimension up / down)
    A / D   or  Left / Right       +y / -y   (joint mode: select the previous / next dimension)
    R / F   or  PageUp / PageDown  +z / -z
    Space   or  Insert             toggle the gripper (open <-> closed)
    Enter                          save the episode now (it is stored as truncated)
    Backspace or Delete            discard the episode and start a new one
    Q / Esc                        quit (the episode in progress is discarded)
    T   or  Home                   take over from the policy / hand back (record --intervene)

Keys act for :data:`HOLD_S` seconds after each press; holding a key relies on the keyboard's
auto-repeat, which works both in the viewer (GLFW repeat events) and in a terminal. In the MuJoCo
viewer, letters, Space and Backspace are also the viewer's own shortcuts (visualisation toggles,
pause, reset); the arrow / page / Insert / Delete keys avoid those.
"""

from __future__ import annotations

import contextlib
import enum
import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import gymnasium as gym
import numpy as np

from gail_robot.envs.tasks import task_info
from gail_robot.errors import UserError

#: seconds a key press keeps its axis active (auto-repeat refreshes it while the key is held).
HOLD_S = 0.25


class Event(enum.Enum):
    """What a person asked for, besides moving."""

    SAVE = "save"
    DISCARD = "discard"
    QUIT = "quit"
    #: the device went away (unplugged, read error): the recorder keeps or discards the episode in
    #: progress as ``--on-disconnect`` says and stops
    DISCONNECT = "disconnect"


class Device(Protocol):
    """Something that acts in an env.

    Attributes:
        source: stored in each demo's ``source`` attribute (``"teleop:keyboard"``, ``"scripted"``, ...).
        interactive: a person is in the loop: the recorder paces steps at the control rate.
    """

    source: str
    interactive: bool

    def reset(self, obs: Any) -> None:
        """A new episode starts with observation ``obs``."""

    def act(self, obs: Any) -> np.ndarray:
        """The action for ``obs``, ``(act_dim,)`` in env units."""
        ...

    def poll_events(self) -> set[Event]:
        """Events since the last call."""
        ...

    def sync(self, env: gym.Env[Any, Any]) -> None:
        """Show the new state (viewer devices); a no-op otherwise."""

    def close(self) -> None:
        """Release windows, terminals and hardware."""


def cartesian_teleop(env: gym.Env[Any, Any]) -> bool:
    """Whether the task declares Cartesian ``[dx, dy, dz, grip]`` teleop (docs/DESIGN.md §6).

    An env made without ``gym.make`` (no spec), or whose actions are not 4-dimensional, gets joint mode.
    """
    if env.spec is None:
        return False
    return task_info(env.spec.id).teleop == "cartesian" and getattr(env.action_space, "shape", None) == (4,)


class CommandMapper:
    """Turns teleop input into actions; the state (selected dimension, gripper) lives here.

    Args:
        action_space: the env's Box action space.
        cartesian: arm mode (``[dx, dy, dz, grip]``) instead of joint mode.
        speed: scale of motion commands in ``(0, 1]``.
    """

    def __init__(self, action_space: gym.spaces.Box, cartesian: bool, speed: float = 1.0) -> None:
        if not 0.0 < speed <= 1.0:
            raise UserError(f"--speed must be in (0, 1], got {speed}")
        self.low = np.asarray(action_space.low, dtype=np.float64).reshape(-1)
        self.high = np.asarray(action_space.high, dtype=np.float64).reshape(-1)
        # Unbounded dimensions have no natural scale: treat them as [-1, 1].
        self.low = np.where(np.isfinite(self.low), self.low, -1.0)
        self.high = np.where(np.isfinite(self.high), self.high, 1.0)
        self.cartesian = cartesian
        self.speed = speed
        self.dim = len(self.low)
        self.selected = 0
        self.gripper = -1.0  # arm tasks: -1 open, +1 closed; episodes start open

    def reset(self) -> None:
        """Open the gripper (the arm tasks start with it open)."""
        self.gripper = -1.0

    def toggle_gripper(self) -> None:
        """Open <-> closed."""
        self.gripper = -self.gripper

    def select(self, step: int) -> None:
        """Joint mode: move the selection by ``step`` dimensions (wraps around)."""
        self.selected = (self.selected + step) % self.dim

    def action(self, motion: np.ndarray) -> np.ndarray:
        """Action in env units from a motion command.

        Args:
            motion: ``(3,)`` in ``[-1, 1]``: Cartesian x, y, z (arm mode); joint mode uses ``motion[0]``
                for the selected dimension.
        """
        command = np.zeros(self.dim)
        if self.cartesian:
            command[:3] = np.clip(motion[:3], -1, 1) * self.speed
            command[3] = self.gripper
        else:
            command[self.selected] = float(np.clip(motion[0], -1, 1)) * self.speed
        mid = (self.low + self.high) / 2
        half = (self.high - self.low) / 2
        return (mid + command * half).astype(np.float32)

    def describe(self) -> str:
        """Short state for the status line."""
        if self.cartesian:
            return "gripper " + ("closed" if self.gripper > 0 else "open")
        return f"dim {self.selected}/{self.dim}"


class KeyState:
    """Timed key presses -> motion command and events (shared by the viewer and terminal keyboards)."""

    # key name -> (axis, sign) in Cartesian mode
    MOTION: ClassVar[dict[str, tuple[int, float]]] = {
        "w": (0, 1.0),
        "s": (0, -1.0),
        "a": (1, 1.0),
        "d": (1, -1.0),
        "r": (2, 1.0),
        "f": (2, -1.0),
    }
    # other names of the same keys (arrows and page keys; viewer-friendly, see the module doc)
    ALIASES: ClassVar[dict[str, str]] = {
        "up": "w",
        "down": "s",
        "left": "a",
        "right": "d",
        "pageup": "r",
        "pagedown": "f",
        "insert": "space",
        "delete": "backspace",
        "home": "t",
    }

    def __init__(self, mapper: CommandMapper, clock: Callable[[], float] = time.monotonic) -> None:
        self.mapper = mapper
        self.clock = clock
        self._until = np.zeros(3)
        self._sign = np.zeros(3)
        self._events: set[Event] = set()
        #: record --intervene: the person asked to drive (T / Home toggles it)
        self.takeover = False
        self._lock = threading.Lock()  # the viewer calls key callbacks from its own thread

    def press(self, key: str) -> None:
        """Handle one key press: ``"w"``, ``"space"``, ``"enter"``, ``"backspace"``, ``"q"``, ``"esc"``."""
        now = self.clock()
        key = self.ALIASES.get(key, key)
        with self._lock:
            if key in ("enter",):
                self._events.add(Event.SAVE)
            elif key == "backspace":
                self._events.add(Event.DISCARD)
            elif key in ("q", "esc"):
                self._events.add(Event.QUIT)
            elif key == "space":
                self.mapper.toggle_gripper()
            elif key == "t":
                self.takeover = not self.takeover
            elif key == "disconnect":
                self._events.add(Event.DISCONNECT)
            elif not self.mapper.cartesian and key in ("a", "d"):
                self.mapper.select(-1 if key == "a" else 1)
            elif key in self.MOTION:
                axis, sign = self.MOTION[key]
                if not self.mapper.cartesian:
                    if key not in ("w", "s"):
                        return
                    axis = 0
                self._sign[axis] = sign
                self._until[axis] = now + HOLD_S

    def motion(self) -> np.ndarray:
        """``(3,)`` command of the keys still held."""
        with self._lock:
            return np.where(self._until > self.clock(), self._sign, 0.0)

    def take_events(self) -> set[Event]:
        """Events since the last call."""
        with self._lock:
            events, self._events = self._events, set()
            return events

    def reset(self) -> None:
        """Release all keys and hand back to the policy (a new episode starts)."""
        with self._lock:
            self._until[:] = 0
            self.takeover = False
            self.mapper.reset()


# terminal bytes -> key names (cbreak mode delivers Enter as "\n", Backspace as DEL)
_TERMINAL_KEYS = {
    " ": "space",
    "\n": "enter",
    "\r": "enter",
    "\x7f": "backspace",
    "\x08": "backspace",
    "\x1b": "esc",
}
# ANSI escape sequences after "ESC [" -> key names
_TERMINAL_SEQUENCES = {
    "A": "up",
    "B": "down",
    "C": "right",
    "D": "left",
    "5~": "pageup",
    "6~": "pagedown",
    "2~": "insert",
    "3~": "delete",
    "H": "home",
    "1~": "home",
}


class TerminalKeys:
    """Raw key presses from the controlling terminal, without blocking (``select`` with timeout 0).

    The terminal is switched to cbreak mode (no line buffering, no echo, Ctrl-C still interrupts)
    and restored on :meth:`close`.
    """

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stdin
        try:
            self.fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            raise UserError("keyboard teleop needs a terminal (stdin is not one) or a display") from None
        if not os.isatty(self.fd):
            raise UserError("keyboard teleop needs a terminal (stdin is not one) or a display")
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)

    def read_keys(self) -> list[str]:
        """Keys typed since the last call, as names (``"w"``, ``"space"``, ``"enter"``, ...)."""
        keys: list[str] = []
        while select.select([self.fd], [], [], 0)[0]:
            chunk = os.read(self.fd, 64)
            if not chunk:
                break
            text = chunk.decode(errors="ignore")
            i = 0
            while i < len(text):
                if text.startswith("\x1b[", i):  # arrow / editing key escape sequence
                    end = i + 2
                    while end < len(text) and not (text[end].isalpha() or text[end] == "~"):
                        end += 1
                    name = _TERMINAL_SEQUENCES.get(text[i + 2 : end + 1])
                    if name is not None:
                        keys.append(name)
                    i = end + 1
                    continue
                keys.append(_TERMINAL_KEYS.get(text[i], text[i].lower()))
                i += 1
        return keys

    def close(self) -> None:
        """Restore the terminal."""
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)


# GLFW key codes of the keys we use (letters are their upper-case ASCII codes).
_GLFW_KEYS = {
    32: "space",
    257: "enter",
    335: "enter",
    259: "backspace",
    256: "esc",
    260: "insert",
    261: "delete",
    262: "right",
    263: "left",
    264: "down",
    265: "up",
    266: "pageup",
    267: "pagedown",
    268: "home",
}


def glfw_key_name(keycode: int) -> str | None:
    """Name of a GLFW key code, or None for keys we do not use."""
    if keycode in _GLFW_KEYS:
        return _GLFW_KEYS[keycode]
    if 65 <= keycode <= 90:
        return chr(keycode).lower()
    return None


class _TeleopDevice:
    """What the human-driven devices share: a command mapper, an optional viewer, and the status text."""

    interactive = True
    mapper: CommandMapper
    keys: KeyState
    viewer: Any = None

    def sync(self, env: gym.Env[Any, Any]) -> None:
        """Redraw the viewer when one is open."""
        if self.viewer is not None:
            self.viewer.sync()

    def describe(self) -> str:
        """Status-line text."""
        return self.mapper.describe()

    def takeover(self) -> bool:
        """record --intervene: whether the person asks to drive now (keyboard: T / Home toggled on)."""
        return bool(self.keys.takeover)

    def take_over_from(self, action: np.ndarray) -> None:
        """The person takes over from ``action`` (the policy's last): the gripper stays as it was."""
        if self.mapper.cartesian and np.shape(action) == (4,):
            self.mapper.gripper = 1.0 if float(action[3]) > 0 else -1.0


class KeyboardDevice(_TeleopDevice):
    """Keyboard teleop in the MuJoCo viewer window (with a display) or in the terminal (without).

    Args:
        env: the env being recorded.
        speed: scale of motion commands in ``(0, 1]``.
        use_viewer: force (True) or forbid (False) the viewer; default: viewer when ``DISPLAY`` is set.
    """

    source = "teleop:keyboard"

    def __init__(self, env: gym.Env[Any, Any], speed: float = 1.0, use_viewer: bool | None = None) -> None:
        self.mapper = CommandMapper(env.action_space, cartesian_teleop(env), speed)  # type: ignore[arg-type]
        self.keys = KeyState(self.mapper)
        self.viewer: PassiveViewer | None = None
        self.terminal: TerminalKeys | None = None
        if use_viewer is None:
            use_viewer = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
        if use_viewer:
            self.viewer = open_viewer(env, key_callback=self._on_glfw_key)
        else:
            self.terminal = TerminalKeys()

    def _on_glfw_key(self, keycode: int) -> None:
        name = glfw_key_name(keycode)
        if name is not None:
            self.keys.press(name)

    def reset(self, obs: Any) -> None:
        """Release keys and open the gripper."""
        self.keys.reset()

    def act(self, obs: Any) -> np.ndarray:
        """Action from the keys currently held."""
        if self.terminal is not None:
            for key in self.terminal.read_keys():
                self.keys.press(key)
        return self.mapper.action(self.keys.motion())

    def poll_events(self) -> set[Event]:
        """Save / discard / quit presses (closing the viewer window quits)."""
        if self.terminal is not None:
            for key in self.terminal.read_keys():
                self.keys.press(key)
        events = self.keys.take_events()
        if self.viewer is not None and not self.viewer.is_running():
            events.add(Event.QUIT)
        return events

    def close(self) -> None:
        """Close the viewer / restore the terminal."""
        if self.viewer is not None:
            self.viewer.close()
        if self.terminal is not None:
            self.terminal.close()


class PassiveViewer:
    """MuJoCo's passive viewer, closed for good: ``close`` waits for the viewer's thread.

    ``mujoco.viewer.launch_passive`` renders on a daemon thread, and its handle's ``close`` only asks
    that thread to stop. A process that then frees the env's model or exits while the thread still
    destroys its GLFW window races ``glfw.terminate`` (registered with ``atexit``) and crashes with
    SIGSEGV after everything was saved (mujoco#790). Joining the thread closes that window first.
    """

    #: seconds ``close`` waits for the window to go; the render loop checks for exit every frame
    CLOSE_TIMEOUT_S = 10.0

    def __init__(self, handle: Any, threads: list[threading.Thread]) -> None:
        self.handle = handle
        self.threads = threads  # empty on macOS, where mjpython renders on the main thread

    def is_running(self) -> bool:
        return bool(self.handle.is_running())

    def sync(self) -> None:
        self.handle.sync()

    def close(self) -> None:
        self.handle.close()
        for thread in self.threads:
            thread.join(timeout=self.CLOSE_TIMEOUT_S)


def open_viewer(env: gym.Env[Any, Any], key_callback: Callable[[int], None] | None = None) -> PassiveViewer:
    """A passive MuJoCo viewer on the env's model and data (needs a display)."""
    try:
        import mujoco.viewer
    except ImportError as exc:  # pragma: no cover - mujoco ships the viewer
        raise UserError(f"the MuJoCo viewer is unavailable: {exc}") from None
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) and sys.platform.startswith(
        "linux"
    ):
        raise UserError("the MuJoCo viewer needs a display (DISPLAY is not set); record without --render")
    base: Any = env.unwrapped
    before = set(threading.enumerate())
    try:
        handle = mujoco.viewer.launch_passive(
            base.model,
            base.data,
            key_callback=key_callback,
            show_left_ui=False,
            show_right_ui=False,
        )
    except Exception as exc:  # GLFW errors have no common base class
        raise UserError(f"cannot open the MuJoCo viewer ({exc}); unset DISPLAY to use the terminal") from None
    # the thread launch_passive started (its handle does not expose it)
    return PassiveViewer(handle, [t for t in threading.enumerate() if t not in before])


class _OptionalTerminal:
    """Terminal keys for save / discard / quit next to a gamepad or spacemouse, when stdin is a tty."""

    def __init__(self, keys: KeyState) -> None:
        self.keys = keys
        self.terminal: TerminalKeys | None = None
        if sys.stdin is not None and sys.stdin.isatty():
            self.terminal = TerminalKeys()

    def pump(self) -> None:
        if self.terminal is not None:
            for key in self.terminal.read_keys():
                self.keys.press(key)

    def close(self) -> None:
        if self.terminal is not None:
            self.terminal.close()


class GamepadDevice(_TeleopDevice):
    """Gamepad teleop through pygame (``pip install 'gail-robot[gamepad]'``).

    Left stick: x / y (joint mode: the selected dimension); right stick vertical: z; A: toggle
    gripper; LB / RB: select dimension (joint mode); Start: save; Back: discard; B: quit. The
    terminal keys of the keyboard map also work when stdin is a terminal. ``record --intervene``:
    the person drives while a trigger (SDL axis 5, right, or 2, left) is held more than halfway
    (:data:`TRIGGER_HELD`); unplugging the pad is :attr:`Event.DISCONNECT`.
    """

    source = "teleop:gamepad"
    DEADZONE = 0.1
    #: SDL trigger axes rest at -1 and read +1 fully pressed: held means past the middle
    TRIGGER_HELD = 0.0
    TRIGGER_AXES = (5, 2)

    def __init__(self, env: gym.Env[Any, Any], speed: float = 1.0) -> None:
        try:
            os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
            os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
            import pygame
        except ImportError:
            raise UserError("--device gamepad needs pygame: pip install 'gail-robot[gamepad]'") from None
        self.pygame = pygame
        pygame.init()
        pygame.joystick.init()
        if pygame.joystick.get_count() == 0:
            pygame.quit()
            raise UserError("no gamepad found (connect one, or use --device keyboard)")
        self.stick = pygame.joystick.Joystick(0)
        self.stick.init()
        self.mapper = CommandMapper(env.action_space, cartesian_teleop(env), speed)  # type: ignore[arg-type]
        self.keys = KeyState(self.mapper)
        self.extra = _OptionalTerminal(self.keys)
        self.viewer: PassiveViewer | None = None

    def reset(self, obs: Any) -> None:
        """Open the gripper."""
        self.keys.reset()

    def _axis(self, index: int) -> float:
        if index >= self.stick.get_numaxes():
            return 0.0
        value = float(self.stick.get_axis(index))
        return 0.0 if abs(value) < self.DEADZONE else value

    def act(self, obs: Any) -> np.ndarray:
        """Action from the sticks (SDL's y axes point down, hence the minus signs)."""
        self.poll_events_into_keys()
        motion = np.array(
            [-self._axis(1), -self._axis(0), -self._axis(4 if self.stick.get_numaxes() > 4 else 3)]
        )
        return self.mapper.action(motion)

    def poll_events_into_keys(self) -> None:
        """Translate pygame button presses into key presses."""
        buttons = {0: "space", 1: "q", 6: "backspace", 7: "enter"}
        for event in self.pygame.event.get():
            if event.type == self.pygame.JOYBUTTONDOWN:
                if event.button in buttons:
                    self.keys.press(buttons[event.button])
                elif event.button in (4, 5) and not self.mapper.cartesian:
                    self.mapper.select(-1 if event.button == 4 else 1)
            elif event.type == self.pygame.JOYDEVICEREMOVED:
                self.keys.press("disconnect")
        self.extra.pump()

    def takeover(self) -> bool:
        """record --intervene: a trigger is held (past :data:`TRIGGER_HELD`)."""
        count = self.stick.get_numaxes()
        return any(i < count and float(self.stick.get_axis(i)) > self.TRIGGER_HELD for i in self.TRIGGER_AXES)

    def poll_events(self) -> set[Event]:
        """Save / discard / quit."""
        self.poll_events_into_keys()
        return self.keys.take_events()

    def close(self) -> None:
        """Release the gamepad and the terminal."""
        self.extra.close()
        if self.viewer is not None:
            self.viewer.close()
        self.pygame.quit()


class SpaceMouseDevice(_TeleopDevice):
    """3Dconnexion SpaceMouse teleop through pyspacemouse (``pip install 'gail-robot[spacemouse]'``).

    Translation x / y / z moves the tool (joint mode: x drives the selected dimension); the left
    button toggles the gripper, the right button saves. Terminal keys (Backspace, Q) discard and quit.
    ``record --intervene``: any motion (translation or rotation) beyond :data:`DEADZONE` takes over,
    and the person keeps driving until the puck has rested for :data:`HAND_BACK_S` seconds; a read
    error (unplugged) is :attr:`Event.DISCONNECT`.
    """

    source = "teleop:spacemouse"
    DEADZONE = 0.1
    HAND_BACK_S = 0.5

    def __init__(self, env: gym.Env[Any, Any], speed: float = 1.0) -> None:
        try:
            import pyspacemouse
        except ImportError:
            raise UserError(
                "--device spacemouse needs pyspacemouse: pip install 'gail-robot[spacemouse]'"
            ) from None
        except OSError as exc:  # hidapi's shared library is missing
            raise UserError(
                f"--device spacemouse: the HID library is missing ({exc}); install libhidapi"
            ) from None
        self.lib = pyspacemouse
        try:
            opened = pyspacemouse.open()
        except Exception as exc:  # pyspacemouse raises bare Exceptions for HID errors
            raise UserError(f"cannot open the SpaceMouse ({exc})") from None
        if not opened:
            raise UserError("no SpaceMouse found (connect one, or use --device keyboard)")
        self.mapper = CommandMapper(env.action_space, cartesian_teleop(env), speed)  # type: ignore[arg-type]
        self.keys = KeyState(self.mapper)
        self.extra = _OptionalTerminal(self.keys)
        self._buttons: list[int] = [0, 0]
        self.viewer: PassiveViewer | None = None
        self.clock: Callable[[], float] = time.monotonic
        self._moved_at = -float("inf")
        self._last: Any = None

    def reset(self, obs: Any) -> None:
        """Open the gripper; the policy drives again."""
        self.keys.reset()
        self._moved_at = -float("inf")

    def takeover(self) -> bool:
        """record --intervene: the puck moved beyond the dead zone less than :data:`HAND_BACK_S` ago."""
        return self.clock() - self._moved_at < self.HAND_BACK_S

    def _read(self) -> Any:
        try:
            state = self.lib.read()
        except Exception:  # pyspacemouse raises bare Exceptions for HID errors: the device is gone
            state = None
        if state is None:
            self.keys.press("disconnect")
            return self._last if self._last is not None else _AT_REST
        self._last = state
        axes = [float(getattr(state, name, 0.0)) for name in ("x", "y", "z", "roll", "pitch", "yaw")]
        if max(abs(v) for v in axes) > self.DEADZONE:
            self._moved_at = self.clock()
        buttons = [*getattr(state, "buttons", [0, 0]), 0, 0]
        if buttons[0] and not self._buttons[0]:
            self.keys.press("space")
        if buttons[1] and not self._buttons[1]:
            self.keys.press("enter")
        self._buttons = buttons[:2]
        self.extra.pump()
        return state

    def act(self, obs: Any) -> np.ndarray:
        """Action from the puck's translation."""
        state = self._read()
        return self.mapper.action(np.array([state.y, -state.x, state.z], dtype=np.float64))

    def poll_events(self) -> set[Event]:
        """Save / discard / quit."""
        self._read()
        return self.keys.take_events()

    def close(self) -> None:
        """Release the terminal (pyspacemouse has no close)."""
        self.extra.close()
        if self.viewer is not None:
            self.viewer.close()


class _AtRest:
    """A SpaceMouse reading with no motion (after a failed read)."""

    x = y = z = roll = pitch = yaw = 0.0
    buttons = (0, 0)


_AT_REST = _AtRest()


class _ExpertBase:
    """Shared parts of the non-interactive devices: optional viewer, Gaussian action noise."""

    interactive = False

    def __init__(self, env: gym.Env[Any, Any], noise: float, seed: int | None, render: bool) -> None:
        if noise < 0:
            raise UserError(f"--noise must be >= 0, got {noise}")
        space = env.action_space
        # Discrete(n): actions are int64 indices, passed through as they are (no noise, no clipping)
        self.n_actions = int(space.n) if isinstance(space, gym.spaces.Discrete) else 0
        if self.n_actions and noise > 0:
            raise UserError(f"--noise perturbs continuous actions; {space} actions take no noise")
        box = space if isinstance(space, gym.spaces.Box) else gym.spaces.Box(0.0, 0.0, (0,))
        self.low = np.asarray(box.low, dtype=np.float64)
        self.high = np.asarray(box.high, dtype=np.float64)
        finite = np.isfinite(self.low) & np.isfinite(self.high)
        self.half = np.where(finite, (self.high - self.low) / 2, 1.0)
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.viewer: PassiveViewer | None = open_viewer(env) if render else None

    def noisy(self, action: np.ndarray) -> np.ndarray:
        """Add N(0, (noise * half range)^2) and clip to the bounds (a Discrete action: int64 as it is)."""
        if self.n_actions:
            return np.asarray(action, dtype=np.int64)
        out = np.asarray(action, dtype=np.float64)
        if self.noise > 0:
            out = out + self.rng.normal(0.0, 1.0, size=out.shape) * self.noise * self.half
        return np.clip(out, self.low, self.high).astype(np.float32)

    def poll_events(self) -> set[Event]:
        """Closing the viewer window quits."""
        if self.viewer is not None and not self.viewer.is_running():
            return {Event.QUIT}
        return set()

    def sync(self, env: gym.Env[Any, Any]) -> None:
        """Redraw the viewer when one is open."""
        if self.viewer is not None:
            self.viewer.sync()

    def describe(self) -> str:
        """Status-line text."""
        return f"noise {self.noise:g}" if self.noise else ""

    def close(self) -> None:
        """Close the viewer."""
        if self.viewer is not None:
            self.viewer.close()


class ScriptedDevice(_ExpertBase):
    """The task's scripted expert (``gail_robot.envs.experts``); it applies ``noise`` itself."""

    source = "scripted"

    def __init__(
        self, env: gym.Env[Any, Any], noise: float = 0.0, seed: int | None = None, render: bool = False
    ):
        try:
            from gail_robot.envs.experts import has_scripted_expert, make_expert
        except ImportError:
            raise UserError(
                "scripted experts are not available in this build (gail_robot.envs.experts)"
            ) from None
        env_id = env.spec.id if env.spec is not None else "?"
        if not has_scripted_expert(env_id):
            raise UserError(
                f"'{env_id}' has no scripted expert; use --device policy --policy FILE or a teleop device"
            )
        super().__init__(env, 0.0, seed, render)
        self.expert = make_expert(env, noise=noise, seed=seed)
        self.noise = noise

    def reset(self, obs: Any) -> None:
        """Reset the expert's internal phase."""
        self.expert.reset()

    def act(self, obs: Any) -> np.ndarray:
        """The expert's action, clipped to the bounds."""
        return np.clip(np.asarray(self.expert(obs), dtype=np.float64), self.low, self.high).astype(np.float32)


class PolicyDevice(_ExpertBase):
    """A trained policy as the expert (checkpoint, run directory or exported TorchScript file)."""

    def __init__(
        self,
        env: gym.Env[Any, Any],
        policy_path: str,
        noise: float = 0.0,
        seed: int | None = None,
        render: bool = False,
    ) -> None:
        from pathlib import Path

        from gail_robot.policy_io import load_policy

        super().__init__(env, noise, seed, render)
        self.bundle = load_policy(policy_path)
        env_id = env.spec.id if env.spec is not None else None
        if env_id is not None and self.bundle.env_id and self.bundle.env_id != env_id:
            raise UserError(
                f"{policy_path}: the policy was trained on '{self.bundle.env_id}', not '{env_id}'"
            )
        self.source = f"policy:{Path(policy_path).name}"

    def reset(self, obs: Any) -> None:
        """Policies are stateless."""

    def act(self, obs: Any) -> np.ndarray:
        """The policy's deterministic action plus optional noise."""
        return self.noisy(self.bundle.act(np.asarray(obs, dtype=np.float32)))


class RandomDevice(_ExpertBase):
    """Uniform random actions (smoke tests, benchmarks, crash tests)."""

    source = "random"

    def reset(self, obs: Any) -> None:
        """Nothing to reset."""

    def act(self, obs: Any) -> np.ndarray:
        """A uniform action within the (finite) bounds, or a uniform index of a Discrete space."""
        if self.n_actions:
            return np.asarray(self.rng.integers(self.n_actions), dtype=np.int64)
        low = np.where(np.isfinite(self.low), self.low, -1.0)
        high = np.where(np.isfinite(self.high), self.high, 1.0)
        return self.rng.uniform(low, high).astype(np.float32)


DEVICES = ("keyboard", "gamepad", "spacemouse", "scripted", "policy", "random")


def make_device(
    name: str,
    env: gym.Env[Any, Any],
    *,
    policy: str | None = None,
    noise: float = 0.0,
    seed: int | None = None,
    speed: float = 1.0,
    render: bool = False,
) -> Device:
    """Build a device by its ``--device`` name.

    Raises:
        UserError: an unknown name, or a teleop device for a ``Discrete`` action space (they drive
            continuous actions; record those with ``--device policy`` or ``random``).
    """
    if name in ("keyboard", "gamepad", "spacemouse") and isinstance(env.action_space, gym.spaces.Discrete):
        raise UserError(
            f"--device {name} drives continuous actions; for {env.action_space} actions record with "
            "--device policy --policy FILE (or --device random)"
        )
    if name == "keyboard":
        return KeyboardDevice(env, speed=speed)
    if name == "gamepad":
        return GamepadDevice(env, speed=speed)
    if name == "spacemouse":
        return SpaceMouseDevice(env, speed=speed)
    if name == "scripted":
        return ScriptedDevice(env, noise=noise, seed=seed, render=render)
    if name == "policy":
        if not policy:
            raise UserError("--device policy needs --policy FILE (a checkpoint, run directory or policy.pt)")
        return PolicyDevice(env, policy, noise=noise, seed=seed, render=render)
    if name == "random":
        return RandomDevice(env, noise, seed, render)
    raise UserError(f"unknown device '{name}' (choose from {', '.join(DEVICES)})")
