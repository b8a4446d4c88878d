"""The exported module: the whole policy as one ``nn.Module``, and its compilation to TorchScript.

:class:`ExportedPolicy` maps a raw observation ``(B, obs_dim) float32`` to the deterministic action
``(B, act_dim) float32`` in the environment's own units, clipped to the action bounds. The frozen
observation normalisation, the action unscaling and the clipping live inside it, so a C++ controller
needs nothing from Python (docs/DESIGN.md §5). A policy for a ``Discrete(n)`` action space exports
as :class:`ExportedDiscretePolicy`: the same normalisation, then the argmax of the logits as an
int64 index ``(B,)``.

Scripted, not traced, is the default (``mode="script"``): the wrapper's checks (observation width,
dtype conversion) survive in the graph, nothing depends on an example batch, and an actor with
data-dependent control flow is exported faithfully or refused loudly rather than silently frozen to
one branch. ``mode="trace"`` traces the actor alone (for actors TorchScript cannot compile) and still
scripts the wrapper around it, so both modes keep the same interface and checks.

TorchScript is deprecated on the Python side from torch 2.13; every Python call of it in this package
runs inside :func:`torchscript_calls`, which silences exactly that deprecation warning (libtorch in
C++ is unaffected).
"""

# No ``from __future__ import annotations`` here: TorchScript resolves ExportedPolicy's annotations
# at runtime and cannot evaluate them as strings.
import contextlib
import copy
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from gail_robot.errors import UserError
from gail_robot.nets import normalization_std, normalize_torch
from gail_robot.policy_io import PolicyBundle

MODES = ("script", "trace")


