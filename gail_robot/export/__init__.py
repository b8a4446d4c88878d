"""Export a trained policy for deployment: TorchScript (primary), ONNX or AOTInductor pt2.

The exported module is the *whole* policy: raw observation ``(B, obs_dim) float32`` in, action
``(B, act_dim) float32`` in the environment's own units out, clipped to the action bounds,
deterministic (the mean action). Metadata travels inside the file as ``meta.json``; ``--verify``
reloads the file in a fresh Python process and compares it with the Python policy
(docs/DESIGN.md §5). One module per job:

- :mod:`~gail_robot.export.module`: the exported ``nn.Module`` built from a ``PolicyBundle``, its
  torch mirror of ``core.normalize``, scripting / tracing;
- :mod:`~gail_robot.export.controller_spec`: what the C++ controller needs (observation layout and
  task rules of the Gymnasium v5 locomotion envs, checked against the env);
- :mod:`~gail_robot.export.formats`: ``meta.json``, writing TorchScript / ONNX / pt2 and loading them;
- :mod:`~gail_robot.export.native`: the MLP actor's weights stored in pt2 packages for the C++ library's
  native kernels;
- :mod:`~gail_robot.export.verify`: the fresh-process comparison (``__main__`` is its worker);
- :mod:`~gail_robot.export.cli`: ``gail-robot export`` (the command line sits above this package).
"""

from gail_robot.export.controller_spec import (
    check_layout,
    locomotion_family,
    observation_layout,
    task_spec,
)
from gail_robot.export.formats import (
    FORMATS,
    META_FORMAT,
    LoadedPolicy,
    detect_format,
    export_policy,
    load_exported,
    read_meta,
)
from gail_robot.export.module import (
    MODES,
    ExportedPolicy,
    build_module,
    to_torchscript,
    torchscript_calls,
)
from gail_robot.export.verify import (
    CLOSED_LOOP_ATOL,
    VERIFY_ATOL,
    collect_env_observations,
    verify_export,
)

__all__ = [
    "CLOSED_LOOP_ATOL",
    "FORMATS",
    "META_FORMAT",
    "MODES",
    "VERIFY_ATOL",
    "ExportedPolicy",
    "LoadedPolicy",
    "build_module",
    "check_layout",
    "collect_env_observations",
    "detect_format",
    "export_policy",
    "load_exported",
    "locomotion_family",
    "observation_layout",
    "read_meta",
    "task_spec",
    "to_torchscript",
    "torchscript_calls",
    "verify_export",
]
