"""GAIL (Ho & Ermon 2016) as a composition: any generator + a discriminator that relabels rewards.

The trainer owns the generator (PPO or TRPO); this class only
1. trains the discriminator on expert pairs vs. the latest policy samples (plus a short replay),
2. relabels the rollout's rewards in one batch from the discriminator's logits with
   ``gail_robot.core.disc_rewards`` (kind declared per task: docs/DESIGN.md §6),
3. optionally treats true terminations as transitions into an absorbing state (DAC, Kostrikov
   et al. 2019), whose value ``r_abs / (1 - gamma)`` bootstraps terminated steps.

Discrete actions (``Discrete(n)``, int64 indices) enter the ``(s, a)`` input as one-hot columns, so
the discriminator sees the same kind of input for expert and policy pairs (``disc_input: ss`` needs
no action at all).

Both sides are normalised with the policy's observation statistics at update time, so expert and
policy inputs are always on the same scale (docs/DESIGN.md §8.3).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch

from gail_robot import core
from gail_robot.algos.config import GAILConfig
from gail_robot.algos.demos import expert_in_policy_units
from gail_robot.algos.discriminator import DiscriminatorTrainer
from gail_robot.algos.rollout import RolloutBuffer
from gail_robot.data import Transitions
from gail_robot.envs.tasks import task_info
from gail_robot.envs.wrappers import ObsNormalizer, with_absorbing_flag
from gail_robot.errors import UserError
from gail_robot.nets import Discriminator, NetConfig, load_optimizer_state
from gail_robot.obs_dims import ignored_obs_indices


def one_hot(actions: np.ndarray, n_actions: int) -> np.ndarray:
    """int64 indices ``(M,)`` -> one-hot rows ``(M, n_actions) float32`` (the discriminator's input)."""
    out = np.zeros((len(actions), n_actions), dtype=np.float32)
    out[np.arange(len(actions)), actions] = 1.0
    return out


def replayed_transitions(saved: dict[str, Any], n_actions: int) -> Transitions:
    """A replayed round as a checkpoint stores it, with the dtypes rollouts give (int64 Discrete actions)."""
    return Transitions(
        obs=np.asarray(saved["obs"], dtype=np.float32),
        actions=np.asarray(saved["actions"], dtype=np.int64 if n_actions else np.float32),
        next_obs=np.asarray(saved["next_obs"], dtype=np.float32),
        terminated=np.asarray(saved["terminated"], dtype=bool),
    )


def disc_obs_columns(config: GAILConfig, obs_dim: int) -> np.ndarray:
    """The observation columns the discriminator sees: all but ``gail.disc_ignore_obs`` (checked)."""
    return kept_obs_columns(config.disc_ignore_obs, obs_dim, "gail.disc_ignore_obs")


def kept_obs_columns(ignore: list[int | str], obs_dim: int, key: str) -> np.ndarray:
    """All observation columns but those of the option ``key`` (indices or ranges, checked)."""
    kept = np.setdiff1d(np.arange(obs_dim), ignored_obs_indices(ignore, obs_dim, key))
    if not len(kept):
        raise UserError(f"{key} leaves out all {obs_dim} observation dims")
    return kept


def reward_kind_for(env_id: str, configured: str) -> str:
    """``auto`` -> the reward kind the task declares (docs/DESIGN.md §6), e.g. ``neg`` for the arm tasks."""
    if configured != "auto":
        return configured
    return task_info(env_id).reward_kind


class GAIL:
    """Discriminator side of GAIL.

    Args:
        config: GAIL settings.
        expert: expert transitions (actions in env units).
        normalizer: the policy's observation normaliser (shared, read-only here).
        action_low: ``(act_dim,)`` env action bounds, to put expert actions in ``[-1, 1]`` units.
        action_high: ``(act_dim,)``.
        reward_kind: ``gail``, ``airl`` or ``neg``.
        gamma: discount (absorbing-state value).
        torch_rng: torch RNG of minibatches and interpolation.
        n_actions: ``n`` of a ``Discrete(n)`` action space (actions are int64 indices, one-hot in
            the input; ``action_low`` / ``action_high`` are unused); 0 for a Box.
    """

    def __init__(
        self,
        config: GAILConfig,
        expert: Transitions,
        normalizer: ObsNormalizer,
        action_low: np.ndarray,
        action_high: np.ndarray,
        reward_kind: str,
        gamma: float,
        torch_rng: torch.Generator,
        n_actions: int = 0,
    ):
        self.config = config
        self.n_actions = int(n_actions)
        self.normalizer = normalizer
        self.reward_kind = reward_kind
        self.gamma = gamma
        self.torch_rng = torch_rng
        self.obs_dim = expert.obs.shape[1]
        self.act_dim = self.n_actions if self.n_actions else expert.actions.shape[1]
        self.expert = expert_in_policy_units(expert, action_low, action_high, self.n_actions)
        self.obs_columns = disc_obs_columns(config, self.obs_dim)
        seen = len(self.obs_columns)
        second = self.act_dim if config.disc_input == "sa" else seen
        self.in_dim = seen + second + (1 if config.absorbing else 0)
        disc = Discriminator(self.in_dim, NetConfig(list(config.hidden_sizes), config.activation))
        self.trainer = DiscriminatorTrainer(disc, config.lr)
        self.replay: deque[Transitions] = deque(maxlen=config.replay_rounds)

    # ----------------------------------------------------------------------------- inputs

    def inputs(self, data: Transitions) -> tuple[np.ndarray, np.ndarray]:
        """Discriminator inputs and sample weights for transitions (actions in ``[-1, 1]`` units).

        Returns:
            ``(inputs (M', in_dim) float32, weights (M',) float32)``; with absorbing states, one
            absorbing sample per terminated transition is appended.
        """
        x = self._pairs(data)
        weights = np.ones(len(x), dtype=np.float32)
        if self.config.absorbing:
            x = with_absorbing_flag(x, 0.0)
            n_abs = int(data.terminated.sum())
            if n_abs:
                x = np.concatenate([x, self._absorbing(n_abs)])
                weights = np.concatenate([weights, np.ones(n_abs, dtype=np.float32)])
        return x, weights

    def _pairs(self, data: Transitions) -> np.ndarray:
        """``(M, obs_dim + second) float32``: normalised ``s`` and the clipped (or one-hot) action or
        the normalised ``s'``."""
        cols = self.obs_columns
        obs_n = self.normalizer(data.obs)[:, cols]
        if self.config.disc_input == "ss":
            second = self.normalizer(data.next_obs)[:, cols]
        elif self.n_actions:
            second = one_hot(data.actions, self.n_actions)
        else:
            second = np.clip(data.actions, -1.0, 1.0)
        return np.concatenate([obs_n, second], axis=1).astype(np.float32)

    def _absorbing(self, count: int) -> np.ndarray:
        """Absorbing-state inputs ``(count, in_dim)``: zero state, zero action (or zero successor), flag 1."""
        out = np.zeros((count, self.in_dim), dtype=np.float32)
        out[:, -1] = 1.0
        return out

    def _expert_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        x, w = self.inputs(self.expert)
        if self.config.absorbing and self.config.demo_subsample > 1:
            # Each kept pair stands for `demo_subsample` pairs, each absorbing sample for one
            # episode end: down-weight the latter accordingly (docs/DESIGN.md §8.5).
            w[len(self.expert) :] = 1.0 / self.config.demo_subsample
        return x, w

    @staticmethod
    def policy_transitions(buffer: RolloutBuffer) -> Transitions:
        """The rollout as flat transitions (raw observations, executed ``[-1, 1]`` actions or indices)."""
        t, n, d = buffer.obs_raw.shape
        discrete = buffer.actions.ndim == 2
        return Transitions(
            obs=buffer.obs_raw.reshape(t * n, d).copy(),
            actions=buffer.actions.reshape(-1).copy()
            if discrete
            else np.clip(buffer.actions.reshape(t * n, -1), -1.0, 1.0),
            next_obs=buffer.next_obs_raw.reshape(t * n, d).copy(),
            terminated=buffer.terminated.reshape(-1).copy(),
        )

    # ----------------------------------------------------------------------------- update

    def update(self, buffer: RolloutBuffer) -> dict[str, float]:
        """Train the discriminator on the expert vs. this rollout (+ replayed recent rollouts)."""
        cfg = self.config
        self.replay.append(self.policy_transitions(buffer))
        policy_x, policy_w = zip(*(self.inputs(p) for p in self.replay), strict=True)
        policy_inputs = torch.from_numpy(np.concatenate(policy_x))
        policy_weights = torch.from_numpy(np.concatenate(policy_w))
        expert_x, expert_w = self._expert_inputs()
        expert_inputs, expert_weights = torch.from_numpy(expert_x), torch.from_numpy(expert_w)
        half = max(1, cfg.batch_size // 2)
        n_policy = policy_inputs.shape[0]
        losses, expert_acc, policy_acc = [], [], []
        for _ in range(cfg.updates_per_round):
            order = torch.randperm(n_policy, generator=self.torch_rng)
            for start in range(0, n_policy, half):
                p_idx = order[start : start + half]
                e_idx = torch.randint(0, expert_inputs.shape[0], (half,), generator=self.torch_rng)
                expert_batch = expert_inputs[e_idx]
                if cfg.expert_noise > 0:
                    noise = torch.randn(expert_batch.shape, generator=self.torch_rng) * cfg.expert_noise
                    if cfg.absorbing:
                        noise[:, -1] = 0.0
                    expert_batch = expert_batch + noise
                loss = self.trainer.step(
                    expert_batch,
                    policy_inputs[p_idx],
                    expert_weights=expert_weights[e_idx],
                    policy_weights=policy_weights[p_idx],
                    grad_penalty=cfg.grad_penalty,
                    ent_coef=cfg.ent_coef,
                    torch_rng=self.torch_rng,
                )
                losses.append(loss.bce.item())
                expert_acc.append(loss.expert_accuracy)
                policy_acc.append(loss.policy_accuracy)
        return {
            "disc_loss": float(np.mean(losses)),
            "disc_acc_expert": float(np.mean(expert_acc)),
            "disc_acc_policy": float(np.mean(policy_acc)),
        }

    def relabel(self, buffer: RolloutBuffer) -> np.ndarray | None:
        """Overwrite ``buffer.rewards`` with discriminator rewards, in one batch.

        Returns:
            With absorbing states, ``(T, N)`` values of the absorbing successor for
            :meth:`RolloutBuffer.compute_advantages`; otherwise None.
        """
        t, n = buffer.rewards.shape
        x = self._pairs(self.policy_transitions(buffer))
        if self.config.absorbing:
            x = with_absorbing_flag(x, 0.0)
        logits = self.trainer.logits(torch.from_numpy(x)).numpy()
        buffer.rewards[:] = core.disc_rewards(logits, self.reward_kind).reshape(t, n)
        if not self.config.absorbing:
            return None
        absorbing_logit = self.trainer.logits(torch.from_numpy(self._absorbing(1))).numpy()
        absorbing_reward = float(core.disc_rewards(absorbing_logit, self.reward_kind)[0])
        value = absorbing_reward / (1.0 - self.gamma) if self.gamma < 1.0 else absorbing_reward
        return np.full((t, n), value, dtype=np.float32)

    # ----------------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        return {
            "disc": self.trainer.disc.state_dict(),
            # what the discriminator's input is made of, for export-reward (docs/DESIGN.md §5.2)
            "obs_columns": self.obs_columns.tolist(),
            "optimizer": self.trainer.optimizer.state_dict(),
            "replay": [
                {"obs": p.obs, "actions": p.actions, "next_obs": p.next_obs, "terminated": p.terminated}
                for p in self.replay
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trainer.disc.load_state_dict(state["disc"])
        load_optimizer_state(self.trainer.optimizer, state["optimizer"])
        self.replay.clear()
        for p in state["replay"]:
            self.replay.append(replayed_transitions(p, self.n_actions))
