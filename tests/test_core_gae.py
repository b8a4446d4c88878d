"""gail_robot.core.gae: the C++ kernel against the NumPy reference, a hand-computed case, the
truncation/termination semantics of docs/DESIGN.md §2 and the input policy (pinned error messages)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gail_robot import _core, core

GAMMA, LAM = 0.99, 0.95

Inputs = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def call(fn: Any, args: Sequence[Any], gamma: Any, lam: Any) -> tuple[np.ndarray, np.ndarray]:
    """fn(rewards, values, next_values, terminated, truncated, gamma, lam) from a 5-sequence."""
    r, v, nv, term, trunc = args
    out: tuple[np.ndarray, np.ndarray] = fn(r, v, nv, term, trunc, gamma, lam)
    return out


def make_inputs(
    rng: np.random.Generator, steps: int, envs: int, dtype: type, term: str, trunc: str
) -> Inputs:
    rewards: np.ndarray
    values: np.ndarray
    next_values: np.ndarray
    rewards, values, next_values = (
        rng.standard_normal((steps, envs), dtype=np.float64).astype(dtype) for _ in range(3)
    )

    def flags(mode: str) -> np.ndarray:
        if mode == "none":
            return np.zeros((steps, envs), dtype=bool)
        if mode == "all":
            return np.ones((steps, envs), dtype=bool)
        return rng.random((steps, envs)) < 0.1

    return rewards, values, next_values, flags(term), flags(trunc)


def assert_matches_reference(args: Inputs, gamma: float, lam: float) -> None:
    adv, ret = core.gae(*args, gamma, lam)
    ref_adv, ref_ret = core.gae_reference(*args, gamma, lam)
    assert adv.dtype == ret.dtype == args[0].dtype
    assert adv.shape == ret.shape == args[0].shape
    if args[0].dtype == np.float64:
        # Same operations in the same order, no FMA contraction: bit-identical.
        np.testing.assert_array_equal(adv, ref_adv)
        np.testing.assert_array_equal(ret, ref_ret)
    else:
        # float32 accumulation vs the float64 reference: errors grow with the horizon 1 / (1 - gamma*lam).
        scale = 1.0 + float(np.abs(ref_adv).max())
        np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=2e-6 * scale)
        np.testing.assert_allclose(ret, ref_ret, rtol=1e-5, atol=2e-6 * scale)


GRID = list(
    itertools.product(
        [1, 2, 7, 2048],  # T
        [1, 3, 64],  # N
        ["random", "none", "all"],  # terminated
        ["random", "none", "all"],  # truncated
        [np.float32, np.float64],
    )
)


@pytest.mark.parametrize(("steps", "envs", "term", "trunc", "dtype"), GRID)
def test_gae_matches_reference_on_grid(steps: int, envs: int, term: str, trunc: str, dtype: type) -> None:
    rng = np.random.default_rng(steps * 1000 + envs)
    assert_matches_reference(make_inputs(rng, steps, envs, dtype, term, trunc), GAMMA, LAM)


@pytest.mark.parametrize("envs", [*range(1, 21), 31, 33])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_env_width_path_matches_reference(envs: int, dtype: type) -> None:
    # Narrow rollouts run register-carried groups of 8 / 4 / 1 envs, wide ones a row loop with a
    # vector body and a scalar tail: every width from 1 to 20 (and around 32) crosses each path.
    rng = np.random.default_rng(envs)
    assert_matches_reference(make_inputs(rng, 97, envs, dtype, "random", "random"), GAMMA, LAM)


def test_gae_hand_computed() -> None:
    # One env, 4 steps, gamma = 0.5, lam = 0.5 (gamma * lam = 0.25):
    # t=0 plain, t=1 truncated (bootstrap V(final obs) = 10), t=2 plain,
    # t=3 terminated (its next value 99 is ignored).
    r = np.array([[1.0], [2.0], [3.0], [4.0]])
    v = np.array([[0.5], [1.0], [2.0], [3.0]])
    nv = np.array([[1.0], [10.0], [3.0], [99.0]])
    term = np.array([[False], [False], [False], [True]])
    trunc = np.array([[False], [True], [False], [False]])
    # delta = r + 0.5 * (1 - term) * nv - v
    #   t3: 4 + 0 - 3 = 1;  t2: 3 + 1.5 - 2 = 2.5;  t1: 2 + 5 - 1 = 6;  t0: 1 + 0.5 - 0.5 = 1
    # adv: t3 = 1 (terminal);  t2 = 2.5 + 0.25 * 1 = 2.75;
    #      t1 = 6 (truncated: trace cut);  t0 = 1 + 0.25 * 6 = 2.5
    adv, ret = core.gae(r, v, nv, term, trunc, 0.5, 0.5)
    np.testing.assert_array_equal(adv[:, 0], [2.5, 6.0, 2.75, 1.0])
    np.testing.assert_array_equal(ret[:, 0], [3.0, 7.0, 4.75, 4.0])


def test_truncation_bootstraps_and_termination_does_not() -> None:
    ones = np.ones((1, 2))
    no = np.zeros((1, 2), dtype=bool)
    yes = np.ones((1, 2), dtype=bool)
    nv = np.array([[5.0, 5.0]])
    adv_trunc, _ = core.gae(ones, 0 * ones, nv, no, yes, 0.9, 0.9)
    adv_term, _ = core.gae(ones, 0 * ones, nv, yes, no, 0.9, 0.9)
    np.testing.assert_allclose(adv_trunc, 1.0 + 0.9 * 5.0)
    np.testing.assert_allclose(adv_term, 1.0)


def test_terminated_next_values_are_never_read() -> None:
    # Whatever sits in next_values at a terminal step (even NaN) must not leak into the result.
    rng = np.random.default_rng(1)
    r, v, nv, term, trunc = make_inputs(rng, 50, 8, np.float32, "random", "random")
    nv_nan = nv.copy()
    nv_nan[term] = np.nan
    a1, r1 = core.gae(r, v, nv, term, trunc, GAMMA, LAM)
    a2, r2 = core.gae(r, v, nv_nan, term, trunc, GAMMA, LAM)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(r1, r2)


def test_lambda_limits() -> None:
    rng = np.random.default_rng(2)
    r, v, nv, term, trunc = make_inputs(rng, 30, 4, np.float64, "random", "random")
    # lam = 0: one-step TD error.
    adv0, _ = core.gae(r, v, nv, term, trunc, GAMMA, 0.0)
    np.testing.assert_allclose(adv0, r + GAMMA * np.where(term, 0.0, nv) - v, rtol=1e-12, atol=1e-12)
    # lam = 1, no cuts, values = next_values = 0: returns are discounted reward-to-go.
    zeros = np.zeros_like(r)
    flags = np.zeros(r.shape, dtype=bool)
    _, ret = core.gae(r, zeros, zeros, flags, flags, GAMMA, 1.0)
    expected = np.zeros_like(r)
    acc = np.zeros(r.shape[1])
    for t in range(r.shape[0] - 1, -1, -1):
        acc = r[t] + GAMMA * acc
        expected[t] = acc
    np.testing.assert_allclose(ret, expected, rtol=1e-12)


def test_threaded_and_single_threaded_results_are_identical() -> None:
    # 128 x 1024 = 131k elements: large enough to split across threads on a multi-core machine.
    rng = np.random.default_rng(3)
    args = make_inputs(rng, 128, 1024, np.float32, "random", "random")
    default = _core.get_max_threads()
    try:
        _core.set_max_threads(1)
        single = core.gae(*args, GAMMA, LAM)
        _core.set_max_threads(4)
        multi = core.gae(*args, GAMMA, LAM)
    finally:
        _core.set_max_threads(default)
    np.testing.assert_array_equal(single[0], multi[0])
    np.testing.assert_array_equal(single[1], multi[1])


@settings(max_examples=60, deadline=None)
@given(
    shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
    dtype=st.sampled_from([np.float32, np.float64]),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
    term_p=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
    trunc_p=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
)
def test_gae_property_matches_reference(
    shape: tuple[int, int], dtype: type, gamma: float, lam: float, seed: int, term_p: float, trunc_p: float
) -> None:
    rng = np.random.default_rng(seed)
    r: np.ndarray
    v: np.ndarray
    nv: np.ndarray
    r, v, nv = (np.asarray(rng.uniform(-100, 100, shape), dtype=dtype) for _ in range(3))
    term = rng.random(shape) < term_p
    trunc = rng.random(shape) < trunc_p
    assert_matches_reference((r, v, nv, term, trunc), gamma, lam)


@settings(max_examples=30, deadline=None)
@given(
    rewards=hnp.arrays(
        np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=20), elements=st.floats(-1e6, 1e6)
    )
)
def test_gae_property_returns_equal_advantages_plus_values(rewards: np.ndarray) -> None:
    values = np.flip(rewards, axis=0).copy()
    flags = np.zeros(rewards.shape, dtype=bool)
    adv, ret = core.gae(rewards, values, values, flags, flags, GAMMA, LAM)
    np.testing.assert_array_equal(ret, adv + values)


# ---- input policy ------------------------------------------------------------------------------


def base_inputs() -> Inputs:
    rng = np.random.default_rng(4)
    return make_inputs(rng, 6, 5, np.float32, "random", "random")


def test_non_contiguous_and_foreign_layouts_are_copied_not_misread() -> None:
    args = base_inputs()
    expected = core.gae(*args, GAMMA, LAM)
    big = [np.repeat(a, 2, axis=1) for a in args]
    strided = [a[:, ::2] for a in big]  # non-contiguous views holding the same values
    fortran = [np.asfortranarray(a) for a in args]
    swapped = [a.astype(a.dtype.newbyteorder(">")) if a.dtype.kind == "f" else a for a in args]
    for variant in (strided, fortran, swapped):
        got = call(core.gae, variant, GAMMA, LAM)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
        assert got[0].flags.c_contiguous and got[0].dtype == np.float32


def test_integer_flags_are_accepted_and_mixed_floats_promote() -> None:
    r, v, nv, term, trunc = base_inputs()
    expected = core.gae(r, v, nv, term, trunc, GAMMA, LAM)
    got = core.gae(r, v, nv, term.astype(np.uint8), trunc.astype(np.int64), GAMMA, LAM)
    np.testing.assert_array_equal(got[0], expected[0])
    adv64, _ = core.gae(r, v.astype(np.float64), nv, term, trunc, GAMMA, LAM)
    assert adv64.dtype == np.float64


def test_outputs_are_fresh_arrays() -> None:
    args = base_inputs()
    adv, ret = core.gae(*args, GAMMA, LAM)
    for a in args:
        assert not np.shares_memory(adv, a) and not np.shares_memory(ret, a)


def _replace(index: int, value: object) -> list[object]:
    args: list[object] = list(base_inputs())
    args[index] = value
    return args


ERROR_CASES = [
    (
        _replace(0, np.zeros(6, np.float32)),
        GAMMA,
        LAM,
        r"rewards must be 2-D \(T, N\) time-major, got shape \(6,\)",
    ),
    (
        _replace(1, np.zeros((6, 4), np.float32)),
        GAMMA,
        LAM,
        r"values must have the shape of rewards \(6, 5\), got \(6, 4\)",
    ),
    (
        _replace(2, np.zeros((5, 5), np.float32)),
        GAMMA,
        LAM,
        r"next_values must have the shape of rewards \(6, 5\), got \(5, 5\)",
    ),
    (
        _replace(3, np.zeros((6, 1), bool)),
        GAMMA,
        LAM,
        r"terminated must have the shape of rewards \(6, 5\), got \(6, 1\)",
    ),
    (
        _replace(0, np.zeros((6, 5), np.int64)),
        GAMMA,
        LAM,
        "rewards must be a float32 or float64 array, got dtype int64",
    ),
    (
        _replace(1, np.zeros((6, 5), np.float16)),
        GAMMA,
        LAM,
        "values must be a float32 or float64 array, got dtype float16",
    ),
    (
        _replace(3, np.zeros((6, 5), np.float32)),
        GAMMA,
        LAM,
        r"terminated must be a bool array \(or integer 0/1\), got dtype float32",
    ),
    (
        _replace(4, np.full((6, 5), 2, np.uint8)),
        GAMMA,
        LAM,
        "truncated must hold only 0 and 1 when given as integers",
    ),
    (base_inputs(), float("nan"), LAM, "gamma must be in \\[0, 1\\], got nan"),
    (base_inputs(), 1.5, LAM, "gamma must be in \\[0, 1\\], got 1.5"),
    (base_inputs(), GAMMA, -0.1, "lam must be in \\[0, 1\\], got -0.1"),
    (base_inputs(), "0.9", LAM, "gamma must be a number in \\[0, 1\\], got '0.9'"),
    (
        [np.zeros((0, 5), np.float32)] * 3 + [np.zeros((0, 5), bool)] * 2,
        GAMMA,
        LAM,
        r"gae needs at least one step and one env, got shape \(0, 5\)",
    ),
]


@pytest.mark.parametrize(("args", "gamma", "lam", "message"), ERROR_CASES)
def test_bad_input_raises_clear_value_error(
    args: list[object], gamma: object, lam: object, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        call(core.gae, args, gamma, lam)


def test_cpp_checks_sizes_itself() -> None:
    r, v, nv, term, trunc = base_inputs()
    with pytest.raises(ValueError, match=r"^advantages\.size should be 30, got 4$"):
        _core.gae_f32(r, v, nv, term, trunc, GAMMA, LAM, np.empty(4, np.float32), np.empty_like(r))
    with pytest.raises(ValueError, match=r"^next_values\.size should be 30, got 29$"):
        _core.gae_f32(r, v, nv.ravel()[:29], term, trunc, GAMMA, LAM, np.empty_like(r), np.empty_like(r))
    with pytest.raises(ValueError, match=r"^rewards\.ndim should be 2, got 1$"):
        _core.gae_f32(r.ravel(), v, nv, term, trunc, GAMMA, LAM, np.empty_like(r), np.empty_like(r))
