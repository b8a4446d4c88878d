"""gail_robot.core.RunningMeanStd: batch-merged statistics equal those of the concatenated data,
numerical stability, normalisation, state round trips and pinned errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gail_robot import _core, core


def assert_stats_of(rms: core.RunningMeanStd, data: np.ndarray) -> None:
    """rms holds the statistics of `data` (epsilon = 0), up to float64 rounding."""
    x = data.astype(np.float64)
    scale = 1.0 + float(np.abs(x).max())
    np.testing.assert_allclose(rms.mean, x.mean(axis=0), rtol=1e-12, atol=1e-13 * scale)
    np.testing.assert_allclose(rms.var, x.var(axis=0), rtol=1e-10, atol=1e-13 * scale**2)
    assert rms.count == x.shape[0]


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 70), min_size=1, max_size=6),
    shape=st.sampled_from([(), (1,), (3,), (17,), (2, 3)]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**32 - 1),
)
def test_batch_merged_statistics_equal_concatenated_statistics(
    sizes: list[int], shape: tuple[int, ...], dtype: type, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    batches: list[np.ndarray] = [
        (rng.standard_normal((b, *shape)) * 3.0 + rng.uniform(-5, 5)).astype(dtype) for b in sizes
    ]
    rms = core.RunningMeanStd(shape, epsilon=0.0)
    for batch in batches:
        rms.update(batch)
    assert_stats_of(rms, np.concatenate(batches))


def test_matches_reference_with_pseudo_count() -> None:
    rng = np.random.default_rng(0)
    rms = core.RunningMeanStd((4,))  # epsilon = 1e-4 at mean 0, var 1
    mean, var, count = np.zeros(4), np.ones(4), 1e-4
    for b in (1, 2, 33, 500):
        batch = rng.standard_normal((b, 4)) + 2.0
        rms.update(batch)
        mean, var, count = core.rms_update_reference(batch, mean, var, count)
    np.testing.assert_allclose(rms.mean, mean, rtol=1e-13)
    np.testing.assert_allclose(rms.var, var, rtol=1e-12)
    assert rms.count == pytest.approx(count, rel=1e-15)


def test_large_offset_small_spread_is_accurate() -> None:
    # mean 1e6, std 1e-2: the naive sum-of-squares formula loses every digit here; Welford does not.
    rng = np.random.default_rng(1)
    data = 1e6 + 1e-2 * rng.standard_normal((20_000, 2))
    rms = core.RunningMeanStd((2,), epsilon=0.0)
    for chunk in np.array_split(data, 7):
        rms.update(chunk)
    np.testing.assert_allclose(rms.var, data.var(axis=0), rtol=1e-6)


def test_integer_batches_and_scalar_shape() -> None:
    rms = core.RunningMeanStd((), epsilon=0.0)
    rms.update(np.arange(10))
    assert rms.mean == pytest.approx(4.5) and rms.var == pytest.approx(8.25)
    assert rms.mean.shape == () and rms.mean.dtype == np.float64


def test_properties_are_copies() -> None:
    rms = core.RunningMeanStd((2,))
    mean = rms.mean
    rms.update(np.ones((3, 2)))
    assert np.all(mean == 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_normalize_matches_reference_exactly(dtype: type) -> None:
    rng = np.random.default_rng(2)
    rms = core.RunningMeanStd((5,))
    rms.update(rng.standard_normal((64, 5)) * 4 + 1)
    x: np.ndarray = (rng.standard_normal((3, 7, 5)) * 40).astype(dtype)
    out = rms.normalize(x, clip=2.0)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_array_equal(out, core.normalize_reference(x, rms.mean, rms.var, 2.0))
    assert np.abs(out).max() == np.float32(2.0)


def test_normalize_before_any_update_is_identity_up_to_clip() -> None:
    rms = core.RunningMeanStd((3,))
    x = np.array([[0.5, -2.0, 30.0]])
    np.testing.assert_allclose(rms.normalize(x), [[0.5, -2.0, 10.0]], rtol=1e-6)


def test_state_dict_round_trip_and_copy_independence() -> None:
    rng = np.random.default_rng(3)
    rms = core.RunningMeanStd((3,))
    rms.update(rng.standard_normal((10, 3)))
    state = rms.state_dict()
    assert set(state) == {"mean", "var", "count"}
    assert isinstance(state["count"], float)
    assert all(isinstance(state[k], np.ndarray) for k in ("mean", "var"))

    restored = core.RunningMeanStd((3,))
    restored.load_state_dict(state)
    batch = rng.standard_normal((5, 3))
    rms.update(batch)
    restored.update(batch)
    np.testing.assert_array_equal(restored.mean, rms.mean)
    np.testing.assert_array_equal(restored.var, rms.var)

    twin = rms.copy()
    twin.update(batch + 100)
    assert not np.allclose(twin.mean, rms.mean)
    state["mean"][:] = 1e9  # the state dict is a snapshot, not a view of the live statistics
    assert np.all(np.abs(rms.mean) < 1e3)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"mean": np.zeros(3), "var": np.ones(3)}, r"RunningMeanStd state is missing \['count'\]"),
        (
            {"mean": np.zeros(2), "var": np.ones(3), "count": 1.0},
            r"state mean has shape \(2,\), expected \(3,\)",
        ),
        ({"mean": np.zeros(3), "var": -np.ones(3), "count": 1.0}, "RunningMeanStd state var must be >= 0"),
        (
            {"mean": np.full(3, np.nan), "var": np.ones(3), "count": 1.0},
            "RunningMeanStd state mean is not finite",
        ),
        (
            {"mean": np.zeros(3), "var": np.ones(3), "count": -1.0},
            "state count must be finite and >= 0, got -1.0",
        ),
    ],
)
def test_load_state_dict_rejects_bad_state(state: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        core.RunningMeanStd((3,)).load_state_dict(state)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.update(np.zeros((4, 2))), r"^batch must have shape \(B, \*\(3,\)\), got \(4, 2\)$"),
        (lambda r: r.update(np.zeros(3)), r"^batch must have shape \(B, \*\(3,\)\), got \(3,\)$"),
        (lambda r: r.update(np.zeros((0, 3))), "^batch must hold at least one sample, got B = 0$"),
        (
            lambda r: r.update(np.zeros((2, 3), bool)),
            r"^batch must be a float32/float64 \(or integer\) array",
        ),
        (lambda r: r.normalize(np.zeros((2, 4))), r"^x must have shape \(\.\.\., \*\(3,\)\), got \(2, 4\)$"),
        (lambda r: r.normalize(np.zeros(3), clip=0.0), "^clip must be > 0, got 0.0$"),
    ],
)
def test_bad_input_raises_clear_value_error(call: object, message: str) -> None:
    rms = core.RunningMeanStd((3,))
    with pytest.raises(ValueError, match=message):
        call(rms)  # type: ignore[operator]


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match=r"^shape must have positive sizes, got \(3, 0\)$"):
        core.RunningMeanStd((3, 0))
    with pytest.raises(ValueError, match=r"^epsilon must be finite and >= 0, got -1\.0$"):
        core.RunningMeanStd((3,), epsilon=-1.0)


def test_cpp_checks_sizes_itself() -> None:
    with pytest.raises(ValueError, match=r"^var\.size should be 3, got 2$"):
        _core.rms_update_f64(np.zeros((2, 3)), np.zeros(3), np.ones(2), 1.0)
    with pytest.raises(ValueError, match=r"^batch\.shape\[0\] should be >= 1, got 0$"):
        _core.rms_update_f64(np.zeros((0, 3)), np.zeros(3), np.ones(3), 1.0)
    with pytest.raises(ValueError, match=r"^out\.size should be 6, got 3$"):
        _core.rms_normalize_f64(np.zeros((2, 3)), np.zeros(3), np.ones(3), 5.0, np.empty(3, np.float32))


def test_threaded_normalize_matches_reference() -> None:
    rng = np.random.default_rng(4)
    rms = core.RunningMeanStd((5,))
    rms.update(rng.standard_normal((100, 5)))
    x = rng.standard_normal((20_000, 5)) * 3
    default = core.get_max_threads()
    try:
        core.set_max_threads(3)  # 20k rows: three chunks of at least 4096 rows
        out = rms.normalize(x)
    finally:
        core.set_max_threads(default)
    np.testing.assert_array_equal(out, core.normalize_reference(x, rms.mean, rms.var, 10.0))


def test_set_max_threads_rejects_zero() -> None:
    with pytest.raises(ValueError, match=r"^max_threads should be >= 1, got 0$"):
        core.set_max_threads(0)
    assert core.get_max_threads() >= 1


def test_normalize_with_frozen_statistics_equals_reference_and_hand_case() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 7, 4)).astype(np.float32) * 30
    mean = rng.normal(size=4)
    var = rng.uniform(0.0, 3.0, size=4)
    var[0] = 0.0  # the epsilon floor keeps a constant feature finite
    out = core.normalize(x, mean, var, 5.0)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_array_equal(out, core.normalize_reference(x, mean, var, 5.0))
    # hand case: (3 - 1) / sqrt(4 + 1e-8) = 0.99999999875 -> float32 1.0; clipped at +-2
    got = core.normalize(np.array([[3.0, 100.0]]), np.array([1.0, 0.0]), np.array([4.0, 1.0]), 2.0)
    np.testing.assert_array_equal(got, np.array([[1.0, 2.0]], dtype=np.float32))
    assert core.NORM_EPSILON == 1e-8


@pytest.mark.parametrize("clip", [0.0, -1.0, float("nan")])
def test_normalize_refuses_a_bad_clip(clip: float) -> None:
    with pytest.raises(ValueError, match="clip must be > 0"):
        core.normalize(np.zeros((2, 3)), np.zeros(3), np.ones(3), clip)


def test_normalize_refuses_mismatched_widths() -> None:
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\)"):
        core.normalize(np.zeros((2, 4)), np.zeros(3), np.ones(3), 5.0)
