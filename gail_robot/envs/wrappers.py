"""Env-side conventions shared by training, evaluation and export.

- :class:`NormalizedActions`: the policy acts in ``[-1, 1]^A``; the wrapper clips and maps to the
  env's bounds with ``action = low + (clip(a, -1, 1) + 1) / 2 * (high - low)`` (docs/DESIGN.md §2).
- :class:`ObsNormalizer`: running observation statistics (``gail_robot.core.RunningMeanStd``)
  shared by the policy, the critic and the GAIL discriminator, updated by the learner once per
  rollout and frozen for evaluation and export; applied with ``gail_robot.core.normalize``, the
  one implementation (docs/DESIGN.md §2).
- Absorbing states (DAC, Kostrikov et al. 2019): :func:`with_absorbing_flag` appends the indicator
  column the discriminator sees (the absorbing state itself is all zeros with flag 1).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from gail_robot.core import RunningMeanStd, normalize

# The reward scale's own variance floor (as SB3's VecNormalize), not the observation normaliser's.
_REWARD_VAR_FLOOR = 1e-8


class NormalizedActions(gym.ActionWrapper):
    """Expose ``Box(-1, 1, (A,))`` and map clipped actions to the wrapped env's bounds."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"only Box action spaces are supported, got {space}")
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise ValueError("action space bounds must be finite to normalise actions")
        self.low = space.low.astype(np.float32)
        self.high = space.high.astype(np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=space.shape, dtype=np.float32)

    def action(self, action: Any) -> np.ndarray:
        clipped = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        return (self.low + (clipped + 1.0) * 0.5 * (self.high - self.low)).astype(self.env.action_space.dtype)


class ObsNormalizer:
    """Running observation normalisation: ``core.normalize(obs, mean, var, clip)`` with running statistics.

    ``clip((obs - mean) / sqrt(var + core.NORM_EPSILON), -clip, clip)`` (docs/DESIGN.md §2).

    Args:
        obs_dim: observation size.
        clip: bound on normalised values.
        enabled: when False, statistics stay at mean 0 / var 1 (identity up to the clip).
    """

    def __init__(self, obs_dim: int, clip: float = 10.0, enabled: bool = True):
        self.rms = RunningMeanStd((int(obs_dim),))
        self.clip = float(clip)
        self.enabled = bool(enabled)
        self.frozen = not self.enabled

    def update(self, obs: np.ndarray) -> None:
        """Fold a batch ``(..., obs_dim)`` of raw observations into the statistics (unless frozen)."""
        if not self.frozen:
            self.rms.update(np.asarray(obs, dtype=np.float64).reshape(-1, self.rms.shape[0]))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Normalised float32 copy of raw ``obs (..., obs_dim)``: ``core.normalize`` with these statistics.

        Disabled, the statistics are mean 0 / var 1: a clip (the ``NORM_EPSILON`` floor changes no
        float32 value).
        """
        return normalize(obs, self.mean, self.var, self.clip)

    @property
    def mean(self) -> np.ndarray:
        """``(obs_dim,)`` float64 mean in use (zeros when disabled)."""
        return self.rms.mean if self.enabled else np.zeros(self.rms.shape, np.float64)

    @property
    def var(self) -> np.ndarray:
        """``(obs_dim,)`` float64 variance in use (ones when disabled)."""
        return self.rms.var if self.enabled else np.ones(self.rms.shape, np.float64)

    def export(self) -> dict[str, Any]:
        """The frozen view saved with every checkpoint (``policy_io`` reads it)."""
        return {"mean": self.mean.copy(), "var": self.var.copy(), "clip": self.clip}

    def state_dict(self) -> dict[str, Any]:
        return {
            "rms": self.rms.state_dict(),
            "clip": self.clip,
            "enabled": self.enabled,
            "frozen": self.frozen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rms.load_state_dict({k: np.asarray(v) for k, v in state["rms"].items()})
        self.clip = float(state["clip"])
        self.enabled = bool(state["enabled"])
        self.frozen = bool(state.get("frozen", not self.enabled))

    def load_frozen(self, mean: np.ndarray, var: np.ndarray, count: float = 1e4) -> None:
        """Use given statistics (e.g. a BC policy's) and keep them: :meth:`update` does nothing after.

        A warm-started actor only behaves as it did if its inputs are normalised as in its own
        training: statistics drifting towards the rollouts' (e.g. on dimensions nearly constant in
        the demos) would change its actions before any gradient step.
        """
        self.rms.load_state_dict({"mean": np.asarray(mean), "var": np.asarray(var), "count": float(count)})
        self.frozen = True


def with_absorbing_flag(x: np.ndarray, flag: float | np.ndarray = 0.0) -> np.ndarray:
    """Append an absorbing-indicator column: ``(M, D) -> (M, D + 1)`` float32."""
    x = np.asarray(x, dtype=np.float32)
    column = np.broadcast_to(np.asarray(flag, dtype=np.float32), (x.shape[0],))[:, None]
    return np.concatenate([x, column], axis=1)


class RewardScaler:
    """Divide rewards by the running std of the discounted return (as SB3's VecNormalize does).

    For RL on the env reward: it keeps value targets O(1) whatever the reward scale, which PPO
    on MuJoCo needs to learn at a normal pace. Not for GAIL rewards by default (docs/DESIGN.md
    §8.3: normalising the discriminator reward by a running std destabilises training).

    Args:
        num_envs: N, the number of parallel envs.
        gamma: discount of the tracked return.
    """

    def __init__(self, num_envs: int, gamma: float):
        self.rms = RunningMeanStd(())
        self.gamma = float(gamma)
        self.returns = np.zeros(int(num_envs), dtype=np.float64)

    def reset(self) -> None:
        """Forget the partial returns (the envs were reset)."""
        self.returns[:] = 0.0

    def __call__(self, rewards: np.ndarray, done: np.ndarray) -> np.ndarray:
        """Scaled copy of ``rewards (T, N)``; ``done (T, N)`` (terminated or truncated) ends returns."""
        tracked = np.empty(rewards.shape, dtype=np.float64)
        for t in range(rewards.shape[0]):
            self.returns = self.returns * self.gamma + rewards[t]
            tracked[t] = self.returns
            self.returns[done[t]] = 0.0
        self.rms.update(tracked.reshape(-1))
        return (rewards / np.sqrt(self.rms.var + _REWARD_VAR_FLOOR)).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        """The statistics only: partial returns end with the env reset that follows a checkpoint."""
        return {"rms": self.rms.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rms.load_state_dict({k: np.asarray(v) for k, v in state["rms"].items()})
        self.reset()
