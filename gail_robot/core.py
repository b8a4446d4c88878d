"""Numerical core: GAE, discriminator rewards and a running mean/variance normaliser.

This module is the validating Python face of the private C++ extension ``gail_robot._core``
(docs/DESIGN.md §2). Python infers shapes, validates and allocates every output; C++ receives raw
buffers, re-checks sizes, releases the GIL and runs the kernel (single-threaded unless enabled with
:func:`set_max_threads`). A pure-NumPy reference of every kernel lives here as
well (``gae_reference``, ``disc_rewards_reference``, ``rms_update_reference``, ``normalize_reference``)
and the tests compare the two. There is no NumPy fallback: without a built ``_core`` this module
raises ``ImportError``.

Precision: :func:`gae` computes in the dtype of its inputs (float64 results equal the reference bit
for bit; float32 ones agree to float32 rounding). :func:`disc_rewards` is within 2 ulp of the exact
value for every finite logit, subnormal results included. :class:`RunningMeanStd` accumulates in
float64 whatever the batch dtype.

Input policy (the same for every function here):

* **Floating data** (rewards, values, next_values, logits, normaliser batches) must be ``float32``
  or ``float64``; the result has the same dtype. Mixed float32/float64 inputs to :func:`gae` are
  promoted to float64. Integer, bool, complex and float16 data are refused with ``ValueError``
  (an int rewards array is almost always a bug upstream, and silently casting hides it).
  :meth:`RunningMeanStd.update` and :meth:`RunningMeanStd.normalize` are the exception: they also
  accept integer data (e.g. pixel or count observations) and read it as float64.
* **Layout**: non-contiguous, Fortran-ordered or byte-swapped arrays are accepted and copied to a
  C-contiguous native array first (one extra copy, never a different result).
* **Flags** (terminated, truncated) must be ``bool``, or an integer array holding only 0 and 1
  (e.g. ``uint8``); float flags are refused, since ``0.5`` has no meaning as a flag.
* **Empty** arrays, wrong ``ndim``, mismatched shapes and ``gamma``/``lam`` outside ``[0, 1]`` or
  NaN raise ``ValueError`` with a message that names the argument.
* Non-finite *data* (NaN/inf rewards) is not checked: it propagates, as in NumPy.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

try:
    from gail_robot import _core
except ImportError as exc:  # no silent NumPy fallback: a missing build must be noticed
    raise ImportError(
        "gail_robot._core (the compiled C++ kernels) failed to import: "
        f"{exc}. Build it with `pip install --no-build-isolation --no-deps -e .` from the repository "
        "root (needs a C++17 compiler, CMake, scikit-build-core and pybind11), or reinstall the package."
    ) from exc

__all__ = [
    "DISC_REWARD_KINDS",
    "NORM_EPSILON",
    "RunningMeanStd",
    "batch_moments_reference",
    "disc_rewards",
    "disc_rewards_reference",
    "gae",
    "gae_reference",
    "get_max_threads",
    "normalize",
    "normalize_reference",
    "rms_update_reference",
    "set_max_threads",
]

#: variance floor of observation normalisation, ``sqrt(var + NORM_EPSILON)`` (defined once, in C++)
NORM_EPSILON: float = float(_core.NORM_EPSILON)

DiscRewardKind = Literal["gail", "airl", "neg"]
DISC_REWARD_KINDS: tuple[str, ...] = ("gail", "airl", "neg")

# ----------------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------------


def _as_float_array(name: str, x: Any) -> np.ndarray:
    """Return ``x`` as an array, refusing anything that is not float32/float64."""
    arr = np.asarray(x)
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
        raise ValueError(f"{name} must be a float32 or float64 array, got dtype {arr.dtype}")
    return arr


def _as_flag_array(name: str, x: Any) -> np.ndarray:
    """Return ``x`` as a C-contiguous bool array; integer 0/1 arrays are converted."""
    arr = np.asarray(x)
    if arr.dtype == np.bool_:
        return arr if arr.flags.c_contiguous else np.asarray(arr, order="C")
    if arr.dtype.kind in "iu":
        if arr.size and not bool(np.all((arr == 0) | (arr == 1))):
            raise ValueError(f"{name} must hold only 0 and 1 when given as integers")
        return np.asarray(arr != 0, order="C")
    raise ValueError(f"{name} must be a bool array (or integer 0/1), got dtype {arr.dtype}")


def _check_discount(name: str, value: float) -> float:
    """Return ``value`` as a float, refusing NaN and anything outside [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    out = float(value)
    if not (0.0 <= out <= 1.0):  # also catches NaN
        raise ValueError(f"{name} must be in [0, 1], got {out}")
    return out


def _contiguous(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """C-contiguous, native-byte-order copy of ``arr`` in ``dtype`` (no copy when already so)."""
    if arr.dtype == dtype and arr.dtype.isnative and arr.flags.c_contiguous:
        return arr  # the common case, kept cheap: this runs on every call
    # np.asarray(order="C") rather than np.ascontiguousarray, which turns 0-d arrays into 1-d.
    return np.asarray(arr, dtype=dtype.newbyteorder("="), order="C")


# ----------------------------------------------------------------------------------------------
# Pure-NumPy references (kept simple and obviously right; the tests compare the kernels to them)
# ----------------------------------------------------------------------------------------------


def gae_reference(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference GAE, the docs/DESIGN.md §2 formulas written out, accumulated in float64.

    No validation: callers pass already-validated arrays.

    Args:
        rewards: ``(T, N)`` float rewards of each step.
        values: ``(T, N)`` V(s_t).
        next_values: ``(T, N)`` V of the true successor of step t (V(final obs) on truncation).
        terminated: ``(T, N)`` bool, true MDP termination after step t.
        truncated: ``(T, N)`` bool, time-limit truncation after step t.
        gamma: discount.
        lam: GAE lambda.

    Returns:
        ``(advantages, returns)``, both ``(T, N)`` in the dtype of ``rewards``.
    """
    r = rewards.astype(np.float64)
    v = values.astype(np.float64)
    nv = next_values.astype(np.float64)
    term = terminated.astype(bool)
    cut = term | truncated.astype(bool)
    delta = r + gamma * np.where(term, 0.0, nv) - v
    trace = np.where(cut, 0.0, gamma * lam)
    adv = np.zeros_like(delta)
    carry = np.zeros(delta.shape[1:], dtype=np.float64)
    for t in range(delta.shape[0] - 1, -1, -1):
        carry = delta[t] + trace[t] * carry
        adv[t] = carry
    dtype = rewards.dtype
    return adv.astype(dtype), (adv + v).astype(dtype)


def disc_rewards_reference(logits: np.ndarray, kind: str) -> np.ndarray:
    """Reference discriminator rewards computed in float64 (see docs/DESIGN.md §2 for the table).

    Args:
        logits: float array of any shape, ``logit = log D - log(1 - D)``.
        kind: ``"gail"`` (softplus(logit)), ``"airl"`` (logit) or ``"neg"`` (-softplus(-logit)).

    Returns:
        Rewards with the shape and dtype of ``logits``.
    """
    x = np.asarray(logits, dtype=np.float64)
    if kind == "airl":
        out = x.copy()
    elif kind == "gail":
        out = np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))
    elif kind == "neg":
        out = np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))
    else:
        raise ValueError(f"kind must be one of {DISC_REWARD_KINDS}, got {kind!r}")
    return out.astype(np.asarray(logits).dtype)


def rms_update_reference(
    batch: np.ndarray, mean: np.ndarray, var: np.ndarray, count: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Reference running-statistics update: Chan's parallel merge of the batch moments.

    Args:
        batch: ``(B, *shape)`` samples.
        mean: running mean, ``shape`` float64.
        var: running population variance, ``shape`` float64.
        count: running count (including any pseudo-count).

    Returns:
        The merged ``(mean, var, count)``.
    """
    b, batch_mean, batch_m2 = batch_moments_reference(batch)
    total = count + b
    delta = batch_mean - mean
    m2 = var * count + batch_m2 + delta * delta * (count * b / total)
    return mean + delta * (b / total), m2 / total, total


def normalize_reference(x: np.ndarray, mean: np.ndarray, var: np.ndarray, clip: float) -> np.ndarray:
    """Reference ``clip((x - mean) / sqrt(var + NORM_EPSILON), -clip, clip)`` in float64, as float32."""
    out = (np.asarray(x, dtype=np.float64) - mean) / np.sqrt(var + NORM_EPSILON)
    return np.clip(out, -clip, clip).astype(np.float32)


def batch_moments_reference(batch: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Reference batch statistics over axis 0, in float64.

    Args:
        batch: ``(B, *shape)`` array.

    Returns:
        ``(count, mean, m2)`` with ``count = B``, ``mean`` and ``m2 = sum((x - mean)**2)`` of shape ``shape``.
    """
    x = np.asarray(batch, dtype=np.float64)
    mean = x.mean(axis=0)
    m2 = ((x - mean) ** 2).sum(axis=0)
    return x.shape[0], mean, m2


def mlp_forward_reference(
    x: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]], activations: list[str]
) -> np.ndarray:
    """Reference of :func:`mlp_forward` in NumPy float32, summing in the kernel's order.

    Elementwise float32 operations round exactly as the kernel's, so linear layers and relu match it
    bit for bit; tanh/elu/silu go through NumPy's own transcendental functions (within 1 ulp).
    """
    h = np.asarray(x, dtype=np.float32)
    for i, (w_any, b) in enumerate(layers):
        w = np.asarray(w_any, dtype=np.float32)
        out = np.broadcast_to(np.asarray(b, np.float32), (h.shape[0], w.shape[1])).copy()
        for k in range(w.shape[0]):
            out += h[:, k : k + 1] * w[k][None, :]
        if i < len(activations):
            out = _NUMPY_ACTIVATIONS[activations[i]](out).astype(np.float32)
        h = out
    return h


_NUMPY_ACTIVATIONS: dict[str, Any] = {
    "tanh": np.tanh,
    "relu": lambda h: np.where(h > 0, h, np.float32(0)),
    "elu": lambda h: np.where(h > 0, h, np.expm1(np.minimum(h, 0))),
    "silu": lambda h: h / (np.float32(1) + np.exp(-h)),
}


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def gae(
    rewards: npt.ArrayLike,
    values: npt.ArrayLike,
    next_values: npt.ArrayLike,
    terminated: npt.ArrayLike,
    truncated: npt.ArrayLike,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation on time-major arrays (docs/DESIGN.md §2)::

        delta[t] = rewards[t] + gamma * (1 - terminated[t]) * next_values[t] - values[t]
        adv[t]   = delta[t] + gamma * lam * (1 - (terminated[t] or truncated[t])) * adv[t+1]
        returns  = adv + values

    Truncation bootstraps through ``next_values`` (pass V(final observation), never V(reset
    observation)); termination does not; either one cuts the lambda-trace.

    Args:
        rewards: ``(T, N)`` float32 or float64.
        values: ``(T, N)`` V(s_t), float32 or float64.
        next_values: ``(T, N)`` V of the true successor state of step t; at the last step the
            bootstrap V(s_T).
        terminated: ``(T, N)`` bool (or integer 0/1).
        truncated: ``(T, N)`` bool (or integer 0/1).
        gamma: discount in [0, 1].
        lam: GAE lambda in [0, 1].

    Returns:
        ``(advantages, returns)``, fresh ``(T, N)`` C-contiguous arrays of the common float dtype.

    Raises:
        ValueError: wrong ndim, mismatched shapes, empty arrays, non-float data, non-0/1 flags,
            gamma or lam outside [0, 1] or NaN.
    """
    gamma_f = _check_discount("gamma", gamma)
    lam_f = _check_discount("lam", lam)
    r = _as_float_array("rewards", rewards)
    v = _as_float_array("values", values)
    nv = _as_float_array("next_values", next_values)
    if r.ndim != 2:
        raise ValueError(f"rewards must be 2-D (T, N) time-major, got shape {r.shape}")
    for name, arr in (("values", v), ("next_values", nv)):
        if arr.shape != r.shape:
            raise ValueError(f"{name} must have the shape of rewards {r.shape}, got {arr.shape}")
    term = _as_flag_array("terminated", terminated)
    trunc = _as_flag_array("truncated", truncated)
    for name, arr in (("terminated", term), ("truncated", trunc)):
        if arr.shape != r.shape:
            raise ValueError(f"{name} must have the shape of rewards {r.shape}, got {arr.shape}")
    if r.size == 0:
        raise ValueError(f"gae needs at least one step and one env, got shape {r.shape}")
    dtype = r.dtype if r.dtype == v.dtype == nv.dtype else np.result_type(r.dtype, v.dtype, nv.dtype)
    r, v, nv = _contiguous(r, dtype), _contiguous(v, dtype), _contiguous(nv, dtype)
    return _gae_impl(r, v, nv, term, trunc, gamma_f, lam_f)


def disc_rewards(logits: npt.ArrayLike, kind: DiscRewardKind | str) -> np.ndarray:
    """Rewards from discriminator logits (``logit = log D - log(1 - D)``, D = P(expert)).

    ``gail``: ``softplus(logit) = -log(1 - D)`` (>= 0); ``airl``: ``logit``;
    ``neg``: ``-softplus(-logit) = log D`` (<= 0). Finite and accurate for any finite logit
    (stable form ``max(x, 0) + log1p(exp(-|x|))``, no ``log(sigmoid(x))``).

    Args:
        logits: float32 or float64 array of any non-empty shape.
        kind: ``"gail"``, ``"airl"`` or ``"neg"``.

    Returns:
        A fresh array with the shape and dtype of ``logits``.

    Raises:
        ValueError: unknown kind, non-float or empty logits.
    """
    if kind not in DISC_REWARD_KINDS:
        raise ValueError(f"kind must be one of {DISC_REWARD_KINDS}, got {kind!r}")
    x = _as_float_array("logits", logits)
    if x.size == 0:
        raise ValueError(f"logits must not be empty, got shape {x.shape}")
    x = _contiguous(x, x.dtype)
    return _disc_rewards_impl(x, str(kind))


def normalize(x: npt.ArrayLike, mean: npt.ArrayLike, var: npt.ArrayLike, clip: float) -> np.ndarray:
    """Apply frozen statistics: ``clip((x - mean) / sqrt(var + NORM_EPSILON), -clip, clip)`` as float32.

    The one implementation of observation normalisation (docs/DESIGN.md §2): training, checkpoint
    loading, :class:`~gail_robot.policy_io.PolicyBundle`, the rollout workers' NumPy policy and
    :meth:`RunningMeanStd.normalize` all call it; the exported TorchScript module mirrors it in torch.
    Computed in float64 (C++ kernel), equal bit for bit to :func:`normalize_reference`.

    Args:
        x: ``(..., D)`` float32/float64 (or integer) observations.
        mean: ``(D,)`` mean.
        var: ``(D,)`` variance (>= 0).
        clip: positive clip bound.

    Returns:
        float32 array with the shape of ``x``.

    Raises:
        ValueError: mismatched widths, non-positive or NaN ``clip``, unsupported dtype.
    """
    mean_arr = np.ascontiguousarray(mean, dtype=np.float64).reshape(-1)
    var_arr = np.ascontiguousarray(var, dtype=np.float64).reshape(-1)
    if mean_arr.shape != var_arr.shape:
        raise ValueError(f"mean and var must have the same shape, got {mean_arr.shape} and {var_arr.shape}")
    arr = np.asarray(x)
    if arr.dtype.kind in "iub":
        arr = arr.astype(np.float64)
    elif arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
        raise ValueError(f"x must be a float32/float64 (or integer) array, got dtype {arr.dtype}")
    width = mean_arr.shape[0]
    if arr.ndim < 1 or arr.shape[-1] != width:
        raise ValueError(f"x must have shape (..., {width}), got {arr.shape}")
    clip_f = float(clip)
    if not clip_f > 0.0:  # also refuses NaN
        raise ValueError(f"clip must be > 0, got {clip}")
    flat = _contiguous(arr, arr.dtype).reshape(-1, width)
    return _rms_normalize_impl(flat, mean_arr, var_arr, clip_f).reshape(arr.shape)


#: the hidden activations :func:`mlp_forward` implements
MLP_ACTIVATIONS = ("tanh", "relu", "elu", "silu")


def mlp_forward(
    x: npt.ArrayLike, layers: list[tuple[np.ndarray, np.ndarray]], activations: list[str]
) -> np.ndarray:
    """An MLP's output for each row of ``x``, independent of the batch it is in (docs/DESIGN.md §9).

    ``h = x; h = act_i(h @ W_i + b_i)`` with no activation after the last layer, in float32, each sum
    taken in one fixed order (C++ kernel). Unlike ``x @ W`` (BLAS), a row's result does not depend on
    how many other rows are in the batch, which keeps rollouts bit-identical across vectorisations.

    Args:
        x: ``(M, D)`` inputs (converted to float32).
        layers: ``[(W (in, out), b (out,)), ...]``.
        activations: one of :data:`MLP_ACTIVATIONS` per hidden layer (``len(layers) - 1`` names).

    Returns:
        ``(M, out)`` float32.
    """
    arr = _contiguous(np.asarray(x, dtype=np.float32), np.dtype(np.float32))
    if arr.ndim != 2:
        raise ValueError(f"x must have shape (M, D), got {arr.shape}")
    weights = [_contiguous(np.asarray(w, dtype=np.float32), np.dtype(np.float32)) for w, _ in layers]
    biases = [_contiguous(np.asarray(b, dtype=np.float32), np.dtype(np.float32)) for _, b in layers]
    if not weights:
        raise ValueError("layers must hold at least one (W, b) pair")
    out = np.empty((arr.shape[0], weights[-1].shape[1] if weights[-1].ndim == 2 else 0), dtype=np.float32)
    _core.mlp_forward_f32(arr, weights, biases, list(activations), out)
    return out


def set_max_threads(n: int) -> None:
    """Let one kernel call use up to ``n`` threads (default 1: kernels never spawn threads).

    With ``n > 1``, GAE splits its envs and disc_rewards / normalize their elements across threads,
    but only for large arrays (at least 64k GAE elements or 128k logits per thread), so typical
    rollouts (e.g. 2048 x 16) still run on the calling thread. Results do not depend on the thread
    count. The default is 1 because on a small shared machine a second thread did not pay off (see
    the README benchmark); try ``os.cpu_count()`` on an idle many-core machine with large N.

    Raises:
        ValueError: ``n < 1``.
    """
    _core.set_max_threads(int(n))


def get_max_threads() -> int:
    """The current cap on worker threads per kernel call."""
    return _core.get_max_threads()


class RunningMeanStd:
    """Running mean and variance over a stream of batches, merged exactly (Chan et al.).

    Starts from a pseudo-count ``epsilon`` at mean 0, variance 1 (so normalising before the first
    update is the identity, and early updates are not divided by ~0). Each :meth:`update`
    computes the batch's count, mean and sum of squared deviations in one numerically stable
    pass (Welford, float64 accumulation) and merges them with the parallel update, so updating
    with batches A then B gives the statistics of ``concatenate([A, B])`` up to rounding (exactly
    those with ``epsilon=0``; otherwise the prior pseudo-sample is part of the merge). Batches are
    merged in place: do not update one instance from several threads at once.

    Args:
        shape: the shape of one sample (``()`` for scalar rewards, ``(obs_dim,)`` for observations).
        epsilon: initial pseudo-count, >= 0.
    """

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4) -> None:
        shape = tuple(int(s) for s in shape)
        if any(s <= 0 for s in shape):
            raise ValueError(f"shape must have positive sizes, got {shape}")
        eps = float(epsilon)
        if not (eps >= 0.0 and math.isfinite(eps)):
            raise ValueError(f"epsilon must be finite and >= 0, got {epsilon}")
        self._shape = shape
        self._mean = np.zeros(shape, dtype=np.float64)
        self._var = np.ones(shape, dtype=np.float64)
        self._count = eps

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one sample."""
        return self._shape

    @property
    def mean(self) -> np.ndarray:
        """Running mean, ``shape`` float64 (a copy)."""
        return self._mean.copy()

    @property
    def var(self) -> np.ndarray:
        """Running (population) variance, ``shape`` float64 (a copy)."""
        return self._var.copy()

    @property
    def count(self) -> float:
        """Number of samples seen, plus the initial pseudo-count ``epsilon``."""
        return self._count

    def _as_batch(self, name: str, x: Any) -> np.ndarray:
        arr = np.asarray(x)
        if arr.dtype.kind in "iu":
            arr = arr.astype(np.float64)
        elif arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
            raise ValueError(f"{name} must be a float32/float64 (or integer) array, got dtype {arr.dtype}")
        return arr

    def update(self, batch: npt.ArrayLike) -> None:
        """Merge a batch of samples into the running statistics.

        Args:
            batch: ``(B, *shape)`` float32/float64 (or integer), B >= 1.

        Raises:
            ValueError: wrong trailing shape, empty batch or unsupported dtype.
        """
        x = self._as_batch("batch", batch)
        if x.ndim != len(self._shape) + 1 or x.shape[1:] != self._shape:
            raise ValueError(f"batch must have shape (B, *{self._shape}), got {x.shape}")
        if x.shape[0] == 0:
            raise ValueError("batch must hold at least one sample, got B = 0")
        x = _contiguous(x, x.dtype).reshape(x.shape[0], -1)
        self._count = _rms_update_impl(x, self._mean.reshape(-1), self._var.reshape(-1), self._count)

    def normalize(self, x: npt.ArrayLike, clip: float = 10.0) -> np.ndarray:
        """:func:`normalize` with the current statistics: ``(..., *shape)`` in, float32 out.

        Args:
            x: ``(..., *shape)`` float32/float64 (or integer).
            clip: positive clip bound.
        """
        arr = self._as_batch("x", x)
        n = len(self._shape)
        if arr.ndim < n or (n and arr.shape[-n:] != self._shape):
            raise ValueError(f"x must have shape (..., *{self._shape}), got {arr.shape}")
        width = int(np.prod(self._shape))
        flat = arr.reshape(*arr.shape[: arr.ndim - n], width)
        return normalize(flat, self._mean, self._var, clip).reshape(arr.shape)

    def state_dict(self) -> dict[str, Any]:
        """The state as plain data: ``{"mean": ndarray, "var": ndarray, "count": float}``."""
        return {"mean": self._mean.copy(), "var": self._var.copy(), "count": float(self._count)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by :meth:`state_dict` (arrays may be any array-like).

        Raises:
            ValueError: missing keys, wrong shapes, negative count/variance or non-finite values.
        """
        missing = {"mean", "var", "count"} - set(state)
        if missing:
            raise ValueError(f"RunningMeanStd state is missing {sorted(missing)}")
        mean = np.array(state["mean"], dtype=np.float64)
        var = np.array(state["var"], dtype=np.float64)
        count = float(state["count"])
        for name, arr in (("mean", mean), ("var", var)):
            if arr.shape != self._shape:
                raise ValueError(f"RunningMeanStd state {name} has shape {arr.shape}, expected {self._shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"RunningMeanStd state {name} is not finite")
        if np.any(var < 0):
            raise ValueError("RunningMeanStd state var must be >= 0")
        if not (count >= 0.0 and math.isfinite(count)):
            raise ValueError(f"RunningMeanStd state count must be finite and >= 0, got {count}")
        self._mean, self._var, self._count = mean, var, count

    def copy(self) -> RunningMeanStd:
        """An independent copy."""
        other = RunningMeanStd(self._shape, epsilon=0.0)
        other.load_state_dict(self.state_dict())
        return other

    def __repr__(self) -> str:
        return f"RunningMeanStd(shape={self._shape}, count={self._count:g})"


# ----------------------------------------------------------------------------------------------
# Kernel dispatch: validated, C-contiguous, native-order arrays in; outputs allocated here.
# ----------------------------------------------------------------------------------------------


def _gae_impl(
    r: np.ndarray,
    v: np.ndarray,
    nv: np.ndarray,
    term: np.ndarray,
    trunc: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    adv = np.empty_like(r)
    ret = np.empty_like(r)
    kernel = _core.gae_f32 if r.dtype == np.float32 else _core.gae_f64
    kernel(r, v, nv, term, trunc, gamma, lam, adv, ret)
    return adv, ret


def _disc_rewards_impl(x: np.ndarray, kind: str) -> np.ndarray:
    out = np.empty_like(x)
    kernel = _core.disc_rewards_f32 if x.dtype == np.float32 else _core.disc_rewards_f64
    kernel(x.reshape(-1), kind, out.reshape(-1))
    return out


def _rms_update_impl(x: np.ndarray, mean: np.ndarray, var: np.ndarray, count: float) -> float:
    """Merge batch ``x`` ``(B, D)`` into ``mean``/``var`` ``(D,)`` float64 in place; return the new count."""
    kernel = _core.rms_update_f32 if x.dtype == np.float32 else _core.rms_update_f64
    return kernel(x, mean, var, count)


def _rms_normalize_impl(x: np.ndarray, mean: np.ndarray, var: np.ndarray, clip: float) -> np.ndarray:
    """``(M, D)`` x -> ``(M, D)`` float32, with float64 ``mean``/``var`` ``(D,)``."""
    out = np.empty(x.shape, dtype=np.float32)
    kernel = _core.rms_normalize_f32 if x.dtype == np.float32 else _core.rms_normalize_f64
    kernel(x, mean, var, clip, out)
    return out
