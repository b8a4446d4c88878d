"""Demonstration files (HDF5 schema v1): writing, reading, validation, replay and conversion.

``DemoWriter`` records episodes crash-safely; ``DemoDataset`` reads a file and hands out
``Transitions`` for training. The schema is documented in ``datasets/README.md``.

The names below are imported on first use: the publishing process (``gail_robot.data.sink``)
then starts without loading Gymnasium.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gail_robot.data.episode import Episode
    from gail_robot.data.reader import Demo, DemoDataset, Transitions
    from gail_robot.data.schema import FORMAT, FORMAT_VERSION, EnvMeta
    from gail_robot.data.writer import DemoWriter

_WHERE = {
    "Demo": "reader",
    "DemoDataset": "reader",
    "Transitions": "reader",
    "FORMAT": "schema",
    "FORMAT_VERSION": "schema",
    "EnvMeta": "schema",
    "Episode": "episode",
    "DemoWriter": "writer",
}

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Demo",
    "DemoDataset",
    "DemoWriter",
    "EnvMeta",
    "Episode",
    "Transitions",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'gail_robot.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"gail_robot.data.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
