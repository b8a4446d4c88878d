"""The versions that decide what a checkpoint, demo file or exported policy means (recorded in each)."""

from __future__ import annotations

import platform


def versions() -> dict[str, str]:
    """Versions of gail_robot and of the packages whose behaviour a saved artefact depends on."""
    import gymnasium
    import mujoco
    import numpy
    import torch

    from gail_robot import __version__

    return {
        "gail_robot": __version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "mujoco": mujoco.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }
