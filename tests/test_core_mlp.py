"""core.mlp_forward: the C++ kernel vs its NumPy reference; a row's result does not depend on its batch."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from gail_robot import core


def _layers(rng: np.random.Generator, sizes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (
            (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
            rng.standard_normal(b).astype(np.float32),
        )
        for a, b in itertools.pairwise(sizes)
    ]


@pytest.mark.parametrize("sizes", [[11, 64, 64, 3], [17, 256, 256, 6], [5, 7], [348, 33, 17]])
def test_relu_mlp_matches_reference_bit_for_bit(sizes):
    rng = np.random.default_rng(len(sizes) * 100 + sizes[0])
    layers = _layers(rng, sizes)
    x = rng.standard_normal((13, sizes[0])).astype(np.float32)
    acts = ["relu"] * (len(layers) - 1)
    np.testing.assert_array_equal(
        core.mlp_forward(x, layers, acts), core.mlp_forward_reference(x, layers, acts)
    )


@pytest.mark.parametrize("act", core.MLP_ACTIVATIONS)
def test_activations_match_reference_and_torch(act):
    rng = np.random.default_rng(1)
    layers = _layers(rng, [11, 64, 64, 3])
    x = rng.uniform(-3, 3, (40, 11)).astype(np.float32)
    got = core.mlp_forward(x, layers, [act, act])
    np.testing.assert_allclose(got, core.mlp_forward_reference(x, layers, [act, act]), rtol=1e-5, atol=1e-6)
    torch_act = {
        "tanh": torch.tanh,
        "relu": torch.relu,
        "elu": torch.nn.functional.elu,
        "silu": torch.nn.functional.silu,
    }
    h = torch.from_numpy(x)
    for i, (w, b) in enumerate(layers):
        h = h @ torch.from_numpy(w) + torch.from_numpy(b)
        if i < 2:
            h = torch_act[act](h)
    np.testing.assert_allclose(got, h.numpy(), rtol=1e-5, atol=1e-5)


def test_a_rows_result_does_not_depend_on_its_batch():
    """What BLAS does not give: the same row in batches of 1, 3, 8 and 64 rows is the same bits."""
    rng = np.random.default_rng(2)
    layers = _layers(rng, [17, 256, 256, 6])
    x = rng.standard_normal((64, 17)).astype(np.float32)
    full = core.mlp_forward(x, layers, ["tanh", "tanh"])
    for size in (1, 3, 8):
        for start in range(0, 64, size):
            part = core.mlp_forward(x[start : start + size], layers, ["tanh", "tanh"])
            np.testing.assert_array_equal(part, full[start : start + size])


def test_thread_count_does_not_change_results():
    rng = np.random.default_rng(3)
    layers = _layers(rng, [11, 64, 64, 3])
    x = rng.standard_normal((2048, 11)).astype(np.float32)
    one = core.mlp_forward(x, layers, ["tanh", "tanh"])
    before = core.get_max_threads()
    core.set_max_threads(4)
    try:
        np.testing.assert_array_equal(core.mlp_forward(x, layers, ["tanh", "tanh"]), one)
    finally:
        core.set_max_threads(before)


def test_bad_shapes_and_names_raise_value_error():
    rng = np.random.default_rng(4)
    layers = _layers(rng, [4, 8, 2])
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="activation"):
        core.mlp_forward(x, layers, ["gelu"])
    with pytest.raises(ValueError, match="activations"):
        core.mlp_forward(x, layers, [])
    with pytest.raises(ValueError, match=r"weights\[0\]"):
        core.mlp_forward(np.zeros((3, 5), np.float32), layers, ["tanh"])
    with pytest.raises(ValueError, match="at least one"):
        core.mlp_forward(x, [], [])
