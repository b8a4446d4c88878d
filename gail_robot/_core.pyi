"""Type stub of the private C++ extension gail_robot._core (use gail_robot.core instead).

Every array argument must already be C-contiguous, native-order and of the exact dtype named
here (no conversion happens in C++: anything else raises TypeError); sizes are checked and
raise ValueError. Kernels release the GIL.
"""

import collections.abc

import numpy as np
import numpy.typing as npt

_F32 = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]
_Bool = npt.NDArray[np.bool_]

#: the variance floor of observation normalisation: ``sqrt(var + NORM_EPSILON)``
NORM_EPSILON: float

def gae_f32(
    rewards: _F32,
    values: _F32,
    next_values: _F32,
    terminated: _Bool,
    truncated: _Bool,
    gamma: float,
    lam: float,
    advantages: _F32,
    returns: _F32,
) -> None: ...
def gae_f64(
    rewards: _F64,
    values: _F64,
    next_values: _F64,
    terminated: _Bool,
    truncated: _Bool,
    gamma: float,
    lam: float,
    advantages: _F64,
    returns: _F64,
) -> None: ...
def disc_rewards_f32(logits: _F32, kind: str, out: _F32) -> None: ...
def disc_rewards_f64(logits: _F64, kind: str, out: _F64) -> None: ...
def rms_update_f32(batch: _F32, mean: _F64, var: _F64, count: float) -> float: ...
def rms_update_f64(batch: _F64, mean: _F64, var: _F64, count: float) -> float: ...
def rms_normalize_f32(x: _F32, mean: _F64, var: _F64, clip: float, out: _F32) -> None: ...
def rms_normalize_f64(x: _F64, mean: _F64, var: _F64, clip: float, out: _F32) -> None: ...
def mlp_forward_f32(
    x: _F32,
    weights: list,  # of (in, out) float32 arrays (pybind11 declares a plain list)
    biases: list,  # of (out,) float32 arrays
    activations: collections.abc.Sequence[str],
    out: _F32,
) -> None: ...
def set_max_threads(n: int) -> None: ...
def get_max_threads() -> int: ...
