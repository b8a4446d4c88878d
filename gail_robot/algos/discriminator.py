"""Discriminator training: BCE with logits, expert is high, optional gradient penalty and entropy bonus."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from gail_robot.nets import Discriminator, adam


@dataclass
class DiscriminatorLoss:
    """Loss terms of one discriminator batch (tensors keep the graph of ``total``)."""

    total: torch.Tensor
    bce: torch.Tensor
    expert_accuracy: float
    policy_accuracy: float


def discriminator_loss(
    disc: Discriminator,
    expert: torch.Tensor,
    policy: torch.Tensor,
    expert_weights: torch.Tensor | None = None,
    policy_weights: torch.Tensor | None = None,
    grad_penalty: float = 0.0,
    ent_coef: float = 0.0,
    torch_rng: torch.Generator | None = None,
) -> DiscriminatorLoss:
    """Binary cross-entropy with logits (expert label 1, policy label 0), plus regularisers.

    Args:
        disc: the discriminator.
        expert: ``(B_e, D) float32`` expert inputs.
        policy: ``(B_p, D) float32`` policy inputs.
        expert_weights: optional ``(B_e,)`` sample weights (absorbing transitions, subsampling).
        policy_weights: optional ``(B_p,)`` sample weights.
        grad_penalty: weight of ``(||grad_x D(x_hat)|| - 1)^2`` on interpolates (Gulrajani et al. 2017).
        ent_coef: weight of the (negated) mean Bernoulli entropy of D's output.
        torch_rng: RNG of the interpolation coefficients.
    """
    expert_logits = disc(expert)
    policy_logits = disc(policy)
    loss = classification_loss(expert_logits, policy_logits, expert_weights, policy_weights, ent_coef)
    if grad_penalty > 0:
        n = min(expert.shape[0], policy.shape[0])
        alpha = torch.rand((n, 1), generator=torch_rng)
        mixed = (alpha * expert[:n] + (1 - alpha) * policy[:n]).requires_grad_(True)
        grads = torch.autograd.grad(disc(mixed).sum(), mixed, create_graph=True)[0]
        loss.total = loss.total + grad_penalty * ((grads.norm(dim=1) - 1.0) ** 2).mean()
    return loss


def classification_loss(
    expert_logits: torch.Tensor,
    policy_logits: torch.Tensor,
    expert_weights: torch.Tensor | None = None,
    policy_weights: torch.Tensor | None = None,
    ent_coef: float = 0.0,
) -> DiscriminatorLoss:
    """The classification part of a discriminator loss, from logits (GAIL's and AIRL's).

    Weighted binary cross-entropy with logits (expert label 1, policy label 0), each class half of
    the loss whatever the batch sizes, minus ``ent_coef`` times the mean Bernoulli entropy of D.
    """
    # Each class contributes half of the loss, whatever the batch sizes.
    expert_bce = F.binary_cross_entropy_with_logits(
        expert_logits, torch.ones_like(expert_logits), weight=expert_weights, reduction="sum"
    ) / (expert_weights.sum() if expert_weights is not None else expert_logits.numel())
    policy_bce = F.binary_cross_entropy_with_logits(
        policy_logits, torch.zeros_like(policy_logits), weight=policy_weights, reduction="sum"
    ) / (policy_weights.sum() if policy_weights is not None else policy_logits.numel())
    bce = 0.5 * (expert_bce + policy_bce)
    total = bce
    if ent_coef > 0:
        logits = torch.cat([expert_logits, policy_logits])
        # Entropy of Bernoulli(sigmoid(l)) written with logsigmoid: stable for large |l|.
        p = torch.sigmoid(logits)
        entropy = -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits)).mean()
        total = total - ent_coef * entropy
    with torch.no_grad():
        expert_acc = (expert_logits > 0).float().mean().item()
        policy_acc = (policy_logits < 0).float().mean().item()
    return DiscriminatorLoss(total, bce, expert_acc, policy_acc)


class DiscriminatorTrainer:
    """A discriminator and its Adam optimiser."""

    def __init__(self, disc: Discriminator, lr: float):
        self.disc = disc
        self.optimizer = adam(disc.parameters(), lr=lr)

    def step(self, expert: torch.Tensor, policy: torch.Tensor, **kwargs: Any) -> DiscriminatorLoss:
        """One gradient step on a batch; keyword arguments go to :func:`discriminator_loss`."""
        loss = discriminator_loss(self.disc, expert, policy, **kwargs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        self.optimizer.step()
        return loss

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.disc(inputs)
