"""gail_robot: record robot demonstrations, imitate them with GAIL/BC, deploy to C++."""

import os
import sys
from importlib.metadata import PackageNotFoundError, version

# Headless by default: with no display, render through EGL (set before anything imports mujoco,
# which picks its GL backend at import time). A user's own MUJOCO_GL always wins.
MUJOCO_GL_DEFAULTED = False
"""True when MUJOCO_GL is ``egl`` because this package chose it (no display), not the user."""
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
    os.environ["MUJOCO_GL"] = "egl"
    MUJOCO_GL_DEFAULTED = True

# Values mujoco's own GL context module accepts on Linux (anything else raises at `import mujoco`).
_MUJOCO_GL_VALUES = ("", "enable", "enabled", "on", "true", "1", "glfw", "glx", "egl", "osmesa")
_MUJOCO_GL_OFF = ("disable", "disabled", "off", "false", "0")
# Backends that load a library at `import mujoco`: (library base name, Debian package).
_MUJOCO_GL_LIBRARIES = {"egl": ("EGL", "libegl1"), "osmesa": ("OSMesa", "libosmesa6")}


def _library_loads(name: str) -> bool:
    """Whether ``lib<name>.so`` (or a versioned ``.so.N``) loads, tried as PyOpenGL tries it."""
    import ctypes

    for filename in [f"lib{name}.so", *(f"lib{name}.so.{i}" for i in range(9, -1, -1))]:
        try:
            ctypes.CDLL(filename)
            return True
        except OSError:
            continue
    return False


def mujoco_gl_problem() -> str | None:
    """One line saying how to fix MUJOCO_GL when ``import mujoco`` would fail with it, else None.

    ``import mujoco`` dies in a traceback deep inside PyOpenGL when MUJOCO_GL names an unknown
    backend or one whose library is missing; the CLI checks first and prints this line instead.
    Only Linux is checked (elsewhere mujoco picks the platform's own backend).
    """
    value = os.environ.get("MUJOCO_GL")
    if value is None or not sys.platform.startswith("linux"):
        return None
    gl = value.lower().strip()
    if gl in _MUJOCO_GL_OFF:
        return None
    origin = " (the default without a display)" if MUJOCO_GL_DEFAULTED else ""
    if gl not in _MUJOCO_GL_VALUES:
        return (
            f"MUJOCO_GL={value} is not a MuJoCo rendering backend; set MUJOCO_GL=egl (headless), "
            "osmesa (software) or glfw (with a display), or unset it"
        )
    if gl in _MUJOCO_GL_LIBRARIES:
        library, package = _MUJOCO_GL_LIBRARIES[gl]
        if not _library_loads(library):
            if gl == "egl":
                fixes = f"install {package}, or set MUJOCO_GL=osmesa and install libosmesa6, or unset it"
                fixes += " with a display"
            else:
                fixes = f"install {package} or set MUJOCO_GL=egl (or unset it with a display)"
            return f"MUJOCO_GL={value}{origin}: lib{library} not found; {fixes}"
    return None


try:
    __version__ = version("gail-robot")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["MUJOCO_GL_DEFAULTED", "__version__", "mujoco_gl_problem"]
