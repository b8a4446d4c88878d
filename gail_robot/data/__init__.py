"""Demonstration files (HDF5 schema v1): writing, reading, validation, replay and conversion.

``DemoWriter`` records episodes crash-safely; ``DemoDataset`` reads a file and hands out
``Transitions`` for training. The schema is documented in ``datasets/README.md``.
"""

from gail_robot.data.reader import Demo, DemoDataset, Transitions
from gail_robot.data.schema import FORMAT, FORMAT_VERSION, EnvMeta
from gail_robot.data.writer import DemoWriter

__all__ = ["FORMAT", "FORMAT_VERSION", "Demo", "DemoDataset", "DemoWriter", "EnvMeta", "Transitions"]
