"""Networks: the actor classes and their spec registry, value critics, the GAIL discriminator.

Every network works on *normalised* observations (``gail_robot.core.normalize``; in torch,
:func:`normalize_torch`) and, for the actors, in normalised action units: the env side maps
``[-1, 1]`` to the action bounds (docs/DESIGN.md §2). Keeping the networks free of normalisation
state makes every deterministic actor (``forward``) directly exportable to TorchScript.

An actor describes itself as plain data (``spec()``, stored in checkpoints as ``actor_spec``);
:func:`actor_from_spec` rebuilds any registered actor from it, so loading a policy never imports a
training module (docs/DESIGN.md §5).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gail_robot.core import NORM_EPSILON
from gail_robot.errors import UserError

_LOG_2PI = math.log(2.0 * math.pi)

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


def normalization_std(var: Any) -> torch.Tensor:
    """``sqrt(var + core.NORM_EPSILON)`` as a float64 tensor: computed once per set of statistics.

    The C++ kernel of :func:`gail_robot.core.normalize` computes the same correctly rounded float64
    square root once per call; holding it saves two ops per call of :func:`normalize_torch`
    (about 4 us at batch 1, per control step of an exported policy).
    """
    var64 = torch.as_tensor(var).to(torch.float64)
    return torch.sqrt(var64 + NORM_EPSILON)


def normalize_torch(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, clip: float) -> torch.Tensor:
    """Torch mirror of :func:`gail_robot.core.normalize` (docs/DESIGN.md §2), scriptable, bit for bit.

    ``clip((x - mean) / std, -clip, clip)`` computed in float64 and rounded to float32 once, with
    ``std = normalization_std(var)``: the operations and order of the C++ kernel, so the result
    equals ``core.normalize(x, mean, var, clip)`` exactly, on any device.

    Args:
        x: ``(..., D)`` observations of any float dtype.
        mean: ``(D,)`` mean (float64 keeps it exact).
        std: ``(D,) float64`` from :func:`normalization_std`.
        clip: positive clip bound.

    Returns:
        float32 tensor with the shape of ``x``.
    """
    z = (x.to(torch.float64) - mean.to(torch.float64)) / std
    return torch.clamp(z, -clip, clip).to(torch.float32)


#: ``actor_spec["kind"] -> class``. Each class has a ``KIND`` string, ``spec() -> dict`` and
#: ``from_spec(dict)``; a spec without ``kind`` is a :class:`GaussianActor` (the checkpoints
#: written before there were other actors).
ACTOR_CLASSES: dict[str, type[nn.Module]] = {}

_DEFAULT_KIND = "gaussian"

_A = TypeVar("_A", bound=type[nn.Module])


def register_actor(cls: _A) -> _A:
    """Class decorator: make ``cls`` buildable from its spec by :func:`actor_from_spec`."""
    kind = str(cls.KIND)  # type: ignore[attr-defined]
    if kind in ACTOR_CLASSES:
        raise ValueError(f"actor kind {kind!r} is registered twice")
    ACTOR_CLASSES[kind] = cls
    return cls


def actor_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Build the actor a checkpoint's ``actor_spec`` describes (weights still to be loaded).

    Raises:
        UserError: the spec names an actor kind this version does not know.
    """
    kind = str(spec.get("kind", _DEFAULT_KIND))
    cls = ACTOR_CLASSES.get(kind)
    if cls is None:
        known = ", ".join(sorted(ACTOR_CLASSES))
        raise UserError(f"unknown actor kind {kind!r} in the checkpoint (this version knows: {known})")
    return cls.from_spec(spec)  # type: ignore[attr-defined]


class _GradMask:
    """A gradient hook that zeroes the masked entries (a class, not a lambda: picklable)."""

    def __init__(self, keep: torch.Tensor) -> None:
        self.keep = keep

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        return grad * self.keep


