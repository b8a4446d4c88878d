"""Configuration of the SAC expert learner (the ``sac:`` section of a training config).

Kept apart from :mod:`gail_robot.algos.sac` so that :mod:`gail_robot.algos.config` can hold it as
a section without importing the learner (and without an import cycle).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gail_robot.errors import UserError
from gail_robot.nets import ACTIVATIONS


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise UserError(message)


@dataclass
class SACConfig:
    """Soft Actor-Critic (Haarnoja et al. 2018) with twin Q, target networks and automatic entropy tuning.

    SAC steps one env in the learner process (``env.num_envs`` and ``env.vectorization`` do not
    apply): its cost is the gradient updates, not the env. Observations are normalised as
    ``env.normalize_obs`` / ``env.obs_clip`` say; raw observations go into the replay buffer and
    every batch is normalised with the current statistics, so the frozen statistics saved with a
    checkpoint are exactly the ones the actor was last trained with.
    """

    hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden widths of the actor and of each Q network."""
    activation: str = "relu"
    """Hidden activation of actor and critics."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak rate of the target Q networks (target <- (1 - tau) target + tau online)."""
    batch_size: int = 256
    """Transitions per gradient step."""
    buffer_size: int = 1_000_000
    """Replay capacity in transitions (the oldest are overwritten)."""
    learning_starts: int = 5_000
    """Env steps of uniform random actions before the first gradient step."""
    gradient_steps: int = 1
    """Gradient steps per env step (update-to-data ratio)."""
    actor_update_interval: int = 1
    """Update actor and temperature every k-th gradient step (1: every step, as in the SAC paper)."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 1e-3
    """Adam learning rate of the twin Q networks."""
    alpha_lr: float = 1e-3
    """Adam learning rate of log(alpha) (automatic entropy tuning)."""
    init_alpha: float = 1.0
    """Initial entropy temperature (the fixed one when autotune is off)."""
    autotune: bool = True
    """Tune alpha so the policy entropy tracks target_entropy (Haarnoja et al. 2018b)."""
    target_entropy: float | None = None
    """Entropy target in nats; null: -act_dim."""
    log_std_min: float = -5.0
    """Lower bound of the pre-tanh Gaussian log-std."""
    log_std_max: float = 2.0
    """Upper bound of the pre-tanh Gaussian log-std."""
    log_interval: int = 5_000
    """Write a metrics row every this many env steps."""
    save_replay: bool = True
    """Save the replay buffer next to checkpoints/latest.pt so --resume continues with it."""
    device: str = "cpu"
    """Torch device of the networks and updates: cpu, cuda, cuda:N or auto (cuda when available).
    The replay buffer stays in host memory; each batch is copied over once."""

    def __post_init__(self) -> None:
        _check(
            all(int(h) > 0 for h in self.hidden_sizes) and bool(self.hidden_sizes),
            "sac.hidden_sizes must be positive ints",
        )
        _check(self.activation in ACTIVATIONS, f"sac.activation must be one of {sorted(ACTIVATIONS)}")
        _check(0.0 <= self.gamma <= 1.0, f"sac.gamma must be in [0, 1], got {self.gamma}")
        _check(0.0 < self.tau <= 1.0, f"sac.tau must be in (0, 1], got {self.tau}")
        _check(self.batch_size >= 1, f"sac.batch_size must be >= 1, got {self.batch_size}")
        _check(self.buffer_size >= self.batch_size, "sac.buffer_size must be >= sac.batch_size")
        _check(self.learning_starts >= 0, "sac.learning_starts must be >= 0")
        _check(self.gradient_steps >= 1, "sac.gradient_steps must be >= 1")
        _check(self.actor_update_interval >= 1, "sac.actor_update_interval must be >= 1")
        _check(
            self.actor_lr > 0 and self.critic_lr > 0 and self.alpha_lr > 0,
            "sac.actor_lr, sac.critic_lr and sac.alpha_lr must be > 0",
        )
        _check(self.init_alpha > 0, f"sac.init_alpha must be > 0, got {self.init_alpha}")
        _check(self.log_std_min < self.log_std_max, "sac.log_std_min must be < sac.log_std_max")
        _check(self.log_interval >= 1, "sac.log_interval must be >= 1")
        _check(
            self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:"),
            f"sac.device must be cpu, cuda, cuda:N or auto, got {self.device!r}",
        )

    def torch_device(self) -> str:
        """The device to use: ``auto`` resolves to ``cuda`` when torch sees a GPU, else ``cpu``."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
