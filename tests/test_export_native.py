"""The native MLP records of pt2 packages (gail_robot.export.native): layout checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gail_robot.export import native
from gail_robot.export.module import ExportedPolicy
from gail_robot.nets import GaussianActor, NetConfig, TanhGaussianActor


def wrap(actor: nn.Module, obs_dim: int = 3, act_dim: int = 2) -> ExportedPolicy:
    mean = np.arange(obs_dim, dtype=np.float64) * 0.5
    var = np.full(obs_dim, 4.0)
    return ExportedPolicy(
        actor, mean, var, 7.0, -np.ones(act_dim, np.float32), 2 * np.ones(act_dim, np.float32)
    )


def test_fnv1a64_known_values() -> None:
    # Published FNV-1a 64 test vectors (Fowler/Noll/Vo): "" and "a".
    assert native.fnv1a64(b"") == "cbf29ce484222325"
    assert native.fnv1a64(b"a") == "af63dc4c8601ec8c"


@pytest.mark.parametrize("squashed", [False, True])
def test_blob_layout_by_hand(squashed: bool) -> None:
    torch.manual_seed(0)
    config = NetConfig([4], "elu")
    actor = TanhGaussianActor(3, 2, config) if squashed else GaussianActor(3, 2, config)
    module = wrap(actor)
    description, blob = native.native_records(module)
    out = 4 if squashed else 2
    assert description["layers"] == [{"n_in": 3, "n_out": 4}, {"n_in": 4, "n_out": out}]
    assert description["activations"] == ["elu"] and description["tanh_head"] is squashed
    assert description["obs_clip"] == 7.0 and description["blob_fnv1a64"] == native.fnv1a64(blob)
    # 2*3 float64 + 3*2 float32 + (3*4 + 4) + (4*out + out) float32
    assert description["blob_bytes"] == len(blob) == 48 + 24 + 4 * (16 + 5 * out)
    stats = np.frombuffer(blob[:48], "<f8")
    np.testing.assert_array_equal(stats[:3], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(stats[3:], 2.0, rtol=1e-8)  # sqrt(4 + eps)
    np.testing.assert_array_equal(np.frombuffer(blob[48:72], "<f4"), [-1, -1, 2, 2, 3, 3])
    net = actor.net if squashed else actor.mean_net
    w0 = np.frombuffer(blob[72 : 72 + 48], "<f4").reshape(3, 4)
    np.testing.assert_array_equal(w0, net[0].weight.detach().numpy().T)
    b1 = np.frombuffer(blob[-4 * out :], "<f4")
    np.testing.assert_array_equal(b1, net[2].bias.detach().numpy())


def test_unsupported_actors_say_why() -> None:
    class Odd(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :2]

    description, blob = native.native_records(wrap(Odd()))
    assert blob == b"" and description["why_not"] == "actor Odd is not an MLP actor the native kernels know"
    actor = GaussianActor(3, 2, NetConfig([4], "tanh"))
    actor.mean_net[1] = nn.Softplus()
    description, blob = native.native_records(wrap(actor))
    assert blob == b"" and "layer 1 (Softplus)" in description["why_not"]