def mask_actor_inputs(actor: nn.Module, ignore_obs: Sequence[int] | np.ndarray) -> Any:
    """Make ``actor`` blind to the observation dims ``ignore_obs`` (``policy.ignore_obs``, ``bc.ignore_obs``).

    The first linear layer's weights from those dims are zeroed and a gradient hook masks their
    gradients, so any gradient optimiser (Adam, with or without weight decay; TRPO's natural
    gradient, whose Fisher products go through the same hook) leaves them at exactly 0. Returns the
    hook's handle (``.remove()`` lifts the mask), or None when ``ignore_obs`` is empty.
    """
    if len(ignore_obs) == 0:
        return None
    first = next(m for m in actor.modules() if isinstance(m, nn.Linear))
    keep = torch.ones_like(first.weight)
    keep[:, torch.as_tensor(np.asarray(ignore_obs), dtype=torch.long)] = 0.0
    with torch.no_grad():
        first.weight.mul_(keep)
    return first.weight.register_hook(_GradMask(keep))


@register_actor
class GaussianActor(nn.Module):
    """Diagonal Gaussian policy with a state-independent log-std (PPO, TRPO, GAIL, BC).

    ``forward(obs_n)`` returns the mean action ``(B, act_dim)`` (the deterministic policy, in
    normalised units, before clipping) so the module itself is the exportable actor. Its spec has
    no ``kind`` key (the registry's default), as in every checkpoint written before SAC.
    """

    KIND: ClassVar[str] = _DEFAULT_KIND

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

    # -- the on-policy actor interface (algos/rollout.py, ppo.py, trpo.py; docs/DESIGN.md §5) --

    #: the actions are indices (CategoricalActor) rather than vectors
    DISCRETE: ClassVar[bool] = False
    #: properties TorchScript must not compile (the export scripts ``forward`` only)
    __jit_unused_properties__: ClassVar[list[str]] = ["noise_dim", "rollout_net"]

    @property
    def noise_dim(self) -> int:
        """Width of the per-step noise the learner draws for a rollout: one N(0, 1) per action dimension."""
        return self.act_dim

    @property
    def rollout_net(self) -> nn.Sequential:
        """The MLP whose output the rollout workers compute (``core.mlp_forward``): the mean."""
        return self.mean_net

    def draw_noise(self, shape: tuple[int, int], torch_rng: torch.Generator) -> torch.Tensor:
        """Standard-normal rollout noise ``(T, N, act_dim)`` from the learner's RNG."""
        return torch.randn((*shape, self.act_dim), generator=torch_rng)

    def noisy_action(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The sampled action ``mean + std * noise`` ``(B, act_dim)`` (torch stepping)."""
        return self(obs) + self.log_std.exp() * noise

    def rollout_log_probs(
        self, obs: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """``log pi(a|s)`` ``(T, N)`` of a rollout's actions ``mean + std * noise``, from the noise alone.

        ``log N(mean + std z | mean, std) = -z^2 / 2 - log std - log(2 pi) / 2`` summed over the
        dimensions: closed form, no pass over the observations.
        """
        log_std = self.log_std.detach()
        log_prob_const = -(log_std.sum() + 0.5 * math.log(2 * math.pi) * log_std.numel())
        return log_prob_const - 0.5 * (noise * noise).sum(-1)

    def frozen(self, obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The current distribution at ``obs`` as detached tensors (TRPO's ``pi_old``)."""
        with torch.no_grad():
            return self(obs), self.log_std.detach().clone()

    def kl_from(self, old: tuple[torch.Tensor, ...], obs: torch.Tensor) -> torch.Tensor:
        """Mean over states of ``KL(pi_old || pi)`` for diagonal Gaussians (``old`` from :meth:`frozen`)."""
        old_mean, old_log_std = old
        new = self.distribution(obs)
        previous = torch.distributions.Normal(old_mean, old_log_std.exp().expand_as(old_mean))
        return torch.distributions.kl_divergence(previous, new).sum(-1).mean()

    def spec(self) -> dict[str, Any]:
        """Plain-data description used to rebuild the module from a checkpoint."""
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "net": self.config.to_dict()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> GaussianActor:
        return cls(int(spec["obs_dim"]), int(spec["act_dim"]), NetConfig(**spec["net"]))


#: float32's smallest normal number: uniform draws are floored to it so ``-log(-log(u))`` is finite
_TINY = torch.finfo(torch.float32).tiny


@register_actor
class CategoricalActor(nn.Module):
    """Categorical policy over ``Discrete(n)`` actions: an MLP of logits (PPO, TRPO, GAIL, BC).

    ``forward(obs_n)`` returns the logits ``(B, n_actions)``; the deterministic action is their
    argmax (:meth:`act`, the exported module). Rollouts sample with the Gumbel-max trick:
    ``argmax(logits + g)`` with ``g = -log(-log(u))``, ``u ~ U(0, 1)``, is a sample of
    ``softmax(logits)`` (Gumbel 1954; Maddison et al. 2014), so the learner draws all the noise
    ``(T, N, n_actions)`` and the workers only compute logits with ``core.mlp_forward``, exactly
    like the Gaussian case (docs/DESIGN.md §9). Actions are int64 indices ``0 .. n_actions - 1``.
    """

    KIND: ClassVar[str] = "categorical"
    DISCRETE: ClassVar[bool] = True
    __jit_unused_properties__: ClassVar[list[str]] = ["noise_dim", "rollout_net"]

    def __init__(self, obs_dim: int, n_actions: int, config: NetConfig | None = None):
        super().__init__()
        if int(n_actions) < 2:
            raise ValueError(f"a categorical policy needs at least 2 actions, got {n_actions}")
        self.config = config or NetConfig()
        self.obs_dim = int(obs_dim)
        self.n_actions = int(n_actions)
        # Gain 0.01: the first policy is near uniform (as the Gaussian head starts near its mean).
        self.logits_net = mlp(self.obs_dim, self.n_actions, self.config, out_gain=0.01)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_actions)`` for normalised observations ``(B, obs_dim) float32``."""
        return self.logits_net(obs)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action: ``argmax`` of the logits, int64 ``(B,)``."""
        return torch.argmax(self.logits_net(obs), dim=-1)

    @property
    def noise_dim(self) -> int:
        """Width of the per-step noise: one Gumbel variable per action."""
        return self.n_actions

    @property
    def rollout_net(self) -> nn.Sequential:
        """The MLP whose output the rollout workers compute (``core.mlp_forward``): the logits."""
        return self.logits_net

    def draw_noise(self, shape: tuple[int, int], torch_rng: torch.Generator) -> torch.Tensor:
        """Standard Gumbel noise ``(T, N, n_actions)`` float32 from the learner's RNG."""
        u = torch.rand((*shape, self.n_actions), generator=torch_rng).clamp_(min=_TINY)
        return -torch.log(-torch.log(u))

    def noisy_action(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The Gumbel-max sample ``argmax(logits + noise)`` int64 ``(B,)`` (torch stepping)."""
        return torch.argmax(self(obs) + noise, dim=-1)

    def rollout_log_probs(
        self, obs: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """``log pi(a|s)`` ``(T, N)`` of a rollout's actions: one batched pass over its observations."""
        t, n = actions.shape
        return self.log_prob(obs.reshape(t * n, -1), actions.reshape(-1)).reshape(t, n)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``log softmax(logits)[a]`` ``(B,)`` of int64 ``actions (B,)``."""
        return self.log_prob_and_entropy(obs, actions)[0]

    def log_prob_and_entropy(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log pi(a|s) (B,), mean entropy over the batch (scalar))`` from one log-softmax."""
        log_p = F.log_softmax(self.logits_net(obs), dim=-1)
        log_prob = log_p.gather(-1, actions.long().reshape(-1, 1)).squeeze(-1)
        entropy = -(log_p.exp() * log_p).sum(-1).mean()
        return log_prob, entropy

    def frozen(self, obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The current log-probabilities of every action at ``obs``, detached (TRPO's ``pi_old``)."""
        with torch.no_grad():
            return (F.log_softmax(self.logits_net(obs), dim=-1),)

    def kl_from(self, old: tuple[torch.Tensor, ...], obs: torch.Tensor) -> torch.Tensor:
        """Mean over states of ``KL(pi_old || pi) = sum_a p_old (log p_old - log p)``."""
        (old_log_p,) = old
        log_p = F.log_softmax(self.logits_net(obs), dim=-1)
        return (old_log_p.exp() * (old_log_p - log_p)).sum(-1).mean()

    def spec(self) -> dict[str, Any]:
        """Plain-data description used to rebuild the module from a checkpoint."""
        return {
            "kind": self.KIND,
            "obs_dim": self.obs_dim,
            "n_actions": self.n_actions,
            "net": self.config.to_dict(),
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> CategoricalActor:
        return cls(int(spec["obs_dim"]), int(spec["n_actions"]), NetConfig(**spec["net"]))


#: The actors the on-policy trainers (PPO, TRPO, GAIL, BC) build.
OnPolicyActor = GaussianActor | CategoricalActor


def make_policy_actor(
    obs_dim: int, act_dim: int, n_actions: int, config: NetConfig, init_log_std: float = 0.0
) -> OnPolicyActor:
    """The on-policy actor for an action space: categorical for ``n_actions > 0`` (``Discrete(n)``),
    else Gaussian over ``act_dim`` continuous dimensions."""
    if n_actions > 0:
        return CategoricalActor(obs_dim, n_actions, config)
    return GaussianActor(obs_dim, act_dim, config, init_log_std)


@register_actor
class TanhGaussianActor(nn.Module):
    """Tanh-squashed diagonal Gaussian policy with a state-dependent log-std (SAC).

    One MLP outputs ``(mu, raw_log_std)`` side by side; ``log_std`` is squashed smoothly into
    ``[log_std_min, log_std_max]``. ``forward(obs_n)`` returns ``tanh(mu)`` ``(B, act_dim)``, the
    deterministic action in normalised units (the ``PolicyBundle`` convention), and is
    TorchScript-compatible.
    """

    KIND: ClassVar[str] = "tanh_gaussian"

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        config: NetConfig | None = None,
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
    ):
        super().__init__()
        self.config = config or NetConfig(hidden_sizes=[256, 256], activation="relu")
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)
        self.log_std_min = float(log_std_min)
        self.log_std_max = float(log_std_max)
        self.net = mlp(self.obs_dim, 2 * self.act_dim, self.config, out_gain=0.01)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic action ``tanh(mu)`` ``(B, act_dim)`` for normalised ``obs (B, obs_dim) float32``."""
        return torch.tanh(self.net(obs)[..., : self.act_dim])

    def mean_and_log_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-tanh mean and bounded log-std, each ``(B, act_dim)``."""
        out = self.net(obs)
        mu, raw = out[..., : self.act_dim], out[..., self.act_dim :]
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(raw) + 1.0)
        return mu, log_std

    def sample(
        self, obs: torch.Tensor, torch_rng: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample ``a (B, act_dim)`` in ``(-1, 1)`` and its log-density ``(B,)``.

        ``log pi(a|s) = log N(u; mu, std) - sum log(1 - tanh(u)^2)`` with the stable form
        ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))`` (Haarnoja et al. 2018, appendix C).

        Args:
            obs: ``(B, obs_dim)`` normalised observations.
            torch_rng: RNG of the noise (on ``obs``'s device); None: torch's global RNG.
        """
        mu, log_std = self.mean_and_log_std(obs)
        eps = torch.randn(mu.shape, generator=torch_rng, dtype=mu.dtype, device=mu.device)
        u = mu + log_std.exp() * eps
        log_prob = (-0.5 * eps * eps - log_std).sum(-1) - 0.5 * _LOG_2PI * self.act_dim
        log_prob = log_prob - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
        return torch.tanh(u), log_prob

    def spec(self) -> dict[str, Any]:
        """Plain-data description used to rebuild the module from a checkpoint."""
        return {
            "kind": self.KIND,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "net": self.config.to_dict(),
            "log_std_min": self.log_std_min,
            "log_std_max": self.log_std_max,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> TanhGaussianActor:
        return cls(
            int(spec["obs_dim"]),
            int(spec["act_dim"]),
            NetConfig(**spec["net"]),
            float(spec.get("log_std_min", -5.0)),
            float(spec.get("log_std_max", 2.0)),
        )


class TwinQ(nn.Module):
    """``n`` independent Q networks ``Q_i(obs_n, a)`` evaluated as one batched MLP (SAC's critics).

    Layer ``l`` holds weights ``(n, in, out)`` and biases ``(n, 1, out)``; the forward pass is one
    ``baddbmm`` per layer for all members. Each member is initialised like ``nn.Linear``
    (uniform in ``±1/sqrt(fan_in)``), as the reference SAC implementations do.
    """

    def __init__(self, in_dim: int, config: NetConfig, n: int = 2):
        super().__init__()
        sizes = [int(in_dim), *config.hidden_sizes, 1]
        self.n = int(n)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(sizes):
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(self.n, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(self.n, 1, fan_out).uniform_(-bound, bound)))
        self.activation = ACTIVATIONS[config.activation]()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Q values ``(n, B)`` of ``inputs (B, obs_dim + act_dim)``."""
        h = inputs.unsqueeze(0).expand(self.n, -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = self.activation(h)
        return h.squeeze(-1)


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


class AIRLRewardNet(nn.Module):
    """AIRL's discriminator function ``f(s, a, s') = g(s[, a]) + gamma * h(s') - h(s)`` (Fu et al. 2018).

    ``g`` is the reward approximator (state-only ``g(s)`` is the disentangled reward that transfers
    to new dynamics; ``g(s, a)`` otherwise) and ``h`` the shaping potential. Inputs are built by the
    caller in normalised units; with absorbing states (Kostrikov et al. 2019) each input ends with an
    absorbing-indicator column. The AIRL discriminator is ``D = exp f / (exp f + pi(a|s))``, i.e. the
    logit ``f - log pi(a|s)`` (docs/DESIGN.md §8.8).

    Args:
        g_in_dim: width of ``g``'s input (obs [+ action] [+ flag]).
        h_in_dim: width of ``h``'s input (obs [+ flag]).
        gamma: the discount of the shaping term.
        config: hidden layers of both ``g`` and ``h``.
    """

    def __init__(self, g_in_dim: int, h_in_dim: int, gamma: float, config: NetConfig | None = None):
        super().__init__()
        self.config = config or NetConfig(hidden_sizes=[100, 100], activation="tanh")
        self.gamma = float(gamma)
        # Small output layers start f near 0: D starts at pi / (1 + pi), rewards near -log pi.
        self.g = mlp(int(g_in_dim), 1, self.config, out_gain=0.01)
        self.h = mlp(int(h_in_dim), 1, self.config, out_gain=0.01)

    def reward(self, g_in: torch.Tensor) -> torch.Tensor:
        """``g`` ``(B,)``."""
        return self.g(g_in).squeeze(-1)

    def potential(self, h_in: torch.Tensor) -> torch.Tensor:
        """``h`` ``(B,)``."""
        return self.h(h_in).squeeze(-1)

    def forward(
        self, g_in: torch.Tensor, h_in: torch.Tensor, next_h_in: torch.Tensor, next_mask: torch.Tensor
    ) -> torch.Tensor:
        """``f = g(g_in) + gamma * next_mask * h(next_h_in) - h(h_in)`` ``(B,)``.

        ``next_mask`` ``(B,)`` is 0 where the successor's potential is dropped (a true termination
        without absorbing states), else 1.
        """
        return self.reward(g_in) + self.gamma * next_mask * self.potential(next_h_in) - self.potential(h_in)


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
