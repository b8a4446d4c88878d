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


def make_arm_seeking_checkpoint(
    path: Path,
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    toward: str = "cube_rel_ee",
    grip: float = 1.0,
    gain: float = 20.0,
) -> Path:
    """An arm-task checkpoint whose actor moves the tool point toward a point: a hand-set 49→4→4 MLP.

    ``action[:3] = tanh(gain * obs[toward])`` (``toward`` names a relative-vector field of
    ``gail_robot.envs.arm.OBS_SLICES``: ``cube_rel_ee`` drives the closed fingers into the cube, a
    contact-rich closed loop; ``goal_rel_ee`` solves ArmReach), ``action[3] = grip`` (±1 closes/opens);
    identity normalisation. A real checkpoint of a real GaussianActor: export and the C++ library see an
    ordinary MLP policy.
    """
    from gail_robot.envs.arm import OBS_DIM, OBS_SLICES
    from gail_robot.policy_io import load_checkpoint

    make_checkpoint(path, env_id, env_kwargs, hidden=(4,))
    payload = load_checkpoint(path)
    for key in ("format", "format_version", "_path"):
        payload.pop(key, None)
    rel = OBS_SLICES[toward]
    w1, b1 = torch.zeros(4, OBS_DIM), torch.zeros(4)
    for k in range(3):
        w1[k, rel.start + k] = gain
    b1[3] = float(np.arctanh(0.999 * grip))
    payload["actor"].update(
        {
            "mean_net.0.weight": w1,
            "mean_net.0.bias": b1,
            "mean_net.2.weight": torch.eye(4),
            "mean_net.2.bias": torch.zeros(4),
        }
    )
    payload["obs_norm"] = {"mean": np.zeros(OBS_DIM), "var": np.ones(OBS_DIM), "clip": 10.0}
    return save_checkpoint(path, payload)
