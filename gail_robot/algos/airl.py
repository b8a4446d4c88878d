"""AIRL (Fu et al. 2018, "Learning Robust Rewards with Adversarial Inverse RL"): GAIL's sibling that
recovers a reward.

The discriminator has a fixed form, ``D(s, a, s') = exp f / (exp f + pi(a|s))``, with

    f(s, a, s') = g(s [, a]) + gamma * h(s') - h(s),

so its logit is ``f - log pi(a|s)`` and the generator's reward ``log D - log(1 - D) = f - log pi``.
``g`` is the reward approximator (state-only ``g(s)`` is the disentangled reward that transfers to
new dynamics), ``h`` a shaping potential. Like :class:`~gail_robot.algos.gail.GAIL` this class is only
the discriminator side; the trainer owns the PPO or TRPO generator (docs/DESIGN.md §8.8):

1. ``log pi(a|s)`` of the policy's samples is the one taken at collection (``RolloutBuffer.log_probs``,
   also for the replayed rounds): D compares against the policy that produced the sample. The
   expert's ``log pi(a|s)`` is evaluated with the current policy whenever D is trained, as in the
   paper's and the reference implementations' code: the expert pairs have no collection-time policy.
2. True terminations lead to an absorbing state (DAC, Kostrikov et al. 2019): ``h`` of a terminated
   transition's successor is ``h(s_abs)``, and one absorbing transition ``(s_abs, -, s_abs)`` per
   termination enters D's data with ``log pi = 0`` (the absorbing state has one action, taken with
   probability 1), or with the round's mean ``log pi`` (``airl.absorbing_log_pi: policy_mean``: a
   Gaussian's density has no level comparable to "probability 1"). Its generator reward
   ``f(s_abs) - beta log pi_abs``, ``f(s_abs) = g(s_abs) + (gamma - 1) h(s_abs)``, bootstraps terminated
   steps as ``r_abs / (1 - gamma)``, so the episode's length carries no bias. Without absorbing
   states a terminated successor's potential is dropped (``h(s') = 0``).

Inputs are normalised with the policy's observation statistics at update time (docs/DESIGN.md §8.3);
Discrete actions enter ``g(s, a)`` as one-hot columns.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gail_robot.algos.config import AIRLConfig, GAILConfig
from gail_robot.algos.demos import expert_in_policy_units
from gail_robot.algos.discriminator import DiscriminatorLoss, classification_loss
from gail_robot.algos.gail import GAIL, kept_obs_columns, one_hot, replayed_transitions
from gail_robot.algos.rollout import RolloutBuffer
from gail_robot.data import Transitions
from gail_robot.envs.wrappers import ObsNormalizer
from gail_robot.nets import AIRLRewardNet, NetConfig, OnPolicyActor, adam, load_optimizer_state


@dataclass
class AIRLInputs:
    """What D needs for M transitions, all tensors with first dimension M.

    Attributes:
        g_in: ``(M, g_dim) float32`` normalised ``s`` [, action] [, absorbing flag].
        h_in: ``(M, h_dim) float32`` normalised ``s`` [, flag].
        next_h_in: ``(M, h_dim) float32`` normalised ``s'`` [, flag]; the absorbing state after a
            true termination when absorbing states are on.
        next_mask: ``(M,) float32`` 0 where ``h(s')`` is dropped (termination without absorbing states).
        log_pi: ``(M,) float32`` ``log pi(a|s)``.
        weights: ``(M,) float32`` sample weights.
    """

    g_in: torch.Tensor
    h_in: torch.Tensor
    next_h_in: torch.Tensor
    next_mask: torch.Tensor
    log_pi: torch.Tensor
    weights: torch.Tensor

    def __len__(self) -> int:
        return int(self.g_in.shape[0])

    def index(self, idx: torch.Tensor) -> AIRLInputs:
        return AIRLInputs(*(getattr(self, k)[idx] for k in _FIELDS))

    @staticmethod
    def concat(parts: list[AIRLInputs]) -> AIRLInputs:
        return AIRLInputs(*(torch.cat([getattr(p, k) for p in parts]) for k in _FIELDS))


_FIELDS = ("g_in", "h_in", "next_h_in", "next_mask", "log_pi", "weights")


def airl_logits(net: AIRLRewardNet, x: AIRLInputs) -> torch.Tensor:
    """D's logit ``f(s, a, s') - log pi(a|s)`` ``(M,)``."""
    return net(x.g_in, x.h_in, x.next_h_in, x.next_mask) - x.log_pi


class AIRL:
    """Discriminator side of AIRL.

    Args:
        config: the discriminator training settings (``gail`` section) and demos.
        airl: the reward structure (``airl`` section).
        expert: expert transitions (actions in env units, or int64 indices).
        normalizer: the policy's observation normaliser (shared, read-only here).
        actor: the policy, for the expert's ``log pi(a|s)`` (read-only here).
        action_low: ``(act_dim,)`` env action bounds, to put expert actions in ``[-1, 1]`` units.
        action_high: ``(act_dim,)``.
        gamma: discount of the shaping term and of the absorbing state's value.
        torch_rng: torch RNG of minibatches and interpolation.
        n_actions: ``n`` of a ``Discrete(n)`` action space; 0 for a Box.
    """

    def __init__(
        self,
        config: GAILConfig,
        airl: AIRLConfig,
        expert: Transitions,
        normalizer: ObsNormalizer,
        actor: OnPolicyActor,
        action_low: np.ndarray,
        action_high: np.ndarray,
        gamma: float,
        torch_rng: torch.Generator,
        n_actions: int = 0,
    ):
        self.config = config
        self.airl = airl
        self.n_actions = int(n_actions)
        self.normalizer = normalizer
        self.actor = actor
        self.gamma = float(gamma)
        self.torch_rng = torch_rng
        self.obs_dim = expert.obs.shape[1]
        self.act_dim = self.n_actions if self.n_actions else expert.actions.shape[1]
        self.expert = expert_in_policy_units(expert, action_low, action_high, self.n_actions)
        flag = 1 if airl.absorbing else 0
        self.h_dim = self.obs_dim + flag
        #: the observation columns g sees (all but airl.g_ignore_obs)
        self.g_columns = kept_obs_columns(airl.g_ignore_obs, self.obs_dim, "airl.g_ignore_obs")
        self.g_dim = len(self.g_columns) + (0 if airl.state_only else self.act_dim) + flag
        self.net = AIRLRewardNet(
            self.g_dim, self.h_dim, self.gamma, NetConfig(list(config.hidden_sizes), config.activation)
        )
        self.optimizer = adam(self.net.parameters(), lr=config.lr)
        #: recent rounds: (transitions, their log pi at collection)
        self.replay: deque[tuple[Transitions, np.ndarray]] = deque(maxlen=config.replay_rounds)
        #: log pi of the absorbing state's action (airl.absorbing_log_pi), set from each round
        self.absorbing_log_pi = 0.0

    # ----------------------------------------------------------------------------- inputs

    def inputs(self, data: Transitions, log_pi: np.ndarray, absorbing_weight: float = 1.0) -> AIRLInputs:
        """D's inputs for transitions (actions in ``[-1, 1]`` units or indices) and their ``log pi``.

        With absorbing states, one absorbing transition per terminated one is appended, weighted
        ``absorbing_weight``.
        """
        obs_n = self.normalizer(data.obs)
        next_n = self.normalizer(data.next_obs)
        g_parts = [obs_n[:, self.g_columns]]
        if not self.airl.state_only:
            g_parts.append(
                one_hot(data.actions, self.n_actions) if self.n_actions else np.clip(data.actions, -1.0, 1.0)
            )
        m = len(data)
        terminated = data.terminated.astype(bool)
        if self.airl.absorbing:
            zero = np.zeros((m, 1), np.float32)
            g_in = np.concatenate([*g_parts, zero], axis=1)
            h_in = np.concatenate([obs_n, zero], axis=1)
            next_h_in = np.concatenate([next_n, zero], axis=1)
            next_h_in[terminated] = self._absorbing(1, self.h_dim)  # s' of a termination: s_abs
            next_mask = np.ones(m, np.float32)
        else:
            g_in = np.concatenate(g_parts, axis=1)
            h_in, next_h_in = obs_n, next_n
            next_mask = (~terminated).astype(np.float32)
        out = AIRLInputs(
            torch.from_numpy(np.ascontiguousarray(g_in, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(h_in, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(next_h_in, dtype=np.float32)),
            torch.from_numpy(next_mask),
            torch.as_tensor(log_pi, dtype=torch.float32).reshape(-1),
            torch.ones(m),
        )
        n_abs = int(terminated.sum()) if self.airl.absorbing else 0
        if n_abs:
            out = AIRLInputs.concat([out, self.absorbing_inputs(n_abs, absorbing_weight)])
        return out

    @staticmethod
    def _absorbing(count: int, width: int) -> np.ndarray:
        """``(count, width)`` absorbing-state rows: zeros, flag 1 in the last column."""
        out = np.zeros((count, width), dtype=np.float32)
        out[:, -1] = 1.0
        return out

    def absorbing_inputs(self, count: int, weight: float = 1.0) -> AIRLInputs:
        """``count`` transitions ``(s_abs, -, s_abs)`` with ``log pi = self.absorbing_log_pi``."""
        h_abs = torch.from_numpy(self._absorbing(count, self.h_dim))
        return AIRLInputs(
            torch.from_numpy(self._absorbing(count, self.g_dim)),
            h_abs,
            h_abs.clone(),
            torch.ones(count),
            torch.full((count,), float(self.absorbing_log_pi)),
            torch.full((count,), float(weight)),
        )

    def _set_absorbing_log_pi(self, buffer: RolloutBuffer) -> None:
        if self.airl.absorbing_log_pi == "policy_mean":
            self.absorbing_log_pi = float(buffer.log_probs.mean())

    def expert_log_pi(self) -> np.ndarray:
        """``log pi(a|s)`` ``(M,)`` of the expert pairs under the current policy."""
        obs_n = torch.from_numpy(self.normalizer(self.expert.obs))
        with torch.no_grad():
            return self.actor.log_prob(obs_n, torch.from_numpy(self.expert.actions)).numpy()

    def _expert_inputs(self) -> AIRLInputs:
        # Each kept pair stands for `demo_subsample` pairs, each absorbing transition for one
        # episode end: the latter are down-weighted accordingly (docs/DESIGN.md §8.5).
        return self.inputs(self.expert, self.expert_log_pi(), 1.0 / self.config.demo_subsample)

    # ----------------------------------------------------------------------------- update

    def loss(self, expert: AIRLInputs, policy: AIRLInputs) -> DiscriminatorLoss:
        """GAIL's classification loss on AIRL's logits, plus the gradient penalty on f's inputs."""
        cfg = self.config
        loss = classification_loss(
            airl_logits(self.net, expert),
            airl_logits(self.net, policy),
            expert.weights,
            policy.weights,
            cfg.ent_coef,
        )
        if cfg.grad_penalty > 0:
            n = min(len(expert), len(policy))
            expert, policy = expert.index(torch.arange(n)), policy.index(torch.arange(n))
            if self.airl.absorbing and not self.airl.absorbing_grad_penalty:
                # pairs into the absorbing state stay out: it is not on a path between states
                living = torch.nonzero((expert.next_h_in[:, -1] == 0) & (policy.next_h_in[:, -1] == 0))[:, 0]
                expert, policy, n = expert.index(living), policy.index(living), len(living)
            if n:
                loss.total = loss.total + cfg.grad_penalty * self._grad_penalty(expert, policy)
        return loss

    def _grad_penalty(self, expert: AIRLInputs, policy: AIRLInputs) -> torch.Tensor:
        """``mean (|grad f| - 1)^2`` at random interpolates of paired expert and policy inputs."""
        n = len(expert)
        alpha = torch.rand((n, 1), generator=self.torch_rng)
        mixed = [
            (alpha * getattr(expert, k) + (1 - alpha) * getattr(policy, k)).requires_grad_(True)
            for k in ("g_in", "h_in", "next_h_in")
        ]
        f = self.net(*mixed, torch.ones(n))
        grads = torch.autograd.grad(f.sum(), mixed, create_graph=True)
        norm = torch.sqrt(sum((g * g).sum(dim=1) for g in grads))  # type: ignore[arg-type]
        return ((norm - 1.0) ** 2).mean()

    def update(self, buffer: RolloutBuffer) -> dict[str, float]:
        """Train D on the expert vs. this rollout (+ replayed recent rollouts)."""
        cfg = self.config
        self._set_absorbing_log_pi(buffer)
        self.replay.append((GAIL.policy_transitions(buffer), buffer.log_probs.reshape(-1).copy()))
        policy = AIRLInputs.concat([self.inputs(t, lp) for t, lp in self.replay])
        expert = self._expert_inputs()
        half = max(1, cfg.batch_size // 2)
        n_policy = len(policy)
        losses, expert_acc, policy_acc = [], [], []
        for _ in range(cfg.updates_per_round):
            order = torch.randperm(n_policy, generator=self.torch_rng)
            for start in range(0, n_policy, half):
                p_idx = order[start : start + half]
                e_idx = torch.randint(0, len(expert), (half,), generator=self.torch_rng)
                loss = self.loss(expert.index(e_idx), policy.index(p_idx))
                self.optimizer.zero_grad(set_to_none=True)
                loss.total.backward()
                self.optimizer.step()
                losses.append(loss.bce.item())
                expert_acc.append(loss.expert_accuracy)
                policy_acc.append(loss.policy_accuracy)
        return {
            "disc_loss": float(np.mean(losses)),
            "disc_acc_expert": float(np.mean(expert_acc)),
            "disc_acc_policy": float(np.mean(policy_acc)),
            "airl_expert_log_pi": float(expert.log_pi[: len(self.expert)].mean()),
            "airl_policy_log_pi": float(buffer.log_probs.mean()),
            **({"airl_absorbing_reward": self.absorbing_reward(expert)} if self.airl.absorbing else {}),
        }

    def relabel(self, buffer: RolloutBuffer) -> np.ndarray | None:
        """Overwrite ``buffer.rewards`` with ``f(s, a, s') - beta log pi(a|s)``, in one batch
        (``beta = airl.entropy_weight``; 1: D's own logit).

        Returns:
            With absorbing states, ``(T, N)`` values ``r_abs / (1 - gamma)`` of the absorbing
            successor for :meth:`RolloutBuffer.compute_advantages`; otherwise None.
        """
        t, n = buffer.rewards.shape
        self._set_absorbing_log_pi(buffer)
        x = self.inputs(GAIL.policy_transitions(buffer), buffer.log_probs.reshape(-1))
        with torch.no_grad():
            steps = x.index(torch.arange(t * n))  # without the absorbing transitions appended
            rewards = (airl_logits(self.net, steps) + (1.0 - self.airl.entropy_weight) * steps.log_pi).numpy()
        buffer.rewards[:] = rewards.reshape(t, n)
        if not self.airl.absorbing:
            return None
        r_abs = self.absorbing_reward()
        value = r_abs / (1.0 - self.gamma) if self.gamma < 1.0 else r_abs
        return np.full((t, n), value, dtype=np.float32)

    def absorbing_reward(self, expert: AIRLInputs | None = None) -> float:
        """The generator's reward in the absorbing state: ``f(s_abs, -, s_abs) - beta log pi_abs``,
        at most :meth:`expert_min_reward` with ``airl.cap_absorbing_reward``."""
        with torch.no_grad():
            logit = float(airl_logits(self.net, self.absorbing_inputs(1))[0])
        learned = logit + (1.0 - self.airl.entropy_weight) * self.absorbing_log_pi
        return min(learned, self.expert_min_reward(expert)) if self.airl.cap_absorbing_reward else learned

    def expert_min_reward(self, expert: AIRLInputs | None = None) -> float:
        """The lowest generator reward ``f - beta log pi`` of the expert's (kept) pairs.

        ``expert``: their inputs under the current policy, if already built (:meth:`_expert_inputs`).
        """
        x = self._expert_inputs() if expert is None else expert
        with torch.no_grad():
            pairs = x.index(torch.arange(len(self.expert)))  # without appended absorbing transitions
            rewards = airl_logits(self.net, pairs) + (1.0 - self.airl.entropy_weight) * pairs.log_pi
        return float(rewards.min())

    # ----------------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        return {
            "reward_net": self.net.state_dict(),
            # what g's input is made of, for export-reward (docs/DESIGN.md §5.2)
            "g_obs_columns": self.g_columns.tolist(),
            "optimizer": self.optimizer.state_dict(),
            "replay": [
                {
                    "obs": p.obs,
                    "actions": p.actions,
                    "next_obs": p.next_obs,
                    "terminated": p.terminated,
                    "log_probs": log_pi,
                }
                for p, log_pi in self.replay
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["reward_net"])
        load_optimizer_state(self.optimizer, state["optimizer"])
        self.replay.clear()
        for p in state["replay"]:
            self.replay.append(
                (
                    replayed_transitions(p, self.n_actions),
                    np.asarray(p["log_probs"], dtype=np.float32),
                )
            )
