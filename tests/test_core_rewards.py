"""gail_robot.core.disc_rewards: accuracy against a float64 truth for logits up to |1e6|, the sign
conventions of docs/DESIGN.md §2, layouts and pinned errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gail_robot import _core, core

KINDS = ("gail", "airl", "neg")
SPECIAL = np.array([-1e6, -50.0, -1.0, 0.0, 1.0, 50.0, 1e6])


def truth(logits: np.ndarray, kind: str) -> np.ndarray:
    """Float64 ground truth written independently of the kernel's formula (np.logaddexp)."""
    x = logits.astype(np.float64)
    if kind == "gail":
        return np.logaddexp(0.0, x)  # log(1 + e^x) = softplus(x)
    if kind == "neg":
        return -np.logaddexp(0.0, -x)
    return x


def random_logits(rng: np.random.Generator, n: int) -> np.ndarray:
    """Logits with magnitudes spread log-uniformly from 1e-8 to 1e6, both signs."""
    return np.asarray(rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(-8, 6, n))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_float64_truth_within_a_few_ulp(kind: str, dtype: type) -> None:
    rng = np.random.default_rng(0)
    # Specials, random magnitudes, a dense sweep of the curved part, and the range where the reward
    # underflows through the subnormals (float32: x < -87, float64: x < -708).
    subnormal = np.linspace(-105, -86, 2001) if dtype == np.float32 else np.linspace(-746, -707, 2001)
    parts = [SPECIAL, random_logits(rng, 10_000), np.linspace(-40, 40, 20_001), subnormal]
    x: np.ndarray = np.concatenate(parts).astype(dtype)
    out = core.disc_rewards(x, kind)
    assert out.dtype == dtype and out.shape == x.shape
    assert np.all(np.isfinite(out))
    # The best any implementation can do is the truth rounded to the dtype. The kernel's own error is
    # below 2 ulp (measured against 50-digit mpmath); 3 leaves room for the rounding of the truth.
    np.testing.assert_array_max_ulp(out, truth(x, kind).astype(dtype), maxulp=3)
    np.testing.assert_array_max_ulp(out, core.disc_rewards_reference(x, kind), maxulp=4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(dtype: type) -> None:
    x: np.ndarray = SPECIAL.astype(dtype)
    gail = core.disc_rewards(x, "gail")
    neg = core.disc_rewards(x, "neg")
    np.testing.assert_array_equal(core.disc_rewards(x, "airl"), x)
    assert gail[0] == 0.0 and gail[-1] == 1e6  # softplus(-1e6) underflows to 0, softplus(1e6) = 1e6
    assert neg[0] == -1e6 and neg[-1] == 0.0
    np.testing.assert_allclose(gail[3], np.log(2.0), rtol=1e-7)
    np.testing.assert_allclose(gail[1], np.exp(-50.0), rtol=1e-6)  # tiny tail kept to full precision


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_logits(dtype: type) -> None:
    x: np.ndarray = np.array([-np.inf, np.inf, np.nan], dtype=dtype)
    np.testing.assert_array_equal(core.disc_rewards(x, "gail"), [0.0, np.inf, np.nan])
    np.testing.assert_array_equal(core.disc_rewards(x, "neg"), [-np.inf, 0.0, np.nan])


@settings(max_examples=50, deadline=None)
@given(
    x=hnp.arrays(
        st.sampled_from([np.float32, np.float64]),
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=8),
        elements=st.floats(-1e6, 1e6, width=32),
    )
)
def test_property_signs_and_identities(x: np.ndarray) -> None:
    gail = core.disc_rewards(x, "gail")
    neg = core.disc_rewards(x, "neg")
    airl = core.disc_rewards(x, "airl")
    assert np.all(gail >= 0) and np.all(neg <= 0)
    assert np.all(np.isfinite(gail)) and np.all(np.isfinite(neg))
    # log D = -softplus(-x) exactly mirrors the gail reward of -x.
    np.testing.assert_array_equal(neg, -core.disc_rewards(-x, "gail"))
    # softplus(x) - softplus(-x) = x  (log D - log(1 - D) = logit, the AIRL reward).
    np.testing.assert_allclose(gail + neg, airl, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_max_ulp(gail, truth(x, "gail").astype(x.dtype), maxulp=3)


def test_shapes_layouts_and_fresh_output() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6, 5)).astype(np.float32)
    expected = core.disc_rewards(x, "gail")
    np.testing.assert_array_equal(core.disc_rewards(np.asfortranarray(x), "gail"), expected)
    np.testing.assert_array_equal(core.disc_rewards(x[:, ::2], "gail"), expected[:, ::2])
    np.testing.assert_array_equal(core.disc_rewards(x.astype(">f4"), "gail"), expected)
    airl = core.disc_rewards(x, "airl")
    assert not np.shares_memory(airl, x)
    scalar = core.disc_rewards(np.float64(2.0), "gail")
    assert scalar.shape == () and scalar.dtype == np.float64


def test_large_arrays_use_threads_without_changing_results() -> None:
    x = random_logits(np.random.default_rng(2), 100_000).astype(np.float32)
    default = _core.get_max_threads()
    try:
        _core.set_max_threads(1)
        single = core.disc_rewards(x, "neg")
        _core.set_max_threads(4)
        multi = core.disc_rewards(x, "neg")
    finally:
        _core.set_max_threads(default)
    np.testing.assert_array_equal(single, multi)


@pytest.mark.parametrize(
    ("logits", "kind", "message"),
    [
        (np.zeros(3), "wgan", r"kind must be one of \('gail', 'airl', 'neg'\), got 'wgan'"),
        (np.zeros(3, np.int32), "gail", "logits must be a float32 or float64 array, got dtype int32"),
        ([1, 2], "gail", "logits must be a float32 or float64 array, got dtype int64"),
        (np.zeros((0, 3)), "gail", r"logits must not be empty, got shape \(0, 3\)"),
    ],
)
def test_bad_input_raises_clear_value_error(logits: object, kind: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        core.disc_rewards(logits, kind)  # type: ignore[arg-type]


def test_cpp_checks_kind_and_sizes_itself() -> None:
    x = np.zeros(5)
    with pytest.raises(ValueError, match=r"^kind should be one of 'gail', 'airl', 'neg', got 'GAIL'$"):
        _core.disc_rewards_f64(x, "GAIL", np.empty_like(x))
    with pytest.raises(ValueError, match=r"^out\.size should be 5, got 4$"):
        _core.disc_rewards_f64(x, "gail", np.empty(4))
