"""Checkpoint format, load_policy and the actor registry (docs/DESIGN.md §4, §5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gail_robot.errors import UserError
from gail_robot.nets import (
    ACTOR_CLASSES,
    Critic,
    Discriminator,
    GaussianActor,
    NetConfig,
    TanhGaussianActor,
    actor_from_spec,
    flat_params,
    set_flat_params,
)
from gail_robot.policy_io import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    load_policy,
    save_checkpoint,
)


def _payload(actor: GaussianActor) -> dict:
    return {
        "actor_spec": actor.spec(),
        "actor": actor.state_dict(),
        "obs_norm": {"mean": np.array([1.0, -2.0, 0.5]), "var": np.array([4.0, 1.0, 0.25]), "clip": 5.0},
        "action_low": np.array([-2.0, 0.0], dtype=np.float32),
        "action_high": np.array([2.0, 1.0], dtype=np.float32),
        "env_id": "Foo-v0",
        "env_kwargs": {"a": 1},
        "meta": {"algo": "ppo", "env_steps": 10, "torch": torch.__version__, "x": np.float64(1.5)},
        "rng": {"numpy": np.random.default_rng(0).bit_generator.state, "torch": torch.get_rng_state()},
    }


def test_checkpoint_roundtrip_and_act(tmp_path):
    torch.manual_seed(0)
    actor = GaussianActor(3, 2, NetConfig([8, 8], "tanh"))
    path = save_checkpoint(tmp_path / "run" / "final.pt", _payload(actor))
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT
    bundle = load_policy(tmp_path / "run")  # a run dir means its final checkpoint
    assert bundle.env_id == "Foo-v0" and bundle.env_kwargs == {"a": 1} and bundle.meta["algo"] == "ppo"
    obs = np.array([[3.0, -1.0, 0.0], [1.0, -2.0, 0.5]], dtype=np.float32)
    obs_n = np.clip((obs - bundle.obs_mean) / np.sqrt(bundle.obs_var + 1e-8), -5, 5)
    with torch.no_grad():
        mean = actor(torch.as_tensor(obs_n, dtype=torch.float32)).numpy()
    expected = np.array([-2.0, 0.0]) + (np.clip(mean, -1, 1) + 1) / 2 * np.array([4.0, 1.0])
    np.testing.assert_allclose(bundle.act(obs), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bundle.act(obs[0]), expected[0], rtol=1e-5, atol=1e-6)
    assert bundle.act(obs).dtype == np.float32


def test_no_temp_files_left(tmp_path):
    actor = GaussianActor(3, 2)
    save_checkpoint(tmp_path / "c.pt", _payload(actor))
    save_checkpoint(tmp_path / "c.pt", _payload(actor))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_bad_files_raise_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_policy(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_policy(tmp_path / "junk.pt")
    torch.save({"format": CHECKPOINT_FORMAT, "format_version": 99}, tmp_path / "v99.pt")
    with pytest.raises(UserError, match="format version 99"):
        load_checkpoint(tmp_path / "v99.pt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a gail_robot checkpoint"):
        load_policy(tmp_path / "other.pt")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(UserError, match="not a run directory"):
        load_policy(tmp_path / "empty_run")


def test_a_checkpoint_that_holds_no_policy_is_one_user_error(tmp_path):
    actor = GaussianActor(4, 2, NetConfig(hidden_sizes=(8,)))
    payload = _payload(actor)
    payload["actor"] = {"bogus": torch.zeros(1)}  # loads with weights_only, but is no GaussianActor
    path = save_checkpoint(tmp_path / "bad.pt", payload)
    message = r"^cannot load a policy from .*bad\.pt: Error\(s\) in loading state_dict"
    with pytest.raises(UserError, match=message):
        load_policy(path)


def test_nets_shapes_and_flat_params():
    actor = GaussianActor(5, 3)
    obs = torch.randn(7, 5)
    assert actor(obs).shape == (7, 3)
    assert actor.log_prob(obs, torch.zeros(7, 3)).shape == (7,)
    assert Critic(5)(obs).shape == (7,)
    assert Discriminator(8)(torch.randn(7, 8)).shape == (7,)
    flat = flat_params(actor)
    set_flat_params(actor, flat * 0 + 1.0)
    assert torch.all(flat_params(actor) == 1.0)
    with pytest.raises(ValueError, match="flat vector"):
        set_flat_params(actor, flat[:-1])


class _Exported(torch.nn.Module):
    """Shape of what gail_robot.export writes: the normalised actor as submodule ``actor``."""

    def __init__(self, actor: GaussianActor):
        super().__init__()
        self.actor = actor

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs)


def test_load_torchscript_export(tmp_path):
    import json
    import warnings

    actor = GaussianActor(3, 2, NetConfig([8], "tanh"))
    meta = {
        "env_id": "Foo-v0",
        "env_kwargs": {},
        "obs_mean": [0.0, 0.0, 0.0],
        "obs_var": [1.0, 1.0, 1.0],
        "obs_clip": 10.0,
        "action_low": [-1.0, -1.0],
        "action_high": [1.0, 1.0],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(_Exported(actor))
        torch.jit.save(scripted, str(tmp_path / "policy.pt"), _extra_files={"meta.json": json.dumps(meta)})
    bundle = load_policy(tmp_path / "policy.pt")  # must not warn (filterwarnings=error)
    obs = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    with torch.no_grad():
        expected = np.clip(actor(torch.from_numpy(obs)).numpy(), -1, 1)
    np.testing.assert_allclose(bundle.act(obs), expected, atol=1e-6)
    assert bundle.env_id == "Foo-v0"


def test_closed_form_log_prob_and_entropy_match_torch_distribution():
    actor = GaussianActor(5, 3)
    with torch.no_grad():
        actor.log_std[:] = torch.tensor([0.1, -0.5, 0.3])
    obs, actions = torch.randn(7, 5), torch.randn(7, 3)
    log_prob, entropy = actor.log_prob_and_entropy(obs, actions)
    dist = actor.distribution(obs)
    torch.testing.assert_close(log_prob, dist.log_prob(actions).sum(-1))
    torch.testing.assert_close(entropy, dist.entropy().sum(-1).mean())


@pytest.mark.parametrize(
    "actor",
    [GaussianActor(5, 3, NetConfig([8], "relu")), TanhGaussianActor(5, 3, NetConfig([8, 4]), -4.0, 1.0)],
    ids=["gaussian", "tanh_gaussian"],
)
def test_actor_registry_rebuilds_every_actor_from_its_spec(actor, tmp_path):
    rebuilt = actor_from_spec(actor.spec())
    assert type(rebuilt) is type(actor) and rebuilt.spec() == actor.spec()
    rebuilt.load_state_dict(actor.state_dict())
    obs = torch.randn(4, 5)
    torch.testing.assert_close(rebuilt(obs), actor(obs))
    payload = {**_payload(GaussianActor(5, 3)), "actor_spec": actor.spec(), "actor": actor.state_dict()}
    payload["obs_norm"] = {"mean": np.zeros(5), "var": np.ones(5), "clip": 5.0}
    payload["action_low"], payload["action_high"] = -np.ones(3, np.float32), np.ones(3, np.float32)
    bundle = load_policy(save_checkpoint(tmp_path / "final.pt", payload))
    assert type(bundle.actor) is type(actor)
    torch.testing.assert_close(bundle.actor(obs), actor(obs))


def test_actor_registry_knows_the_shipped_kinds_and_refuses_others():
    assert set(ACTOR_CLASSES) == {"gaussian", "tanh_gaussian", "categorical"}
    assert "kind" not in GaussianActor(2, 1).spec()  # as in every checkpoint written before SAC
    with pytest.raises(UserError, match="unknown actor kind 'mixture'"):
        actor_from_spec({"kind": "mixture", "obs_dim": 2, "act_dim": 1, "net": {}})


def test_loading_a_policy_imports_no_training_module():
    import subprocess
    import sys

    code = (
        "import sys; import gail_robot.policy_io, gail_robot.nets\n"
        "gail_robot.nets.actor_from_spec({'kind': 'tanh_gaussian', 'obs_dim': 2, 'act_dim': 1,"
        " 'net': {'hidden_sizes': [4], 'activation': 'relu'}})\n"
        "print(sorted(m for m in sys.modules if m.startswith('gail_robot.algos')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
