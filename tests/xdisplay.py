"""Test harness for real windows: a private X server (Xvfb) and real key events sent with xdotool.

Used by the viewer-keyboard teleop tests; any test that needs to press keys in the MuJoCo viewer
window (e.g. an intervention takeover key) can use it the same way::

    with XDisplay.start_or_skip() as x:
        proc = subprocess.Popen([...], env=x.env(MUJOCO_GL="glfw"), ...)
        window = x.wait_window("MuJoCo", timeout=60, alive=proc)
        x.focus(window)
        x.key("Up", repeat=10, delay=0.1)
        x.key("Return")

CI installs the X server with apt (README: install; ``.ci/run``). Without it, or when it cannot
start, :meth:`XDisplay.start_or_skip` skips the test and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from types import TracebackType

import pytest

#: the apt command that provides what this harness needs (README and .ci/run use the same one)
APT_HINT = "apt-get install -y xvfb xdotool libgl1-mesa-dri libglx-mesa0"


class XDisplay:
    """A running Xvfb server on a free display number; :meth:`close` stops it."""

    def __init__(self, proc: subprocess.Popen[bytes], display: str) -> None:
        self.proc = proc
        self.display = display

    @classmethod
    def start(cls, width: int = 1280, height: int = 1024, timeout: float = 20.0) -> XDisplay:
        """Start Xvfb; the server picks a free display number and reports it (``-displayfd``).

        Raises:
            RuntimeError: Xvfb is missing or did not start.
        """
        if shutil.which("Xvfb") is None:
            raise RuntimeError(f"Xvfb is not installed ({APT_HINT})")
        if shutil.which("xdotool") is None:
            raise RuntimeError(f"xdotool is not installed ({APT_HINT})")
        read, write = os.pipe()
        proc = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write), "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp"],
            pass_fds=(write,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(write)
        number = b""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and not number.endswith(b"\n"):
                chunk = os.read(read, 16)  # Xvfb writes "<number>\n" once it accepts clients
                if not chunk:
                    break
                number += chunk
        finally:
            os.close(read)
        if not number.strip().isdigit():
            proc.kill()
            err = proc.communicate(timeout=10)[1].decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"Xvfb did not start ({err[-1] if err else 'no output'})")
        return cls(proc, f":{int(number)}")

    @classmethod
    def start_or_skip(cls) -> XDisplay:
        """:meth:`start`, or skip the calling test with the reason."""
        try:
            return cls.start()
        except RuntimeError as exc:
            pytest.skip(str(exc))

    def env(self, **extra: str) -> dict[str, str]:
        """This process's environment pointed at the display (``WAYLAND_DISPLAY`` removed)."""
        env = {k: v for k, v in os.environ.items() if k != "WAYLAND_DISPLAY"}
        env["DISPLAY"] = self.display
        env.update(extra)
        return env

    def xdotool(self, *args: str, timeout: float = 30.0) -> str:
        """Run ``xdotool ARGS`` on this display; its stdout."""
        result = subprocess.run(
            ["xdotool", *args], env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise RuntimeError(f"xdotool {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def wait_window(
        self, name: str, timeout: float = 60.0, alive: subprocess.Popen[str] | None = None
    ) -> str:
        """The id of the first visible window whose title matches the regex ``name``.

        Raises:
            RuntimeError: none appeared in time, or ``alive`` (the process that should open it) exited.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if alive is not None and alive.poll() is not None:
                raise RuntimeError(f"the process exited ({alive.returncode}) before opening a window")
            found = subprocess.run(
                ["xdotool", "search", "--onlyvisible", "--name", name],
                env=self.env(),
                capture_output=True,
                text=True,
            ).stdout.split()
            if found:
                return found[0]
            time.sleep(0.2)
        raise RuntimeError(f"no window named {name!r} appeared within {timeout:.0f} s")

    def focus(self, window: str) -> None:
        """Give ``window`` the keyboard focus (no window manager runs: X input focus, pointer over it)."""
        self.xdotool("mousemove", "--window", window, "50", "50")
        self.xdotool("windowfocus", "--sync", window)

    def key(self, *keys: str, repeat: int = 1, delay: float = 0.0) -> None:
        """Press and release X keysyms (``"Up"``, ``"Return"``, ``"BackSpace"``, ``"a"``) through XTEST:
        real key events, as a keyboard makes them, delivered to the focused window."""
        for i in range(repeat):
            self.xdotool("key", "--clearmodifiers", *keys)
            if delay and i + 1 < repeat:
                time.sleep(delay)

    def close(self) -> None:
        """Stop the server."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def __enter__(self) -> XDisplay:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class LineWatcher:
    """Collects a process's text stream line by line in a thread; :meth:`wait_for` a line."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        stream.close()  # type: ignore[attr-defined]

    def join(self, timeout: float = 30.0) -> None:
        """Wait until the stream ends (the process exited and its output is read)."""
        self._thread.join(timeout)

    def wait_for(self, match: Callable[[str], bool] | str, timeout: float = 60.0) -> str:
        """The first line (old or new) that contains ``match`` (or satisfies it)."""
        test = (lambda line: match in line) if isinstance(match, str) else match
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if test(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line matching {match!r} within {timeout:.0f} s: {self.lines}")
                self._cond.wait(left)

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)
