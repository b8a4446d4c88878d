"""TRPO generator (Schulman et al. 2015): natural-gradient step in a KL trust region.

Shares the rollout buffer with PPO and differs only in :meth:`TRPO.update`: the policy step
solves ``F x = g`` by conjugate gradient on Fisher-vector products, scales it to the KL bound and
backtracks until the KL is within ``max_kl`` and the surrogate improves; the value function is
fitted separately by a few epochs of Adam regression.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from gail_robot.algos.config import TRPOConfig
from gail_robot.algos.rollout import RolloutBuffer
from gail_robot.nets import (
    Critic,
    GaussianActor,
    OnPolicyActor,
    adam,
    flat_params,
    load_optimizer_state,
    set_flat_params,
)


def flat_grad(
    output: torch.Tensor, params: list[torch.nn.Parameter], create_graph: bool = False
) -> torch.Tensor:
    """Gradient of a scalar w.r.t. ``params`` as one flat vector (zeros for unused params)."""
    grads = torch.autograd.grad(
        output, params, create_graph=create_graph, retain_graph=True, allow_unused=True
    )
    return torch.cat(
        [(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params, strict=True)]
    )


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int, tol: float = 1e-10
) -> torch.Tensor:
    """Approximately solve ``A x = b`` for symmetric positive-definite ``A`` given ``x -> A x``."""
    x = torch.zeros_like(b)
    residual = b.clone()
    direction = b.clone()
    rr = residual.dot(residual)
    for _ in range(iters):
        if rr < tol:
            break
        a_dir = matvec(direction)
        alpha = rr / (direction.dot(a_dir) + 1e-12)
        x += alpha * direction
        residual -= alpha * a_dir
        rr_new = residual.dot(residual)
        direction = residual + (rr_new / rr) * direction
        rr = rr_new
    return x


def gaussian_kl(
    old_mean: torch.Tensor, old_log_std: torch.Tensor, actor: GaussianActor, obs: torch.Tensor
) -> torch.Tensor:
    """Mean over states of KL(pi_old || pi_new) for diagonal Gaussians (:meth:`GaussianActor.kl_from`)."""
    return actor.kl_from((old_mean, old_log_std), obs)


class TRPO:
    """TRPO policy step + separate Adam value regression."""

    def __init__(self, actor: OnPolicyActor, critic: Critic, config: TRPOConfig, torch_rng: torch.Generator):
        self.actor = actor
        self.critic = critic
        self.config = config
        self.torch_rng = torch_rng
        self.value_optimizer = adam(critic.parameters(), lr=config.vf_lr)

    def update(self, buffer: RolloutBuffer, progress: float, critic_only: bool = False) -> dict[str, float]:
        """One trust-region policy step and a value fit on one rollout.

        Args:
            buffer: the rollout, advantages and returns filled in.
            progress: fraction of the run done before this update (for ``anneal_kl``).
            critic_only: fit the value function only; the actor is left unchanged.
        """
        cfg = self.config
        data = buffer.flat()
        if critic_only:
            return {"value_loss": self._fit_value(data["obs"], data["returns"]), "approx_kl": 0.0}
        max_kl = cfg.max_kl * (1.0 - progress) if cfg.anneal_kl else cfg.max_kl
        obs, actions, old_log_probs = data["obs"], data["actions"], data["log_probs"]
        advantages = data["advantages"]
        if cfg.normalize_advantages and advantages.numel() > 1:
            # 1e-8: the advantage normalisation's floor (not the observation normaliser's).
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        params = list(self.actor.parameters())
        # pi_old as detached tensors; the actor computes KL(pi_old || pi) in closed form (Gaussian
        # or categorical), so the trust region does not depend on the action space.
        old = self.actor.frozen(obs)

        def surrogate() -> torch.Tensor:
            log_probs, entropy = self.actor.log_prob_and_entropy(obs, actions)
            ratio = torch.exp(log_probs - old_log_probs)
            return (ratio * advantages).mean() + cfg.ent_coef * entropy

        surr = surrogate()
        grad = flat_grad(surr, params)
        # Fisher-vector products on a subsample would be cheaper; the rollouts here are small enough.
        kl_for_fvp = self.actor.kl_from(old, obs)
        kl_grad = flat_grad(kl_for_fvp, params, create_graph=True)

        def fisher_vector(v: torch.Tensor) -> torch.Tensor:
            return flat_grad(kl_grad.dot(v), params).detach() + cfg.cg_damping * v

        step_dir = conjugate_gradient(fisher_vector, grad.detach(), cfg.cg_iters)
        shs = 0.5 * step_dir.dot(fisher_vector(step_dir))
        step_scale = torch.sqrt(2.0 * max_kl / (shs + 1e-12)) if shs > 0 else torch.tensor(0.0)
        full_step = step_scale * step_dir
        expected_improve = grad.detach().dot(full_step).item()
        old_params = flat_params(params)
        old_surr = surr.item()
        accepted, kl_value, new_surr, fraction = False, 0.0, old_surr, 1.0
        for _ in range(cfg.line_search_steps):
            set_flat_params(params, old_params + fraction * full_step)
            with torch.no_grad():
                kl_value = self.actor.kl_from(old, obs).item()
                new_surr = surrogate().item()
            if kl_value <= max_kl and new_surr > old_surr and np.isfinite(new_surr):
                accepted = True
                break
            fraction *= cfg.backtrack_ratio
        if not accepted:
            set_flat_params(params, old_params)
            kl_value, new_surr = 0.0, old_surr
        value_loss = self._fit_value(obs, data["returns"])
        with torch.no_grad():
            # (a Gaussian's entropy is the same in every state, a categorical one's is the batch mean)
            entropy = self.actor.log_prob_and_entropy(obs, actions)[1].item()
        return {
            "policy_loss": -new_surr,
            "value_loss": value_loss,
            "entropy": entropy,
            "approx_kl": kl_value,
            "max_kl": max_kl,
            "step_accepted": float(accepted),
            "step_fraction": fraction if accepted else 0.0,
            "expected_improvement": expected_improve,
            "surrogate_improvement": new_surr - old_surr,
        }

    def _fit_value(self, obs: torch.Tensor, returns: torch.Tensor) -> float:
        size = obs.shape[0]
        minibatch = max(1, size // self.config.vf_minibatches)
        losses = []
        for _ in range(self.config.vf_epochs):
            order = torch.randperm(size, generator=self.torch_rng)
            for start in range(0, size - minibatch + 1, minibatch):
                idx = order[start : start + minibatch]
                loss = 0.5 * ((self.critic(obs[idx]) - returns[idx]) ** 2).mean()
                self.value_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.value_optimizer.step()
                losses.append(loss.item())
        return float(np.mean(losses))

    def state_dict(self) -> dict[str, Any]:
        return {"value_optimizer": self.value_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_optimizer_state(self.value_optimizer, state["value_optimizer"])
