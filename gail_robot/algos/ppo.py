"""PPO generator: the clipped-surrogate update (Schulman et al. 2017) on a shared rollout buffer.

Any on-policy actor (Gaussian or categorical, ``gail_robot.nets``) gives its own log-probabilities
and entropy; the update itself does not depend on the action space.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from gail_robot.algos.config import PPOConfig
from gail_robot.algos.rollout import RolloutBuffer
from gail_robot.nets import Critic, OnPolicyActor, adam, load_optimizer_state


def clipped_surrogate_loss(
    new_log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO policy loss ``-mean(min(r A, clip(r, 1-eps, 1+eps) A))`` and the clipped fraction.

    Args:
        new_log_probs: ``(B,)`` log pi_new(a|s).
        old_log_probs: ``(B,)`` log pi_old(a|s) at collection.
        advantages: ``(B,)``.
        clip_range: epsilon.
    """
    ratio = torch.exp(new_log_probs - old_log_probs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range) * advantages
    clip_fraction = ((ratio - 1.0).abs() > clip_range).float().mean()
    return -torch.min(unclipped, clipped).mean(), clip_fraction


def value_loss(
    new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip_range: float | None
) -> torch.Tensor:
    """``0.5 * mean((V - R)^2)``, or the pessimistic clipped variant around ``old_values``."""
    unclipped = (new_values - returns) ** 2
    if clip_range is None:
        return 0.5 * unclipped.mean()
    clipped_values = old_values + torch.clamp(new_values - old_values, -clip_range, clip_range)
    return 0.5 * torch.max(unclipped, (clipped_values - returns) ** 2).mean()


class PPO:
    """Clipped PPO on actor + critic with one Adam optimiser."""

    def __init__(self, actor: OnPolicyActor, critic: Critic, config: PPOConfig, torch_rng: torch.Generator):
        self.actor = actor
        self.critic = critic
        self.config = config
        self.torch_rng = torch_rng
        self.params = [*actor.parameters(), *critic.parameters()]
        self.optimizer = adam(self.params, lr=config.lr, eps=1e-5)

    def update(self, buffer: RolloutBuffer, progress: float, critic_only: bool = False) -> dict[str, float]:
        """Epochs x minibatches of clipped-surrogate steps on one rollout.

        Args:
            buffer: a rollout with advantages and returns computed.
            progress: fraction of the run done before this update, for LR annealing.
            critic_only: fit the value function only; the actor is left unchanged.

        Returns:
            Metrics: policy_loss, value_loss, entropy, approx_kl, clip_fraction, lr, epochs.
        """
        cfg = self.config
        lr = cfg.lr * (1.0 - progress) if cfg.anneal_lr else cfg.lr
        lr = max(lr, cfg.lr * 1e-3)  # never exactly 0: Adam's last steps still count
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        data = buffer.flat()
        size = data["obs"].shape[0]
        minibatch = max(1, size // cfg.minibatches)
        log: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "entropy", "kl", "clip")}
        epochs_done = 0
        for _epoch in range(cfg.epochs):
            order = torch.randperm(size, generator=self.torch_rng)
            epoch_kl = []
            for start in range(0, size - minibatch + 1, minibatch):
                idx = order[start : start + minibatch]
                obs, actions = data["obs"][idx], data["actions"][idx]
                advantages = data["advantages"][idx]
                if cfg.normalize_advantages and advantages.numel() > 1:
                    # 1e-8: the advantage normalisation's floor (not the observation normaliser's).
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                new_log_probs, entropy = self.actor.log_prob_and_entropy(obs, actions)
                log_ratio = new_log_probs - data["log_probs"][idx]
                policy_loss, clip_fraction = clipped_surrogate_loss(
                    new_log_probs, data["log_probs"][idx], advantages, cfg.clip_range
                )
                v_loss = value_loss(
                    self.critic(obs), data["values"][idx], data["returns"][idx], cfg.clip_value
                )
                if critic_only:
                    loss = cfg.vf_coef * v_loss
                else:
                    loss = policy_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    # k3 estimator of KL(old || new): unbiased and >= 0 (Schulman, "Approximating KL").
                    approx_kl = ((log_ratio.exp() - 1) - log_ratio).mean().item()
                epoch_kl.append(approx_kl)
                log["policy_loss"].append(policy_loss.item())
                log["value_loss"].append(v_loss.item())
                log["entropy"].append(entropy.item())
                log["kl"].append(approx_kl)
                log["clip"].append(clip_fraction.item())
            epochs_done += 1
            if cfg.target_kl is not None and float(np.mean(epoch_kl)) > cfg.target_kl:
                break
        return {
            "policy_loss": float(np.mean(log["policy_loss"])),
            "value_loss": float(np.mean(log["value_loss"])),
            "entropy": float(np.mean(log["entropy"])),
            "approx_kl": float(np.mean(log["kl"])),
            "clip_fraction": float(np.mean(log["clip"])),
            "lr": lr,
            "epochs": float(epochs_done),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_optimizer_state(self.optimizer, state["optimizer"])
