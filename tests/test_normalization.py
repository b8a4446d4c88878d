"""One normaliser: every path that applies frozen observation statistics gives core.normalize's numbers.

Paths: the training normaliser (ObsNormalizer), PolicyBundle, a bundle loaded from a checkpoint, the
batched workers' NumpyPolicy, SAC's replay batches (CPU: core.normalize; accelerator:
nets.normalize_torch) and normalize_torch itself, eager and TorchScript (docs/DESIGN.md §2).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gail_robot import core
from gail_robot.algos.config import config_from_dict
from gail_robot.algos.rollout import NumpyPolicy
from gail_robot.algos.sac import SACTrainer
from gail_robot.envs.wrappers import ObsNormalizer
from gail_robot.nets import GaussianActor, NetConfig, normalization_std, normalize_torch
from gail_robot.policy_io import PolicyBundle, load_policy, save_checkpoint

ENV = "Hopper-v5"
OBS_DIM, ACT_DIM = 11, 3
CLIP = 5.0


@pytest.fixture(scope="module")
def probe() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(obs (64, D) float32, mean (D,), var (D,))``: wide values, a constant feature, clipped values."""
    rng = np.random.default_rng(7)
    obs = (rng.standard_normal((64, OBS_DIM)) * rng.uniform(0.1, 50.0, OBS_DIM)).astype(np.float32)
    mean = rng.standard_normal(OBS_DIM) * 3.0
    var = rng.uniform(0.01, 20.0, OBS_DIM)
    var[2] = 0.0  # a feature constant in the data: the NORM_EPSILON floor keeps it finite
    return obs, mean, var


def frozen_normalizer(mean: np.ndarray, var: np.ndarray) -> ObsNormalizer:
    normalizer = ObsNormalizer(OBS_DIM, clip=CLIP)
    normalizer.rms.load_state_dict({"mean": mean, "var": var, "count": 100.0})
    return normalizer


def test_reference_clips_and_floors(probe) -> None:
    obs, mean, var = probe
    expected = core.normalize(obs, mean, var, CLIP)
    assert np.any(np.abs(expected) == CLIP) and np.any(np.abs(expected) < CLIP)  # the probe covers both
    np.testing.assert_array_equal(expected, core.normalize_reference(obs, mean, var, CLIP))


def test_training_normalizer(probe) -> None:
    obs, mean, var = probe
    np.testing.assert_array_equal(frozen_normalizer(mean, var)(obs), core.normalize(obs, mean, var, CLIP))


def test_disabled_normalizer_only_clips(probe) -> None:
    obs, _, _ = probe
    disabled = ObsNormalizer(OBS_DIM, clip=CLIP, enabled=False)
    np.testing.assert_array_equal(disabled(obs), np.clip(obs, -CLIP, CLIP))


def test_policy_bundle_and_checkpoint_loaded_bundle(probe, tmp_path: Path) -> None:
    obs, mean, var = probe
    expected = core.normalize(obs, mean, var, CLIP)
    actor = GaussianActor(OBS_DIM, ACT_DIM, NetConfig([16, 16]))
    low, high = -np.ones(ACT_DIM, np.float32), np.ones(ACT_DIM, np.float32)
    bundle = PolicyBundle(actor, mean, var, CLIP, low, high, ENV)
    np.testing.assert_array_equal(bundle.normalize_obs(obs), expected)
    np.testing.assert_array_equal(bundle.normalize_obs(obs[0]), expected[0])  # one observation
    payload = {
        "actor_spec": actor.spec(),
        "actor": actor.state_dict(),
        "obs_norm": {"mean": mean, "var": var, "clip": CLIP},
        "action_low": low,
        "action_high": high,
        "env_id": ENV,
        "env_kwargs": {},
        "meta": {"algo": "test"},
    }
    loaded = load_policy(save_checkpoint(tmp_path / "final.pt", payload))
    np.testing.assert_array_equal(loaded.normalize_obs(obs), expected)
    with torch.no_grad():
        mean_action = actor(torch.from_numpy(expected)).numpy()
    np.testing.assert_array_equal(loaded.act(obs), bundle.unscale_action(mean_action))


def test_numpy_policy_in_the_workers(probe) -> None:
    obs, mean, var = probe
    actor = GaussianActor(OBS_DIM, ACT_DIM, NetConfig([16, 16]))
    policy = NumpyPolicy.from_actor(actor, torch.ones(ACT_DIM), frozen_normalizer(mean, var))
    np.testing.assert_array_equal(policy.normalizer()(obs), core.normalize(obs, mean, var, CLIP))


def test_normalize_torch_eager_and_scripted(probe) -> None:
    obs, mean, var = probe
    expected = core.normalize(obs, mean, var, CLIP)
    args = (torch.from_numpy(obs), torch.from_numpy(mean), normalization_std(var), CLIP)
    eager = normalize_torch(*args)
    assert eager.dtype == torch.float32
    np.testing.assert_array_equal(eager.numpy(), expected)
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; it stays our export format
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(normalize_torch)
    np.testing.assert_array_equal(scripted(*args).numpy(), expected)
    # float64 observations: the mirror computes in float64 like the kernel
    np.testing.assert_array_equal(normalize_torch(args[0].double(), *args[1:]).numpy(), expected)


def test_sac_replay_batches(probe, tmp_path: Path) -> None:
    obs, mean, var = probe
    cfg = config_from_dict(
        {
            "algo": "sac",
            "env": {"id": ENV, "obs_clip": CLIP},
            "sac": {"hidden_sizes": [8], "buffer_size": 256, "batch_size": 64},
            "run": {"progress": False, "tensorboard": False},
        }
    )
    trainer = SACTrainer(cfg, tmp_path / "run")
    try:
        trainer.normalizer.rms.load_state_dict({"mean": mean, "var": var, "count": 100.0})
        next_obs = obs[::-1].copy()
        for o, n in zip(obs, next_obs, strict=True):
            trainer.replay.add(o, np.zeros(ACT_DIM, np.float32), 1.0, n, False)
        rows = trainer.replay.rows[: len(trainer.replay)].copy()
        parts = trainer._normalized_batch(rows)
        np.testing.assert_array_equal(parts["obs"].numpy(), core.normalize(obs, mean, var, CLIP))
        np.testing.assert_array_equal(parts["next_obs"].numpy(), core.normalize(next_obs, mean, var, CLIP))
        # What the accelerator path computes on its device, here on the CPU.
        raw = trainer.replay.split(torch.from_numpy(trainer.replay.rows[: len(trainer.replay)].copy()))
        on_device = normalize_torch(raw["obs"], torch.from_numpy(mean), normalization_std(var), CLIP)
        np.testing.assert_array_equal(on_device.numpy(), core.normalize(obs, mean, var, CLIP))
    finally:
        trainer.env.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_normalize_torch_on_cuda(probe) -> None:
    obs, mean, var = probe
    got = normalize_torch(
        torch.from_numpy(obs).cuda(), torch.from_numpy(mean).cuda(), normalization_std(var).cuda(), CLIP
    )
    np.testing.assert_array_equal(got.cpu().numpy(), core.normalize(obs, mean, var, CLIP))
