"""Test helper shared by the export and controller tests: a random policy saved as a real checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from gail_robot.nets import GaussianActor, NetConfig, TanhGaussianActor
from gail_robot.policy_io import save_checkpoint


def make_checkpoint(
    path: Path,
    env_id: str = "Hopper-v5",
    env_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    hidden: tuple[int, ...] = (256, 256),
    activation: str = "tanh",
    squashed: bool = False,
) -> Path:
    """A training checkpoint (policy_io format) with a random actor and non-trivial normalisation.

    A 2x256 tanh GaussianActor by default (``squashed``: SAC's TanhGaussianActor). The head is
    re-initialised with gain 1 (training uses 0.01) so that the actions span the range.
    """
    env_kwargs = dict(env_kwargs or {})
    env = gym.make(env_id, **env_kwargs)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    torch.manual_seed(seed)
    config = NetConfig(list(hidden), activation)
    actor = (
        TanhGaussianActor(obs_dim, act_dim, config) if squashed else GaussianActor(obs_dim, act_dim, config)
    )
    head = actor.net[-1] if squashed else actor.mean_net[-1]
    torch.nn.init.orthogonal_(head.weight, gain=1.0)
    rng = np.random.default_rng(seed)
    payload = {
        "actor_spec": actor.spec(),
        "actor": actor.state_dict(),
        "obs_norm": {
            "mean": rng.normal(size=obs_dim) * 0.1,
            "var": rng.uniform(0.5, 2.0, obs_dim),
            "clip": 10.0,
        },
        "action_low": env.action_space.low,
        "action_high": env.action_space.high,
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "meta": {"algo": "test", "run_dir": str(path.parent), "env_steps": 0},
    }
    env.close()
    return save_checkpoint(path, payload)
