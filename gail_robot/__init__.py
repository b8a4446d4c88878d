"""gail_robot: record robot demonstrations, imitate them with GAIL/BC, deploy to C++."""

import os
import sys
from importlib.metadata import PackageNotFoundError, version

# Headless by default: with no display, render through EGL (set before anything imports mujoco,
# which picks its GL backend at import time). A user's own MUJOCO_GL always wins.
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
    os.environ["MUJOCO_GL"] = "egl"

try:
    __version__ = version("gail-robot")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