@contextlib.contextmanager
def torchscript_calls() -> Iterator[None]:
    """Silence torch 2.13's "`torch.jit.*` is deprecated" warnings: TorchScript is our chosen format."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.[\w.]+` is deprecated", category=DeprecationWarning
        )
        yield


class NormalizedObsModule(nn.Module):
    """Base of every exported module: the run's frozen observation statistics and their use.

    ``obs_mean`` and ``obs_std`` stay top-level buffers under these names: the C++ loader reads them
    (``module.attr("obs_mean")``). ``normalize`` is ``normalize_torch`` (the mirror of ``core.normalize``).
    """

    obs_mean: torch.Tensor  # (obs_dim,) float64
    obs_std: torch.Tensor  # (obs_dim,) float64, normalization_std(var)

    def __init__(self, obs_mean: np.ndarray, obs_var: np.ndarray, obs_clip: float) -> None:
        super().__init__()
        self.obs_dim = int(obs_mean.shape[0])
        self.obs_clip = float(obs_clip)
        self.register_buffer("obs_mean", torch.from_numpy(np.array(obs_mean, dtype=np.float64)))
        self.register_buffer("obs_std", normalization_std(obs_var))

    def check_obs(self, obs: torch.Tensor) -> None:
        if obs.dim() != 2 or obs.size(1) != self.obs_dim:
            raise ValueError(f"expected observations of shape (B, {self.obs_dim}), got {list(obs.shape)}")

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return normalize_torch(obs, self.obs_mean, self.obs_std, self.obs_clip)


class ExportedPolicy(NormalizedObsModule):
    """Raw observation ``(B, obs_dim)`` -> clipped action ``(B, act_dim) float32`` in env units.

    ``obs_n = normalize_torch(obs, mean, std, obs_clip)`` (the mirror of ``core.normalize``);
    ``action = low + (clip(actor(obs_n), -1, 1) + 1) / 2 * (high - low)``, clipped to [low, high]
    again because the affine map can overshoot a bound by one float32 rounding. Given the same
    float32 observation the module and :meth:`PolicyBundle.act` feed the actor bit-identical inputs,
    so closed loops do not drift apart through round-off that contact dynamics would amplify.
    """

    action_low: torch.Tensor  # (act_dim,) float32
    action_high: torch.Tensor  # (act_dim,) float32
    action_range: torch.Tensor  # (act_dim,) float32, high - low (the same float32 subtraction, done once)

    def __init__(
        self,
        actor: nn.Module,
        obs_mean: np.ndarray,
        obs_var: np.ndarray,
        obs_clip: float,
        action_low: np.ndarray,
        action_high: np.ndarray,
    ) -> None:
        super().__init__(obs_mean, obs_var, obs_clip)
        self.actor = actor
        self.act_dim = int(action_low.shape[0])
        self.register_buffer("action_low", torch.as_tensor(action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.as_tensor(action_high, dtype=torch.float32))
        self.register_buffer("action_range", self.action_high - self.action_low)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        self.check_obs(obs)
        x = self.normalize(obs)
        a = torch.clamp(self.actor(x), -1.0, 1.0)
        # Every op here runs once per control step: at batch 1 each costs ~1 us of dispatch, so the
        # range is precomputed and the final clip is one op (the same float32 arithmetic as PolicyBundle).
        action = self.action_low + (a + 1.0) * 0.5 * self.action_range
        return torch.clamp(action, self.action_low, self.action_high)


class ExportedDiscretePolicy(NormalizedObsModule):
    """Raw observation ``(B, obs_dim)`` -> the deterministic ``Discrete`` action, int64 ``(B,)``.

    ``argmax(actor(normalize_torch(obs, mean, std, obs_clip)))``: the logits' argmax, as
    :meth:`PolicyBundle.act` (ties go to the lowest index in both).
    """

    def __init__(
        self, actor: nn.Module, obs_mean: np.ndarray, obs_var: np.ndarray, obs_clip: float, n_actions: int
    ) -> None:
        super().__init__(obs_mean, obs_var, obs_clip)
        self.actor = actor
        self.n_actions = int(n_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        self.check_obs(obs)
        x = self.normalize(obs)
        return torch.argmax(self.actor(x), dim=1)


def build_module(bundle: PolicyBundle) -> ExportedPolicy | ExportedDiscretePolicy:
    """The eager wrapper module of ``bundle`` (deep copy of the actor, eval mode, no gradients).

    Raises:
        ValueError: statistics or bounds of the wrong shape, or non-finite action bounds.
    """
    obs_mean = np.asarray(bundle.obs_mean, dtype=np.float64)
    obs_var = np.asarray(bundle.obs_var, dtype=np.float64)
    low = np.asarray(bundle.action_low, dtype=np.float32)
    high = np.asarray(bundle.action_high, dtype=np.float32)
    if obs_mean.ndim != 1 or obs_var.shape != obs_mean.shape:
        raise ValueError(f"obs_mean/obs_var must be (obs_dim,), got {obs_mean.shape} and {obs_var.shape}")
    discrete = bundle.n_actions > 0
    if not discrete and (
        low.ndim != 1 or high.shape != low.shape or not np.all(np.isfinite(low) & np.isfinite(high))
    ):
        raise ValueError("action_low/action_high must be finite (act_dim,) arrays")
    actor = copy.deepcopy(bundle.actor).eval()
    for param in actor.parameters():  # (ScriptModules, e.g. a re-exported actor, lack requires_grad_)
        param.requires_grad_(False)
    if discrete:
        return ExportedDiscretePolicy(
            actor, obs_mean, obs_var, float(bundle.obs_clip), bundle.n_actions
        ).eval()
    return ExportedPolicy(actor, obs_mean, obs_var, float(bundle.obs_clip), low, high).eval()


def example_batch(obs_dim: int, batch: int = 2) -> torch.Tensor:
    """A deterministic example input ``(batch, obs_dim)``; batch >= 2 so nothing specialises on 1."""
    torch_rng = torch.Generator().manual_seed(0)
    return torch.randn(batch, obs_dim, generator=torch_rng)


def to_torchscript(
    module: ExportedPolicy | ExportedDiscretePolicy, mode: str = "script"
) -> torch.jit.ScriptModule:
    """Compile the wrapper to TorchScript (see the module docstring for script vs trace).

    Raises:
        UserError: unknown ``mode``, or an actor TorchScript cannot compile (suggests trace).
    """
    if mode not in MODES:
        raise UserError(f"unknown --mode '{mode}' (choose from {', '.join(MODES)})")
    with torchscript_calls():
        if mode == "trace":
            example = torch.clamp(example_batch(module.obs_dim), -1.0, 1.0)
            module.actor = torch.jit.trace(module.actor, example, check_trace=True)
        try:
            scripted = torch.jit.script(module)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"the actor cannot be compiled by TorchScript ({first}); try --mode trace"
            ) from exc
    return scripted.eval()
