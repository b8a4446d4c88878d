"""Load a converted dataset with LeRobot's own ``LeRobotDataset`` (a manual check, not a test).

LeRobot does not install next to this project's torch 2.13 (datasets/README.md: LeRobot). In a
throwaway virtual environment that sees torch 2.13, install ``lerobot==0.4.4 datasets`` and their
pure-Python dependencies with ``pip install --no-deps``, then::

    gail-robot data convert demos.hdf5 --to lerobot --out /tmp/lr
    python datasets/lerobot_loader_check.py /tmp/lr

torchvision (and torchcodec) are stubbed: their PyPI wheels do not load against the CPU torch, and
LeRobot uses them only for image transforms and video decoding, which state-based datasets never reach.
"""

import importlib.machinery
import sys
from pathlib import Path
from unittest import mock

for name in [
    "torchvision",
    "torchvision.transforms",
    "torchvision.transforms.v2",
    "torchvision.transforms.v2.functional",
    "torchvision.transforms.functional",
    "torchvision.io",
]:
    stub = mock.MagicMock()
    stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
    sys.modules[name] = stub

from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402

root = Path(sys.argv[1])
ds = LeRobotDataset("local/check", root=root)
print("episodes", ds.num_episodes, "frames", ds.num_frames, "fps", ds.fps)
print("features", list(ds.features))
item = ds[min(5, ds.num_frames - 1)]
print({k: (tuple(v.shape), str(v.dtype)) if hasattr(v, "shape") else v for k, v in item.items()})
print("meta.episodes columns", ds.meta.episodes.column_names)
print("stats: action mean", ds.meta.stats["action"]["mean"])
window = LeRobotDataset("local/check", root=root, delta_timestamps={"action": [0.0, 1 / ds.fps, 2 / ds.fps]})
print("delta_timestamps window", tuple(window[0]["action"].shape), window[0]["action_is_pad"].tolist())
