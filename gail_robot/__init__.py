"""gail_robot: record robot demonstrations, imitate them with GAIL/BC, deploy to C++."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gail-robot")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
