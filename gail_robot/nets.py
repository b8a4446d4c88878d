"""Networks: Gaussian MLP actor, value critic and GAIL discriminator.

Every network works on *normalised* observations (see ``gail_robot.policy_io`` for the
convention) and, for the actor, in normalised action units: the env side maps ``[-1, 1]``
to the action bounds. Keeping the networks free of normalisation state makes the
deterministic actor (``forward`` returns the mean) directly exportable to TorchScript.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU}


@dataclass
class NetConfig:
    """Shape of one MLP (stored in checkpoints so a network can be rebuilt without the run's config)."""

    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    """Widths of the hidden layers."""
    activation: str = "tanh"
    """Hidden activation: one of tanh, relu, elu, silu."""

    def __post_init__(self) -> None:
        self.hidden_sizes = [int(h) for h in self.hidden_sizes]
        if not self.hidden_sizes or any(h <= 0 for h in self.hidden_sizes):
            raise ValueError(
                f"hidden_sizes must be a non-empty list of positive ints, got {self.hidden_sizes}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def adam(params: Any, lr: float, **kwargs: Any) -> torch.optim.Adam:
    """Adam with the fused kernel: one op updates every parameter, instead of ~10 ops per tensor.

    Small networks are dominated by per-op overhead on CPU: measured, the GAIL-PPO update of the
    64-64 Hopper actor and critic took 18 % less time (``benchmarks/bench_train.py``).
    """
    return torch.optim.Adam(params, lr=lr, fused=True, **kwargs)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict`` that also reads checkpoints written before 0.1.1.

    Those stored the boolean options of a parameter group as 0/1 (``maximize``, ``amsgrad``,
    ...), which the fused Adam kernel rejects; the group's options are taken from the optimizer.
    """
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for key, default in optimizer.defaults.items():
            if isinstance(default, bool) and key in group:
                group[key] = bool(group[key])


def mlp(in_dim: int, out_dim: int, config: NetConfig, out_gain: float = 1.0) -> nn.Sequential:
    """An MLP with orthogonal init (hidden gain sqrt(2), output gain ``out_gain``), zero biases.

    Orthogonal init with a small output gain for the policy head is one of the PPO details that
    measurably matters (Andrychowicz et al. 2021, "What matters in on-policy RL").
    """
    layers: list[nn.Module] = []
    last = in_dim
    for width in config.hidden_sizes:
        linear = nn.Linear(last, width)
        nn.init.orthogonal_(linear.weight, gain=math.sqrt(2.0))
        nn.init.zeros_(linear.bias)
        layers += [linear, ACTIVATIONS[config.activation]()]
        last = width
    head = nn.Linear(last, out_dim)
    nn.init.orthogonal_(head.weight, gain=out_gain)
    nn.init.zeros_(head.bias)
    layers.append(head)
    return nn.Sequential(*layers)


class GaussianActor(nn.Module):
    """Diagonal Gaussian policy with a state-independent log-std.

    ``forward(obs_n)`` returns the mean action ``(B, act_dim)`` (the deterministic policy, in
    normalised units, before clipping) so the module itself is the exportable actor.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, config: NetConfig | None = None, init_log_std: float = 0.0
    ):
        super().__init__()
        self.config = config or NetConfig()
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)
        self.mean_net = mlp(self.obs_dim, self.act_dim, self.config, out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((self.act_dim,), float(init_log_std)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Mean action ``(B, act_dim)`` for normalised observations ``(B, obs_dim) float32``."""
        return self.mean_net(obs)

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Normal:
        """The action distribution (independent Normal per dimension; sum log-probs over the last axis)."""
        mean = self.mean_net(obs)
        return torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean))

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Log-density ``(B,)`` of ``actions (B, act_dim)`` (unclipped samples)."""
        return self.log_prob_and_entropy(obs, actions)[0]

    def log_prob_and_entropy(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log pi(a|s) (B,), entropy (scalar))`` in closed form.

        The same numbers as :meth:`distribution` gives, without building a distribution object
        (and validating its arguments) on every minibatch of the update loops.
        """
        mean = self.mean_net(obs)
        z = (actions - mean) * torch.exp(-self.log_std)
        log_prob = -0.5 * (z * z).sum(-1) - self.log_std.sum() - 0.5 * math.log(2 * math.pi) * self.act_dim
        entropy = self.log_std.sum() + 0.5 * (1.0 + math.log(2 * math.pi)) * self.act_dim
        return log_prob, entropy

    def spec(self) -> dict[str, Any]:
        """Plain-data description used to rebuild the module from a checkpoint."""
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "net": self.config.to_dict()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> GaussianActor:
        return cls(int(spec["obs_dim"]), int(spec["act_dim"]), NetConfig(**spec["net"]))


class Critic(nn.Module):
    """State-value function ``V(obs_n) -> (B,)``."""

    def __init__(self, obs_dim: int, config: NetConfig | None = None):
        super().__init__()
        self.config = config or NetConfig()
        self.net = mlp(int(obs_dim), 1, self.config, out_gain=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


class Discriminator(nn.Module):
    """GAIL discriminator: a logit ``(B,)`` with the expert-is-high convention.

    ``logit = log D - log(1 - D)`` where ``D = P(expert | input)``. The input is the concatenation
    the caller builds: ``(s, a)`` or ``(s, s')`` in normalised units, optionally with an absorbing
    indicator column.
    """

    def __init__(self, in_dim: int, config: NetConfig | None = None):
        super().__init__()
        self.config = config or NetConfig(hidden_sizes=[100, 100], activation="tanh")
        self.in_dim = int(in_dim)
        # A small output layer starts D at chance (logits ~ 0): early rewards are neutral, not random.
        self.net = mlp(self.in_dim, 1, self.config, out_gain=0.01)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs).squeeze(-1)


def flat_params(module: nn.Module | Sequence[nn.Parameter]) -> torch.Tensor:
    """All parameters as one flat vector (a copy)."""
    params = module.parameters() if isinstance(module, nn.Module) else module
    return torch.cat([p.detach().reshape(-1) for p in params])


def set_flat_params(module: nn.Module | Sequence[nn.Parameter], flat: torch.Tensor) -> None:
    """Write a flat vector (from :func:`flat_params`) back into the parameters, in place."""
    params = list(module.parameters() if isinstance(module, nn.Module) else module)
    total = sum(p.numel() for p in params)
    if flat.numel() != total:
        raise ValueError(f"flat vector has {flat.numel()} elements, parameters need {total}")
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(flat[offset : offset + n].view_as(p))
            offset += n
