"""Soft Actor-Critic for training experts on the true env reward (``gail-robot train --algo sac``).

On-policy PPO/TRPO need tens of millions of steps on Humanoid; SAC reaches a walking humanoid in
about a million (CleanRL: ~5000 after 1M steps). Experts are plain RL, so an off-policy learner
is the right tool for them; imitation (GAIL) keeps its on-policy generators.

The learner, one process, one env:

- :class:`TanhGaussianActor`: ``a = tanh(mu + std * eps)``; its ``forward`` is the deterministic
  ``tanh(mu)`` in normalised ``[-1, 1]`` action units, so checkpoints load through
  :func:`gail_robot.policy_io.load_policy` like any other actor (``actor_spec["kind"]`` names it).
- :class:`TwinQ`: both Q networks as one stack of batched matrix products (one op per layer for
  the pair instead of two).
- :class:`ReplayBuffer`: one preallocated float32 matrix of raw rows
  ``[obs, action, reward, next_obs, terminated]``; a batch is one fancy-indexing gather and one
  ``torch.from_numpy``.
- Truncation (time limit) is not termination: the stored ``next_obs`` is the true final
  observation and the target bootstraps through it; only ``terminated`` cuts the bootstrap
  (:func:`soft_td_target`).

Run directory as for the on-policy trainer (``config.yaml``, ``metrics.jsonl``, ``tb/``,
``checkpoints/latest.pt`` + ``step_*.pt``, ``final.pt``), plus ``checkpoints/replay.npy`` (the
replay buffer of ``latest.pt``, for ``--resume``).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gail_robot.errors import UserError
from gail_robot.nets import ACTIVATIONS, NetConfig, adam, load_optimizer_state, mlp

if TYPE_CHECKING:
    from gail_robot.algos.config import TrainConfig
    from gail_robot.policy_io import PolicyBundle

ACTOR_KIND = "tanh_gaussian"
REPLAY_NAME = "replay.npy"
_LOG_2PI = math.log(2.0 * math.pi)


# ------------------------------------------------------------------------------------ networks


class TanhGaussianActor(nn.Module):
    """Tanh-squashed diagonal Gaussian policy with a state-dependent log-std.

    One MLP outputs ``(mu, raw_log_std)`` side by side; ``log_std`` is squashed smoothly into
    ``[log_std_min, log_std_max]``. ``forward(obs_n)`` returns ``tanh(mu)`` ``(B, act_dim)``, the
    deterministic action in normalised units (the :class:`~gail_robot.policy_io.PolicyBundle`
    convention), and is TorchScript-compatible.
    """

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
        self, obs: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample ``a (B, act_dim)`` in ``(-1, 1)`` and its log-density ``(B,)``.

        ``log pi(a|s) = log N(u; mu, std) - sum log(1 - tanh(u)^2)`` with the stable form
        ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))``.
        """
        mu, log_std = self.mean_and_log_std(obs)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        u = mu + log_std.exp() * eps
        log_prob = (-0.5 * eps * eps - log_std).sum(-1) - 0.5 * _LOG_2PI * self.act_dim
        log_prob = log_prob - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
        return torch.tanh(u), log_prob

    def spec(self) -> dict[str, Any]:
        """Plain-data description used to rebuild the module from a checkpoint."""
        return {
            "kind": ACTOR_KIND,
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
    """``n`` independent Q networks ``Q_i(obs_n, a)`` evaluated as one batched MLP.

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


# ------------------------------------------------------------------------------------ pieces


def soft_td_target(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    next_q: torch.Tensor,
    next_log_prob: torch.Tensor,
    alpha: float | torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """Soft Bellman target ``r + gamma * (1 - terminated) * (min_i Q_i(s', a') - alpha * log pi(a'|s'))``.

    Args:
        rewards: ``(B,)`` env rewards.
        terminated: ``(B,)`` 1.0 where the episode truly ended (a time-limit truncation is 0.0:
            the final observation is a real state and its value is bootstrapped).
        next_q: ``(n, B)`` target-network Q values of ``(s', a')``, ``a' ~ pi(.|s')``.
        next_log_prob: ``(B,)`` ``log pi(a'|s')``.
        alpha: entropy temperature.
        gamma: discount.

    Returns:
        ``(B,)`` targets.
    """
    soft_value = next_q.min(dim=0).values - alpha * next_log_prob
    return rewards + gamma * (1.0 - terminated) * soft_value


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """``-log_alpha * mean(log pi + target_entropy)``: alpha grows while entropy is below the target."""
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


class ReplayBuffer:
    """Preallocated ring buffer of raw transitions, one float32 row each.

    Row layout: ``[obs (D), action (A), reward, next_obs (D), terminated]``.

    Args:
        capacity: rows kept (the oldest are overwritten).
        obs_dim: D.
        act_dim: A.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        self.capacity = int(capacity)
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)
        d, a = self.obs_dim, self.act_dim
        self.width = 2 * d + a + 2
        # np.empty: pages are only touched (and resident) once written.
        self.rows = np.empty((self.capacity, self.width), dtype=np.float32)
        self.pos = 0
        self.size = 0
        self.slices = {
            "obs": slice(0, d),
            "actions": slice(d, d + a),
            "rewards": slice(d + a, d + a + 1),
            "next_obs": slice(d + a + 1, 2 * d + a + 1),
            "terminated": slice(2 * d + a + 1, 2 * d + a + 2),
        }

    def __len__(self) -> int:
        return self.size

    def add(
        self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminated: bool
    ) -> None:
        """Append one transition (``next_obs`` is the true successor, the final obs on truncation)."""
        row = self.rows[self.pos]
        d, a = self.obs_dim, self.act_dim
        row[:d] = obs
        row[d : d + a] = action
        row[d + a] = reward
        row[d + a + 1 : 2 * d + a + 1] = next_obs
        row[2 * d + a + 1] = 1.0 if terminated else 0.0
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> torch.Tensor:
        """``(batch_size, width)`` float32 CPU tensor of uniformly drawn rows (with replacement)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, self.size, size=batch_size)
        return torch.from_numpy(self.rows[idx])

    def split(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of a batch: obs/next_obs ``(B, D)``, actions ``(B, A)``, rewards/terminated ``(B,)``."""
        out = {k: batch[:, s] for k, s in self.slices.items()}
        out["rewards"] = out["rewards"].squeeze(-1)
        out["terminated"] = out["terminated"].squeeze(-1)
        return out

    def recent_obs(self, count: int) -> np.ndarray:
        """The ``count`` most recently added raw observations ``(count, D)`` (for normaliser updates)."""
        count = min(int(count), self.size)
        idx = (self.pos - count + np.arange(count)) % self.capacity
        return self.rows[idx, : self.obs_dim]

    def save(self, path: Path) -> None:
        """Atomically write the filled rows (in ring order) and the write position to ``path`` (.npy)."""
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, self.rows[: self.size])
                np.save(fh, np.array([self.pos, self.size], dtype=np.int64))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self, path: Path) -> None:
        """Restore what :meth:`save` wrote (same dims; capacity may differ if it still fits)."""
        with path.open("rb") as fh:
            rows = np.load(fh)
            pos, size = (int(v) for v in np.load(fh))
        if rows.ndim != 2 or rows.shape[1] != self.width or rows.shape[0] != size:
            raise UserError(f"{path} holds replay rows of shape {rows.shape}, expected (N, {self.width})")
        if size > self.capacity:
            raise UserError(f"{path} holds {size} transitions, more than sac.buffer_size={self.capacity}")
        self.rows[:size] = rows
        self.size = size
        self.pos = pos % self.capacity


# ------------------------------------------------------------------------------------ learner


class SAC:
    """Actor, twin Q with targets, temperature and their optimisers; :meth:`update` is one gradient step.

    Args:
        obs_dim: observation size (normalised inputs).
        act_dim: action size (normalised ``[-1, 1]`` units).
        config: the ``sac`` section.
        generator: torch RNG of the policy noise (on ``device``).
        device: torch device of networks, temperature and update inputs.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, config: Any, generator: torch.Generator, device: str = "cpu"
    ):
        self.config = config
        self.generator = generator
        self.device = torch.device(device)
        net = NetConfig(list(config.hidden_sizes), config.activation)
        self.actor = TanhGaussianActor(obs_dim, act_dim, net, config.log_std_min, config.log_std_max)
        self.q = TwinQ(obs_dim + act_dim, net)
        self.q_target = TwinQ(obs_dim + act_dim, net)
        self.q_target.load_state_dict(self.q.state_dict())
        self.q_target.requires_grad_(False)
        for module in (self.actor, self.q, self.q_target):
            module.to(self.device)
        self.log_alpha = torch.tensor(math.log(config.init_alpha), device=self.device, requires_grad=True)
        self.target_entropy = float(config.target_entropy if config.target_entropy is not None else -act_dim)
        self.actor_opt = adam(self.actor.parameters(), lr=config.actor_lr)
        self.q_opt = adam(self.q.parameters(), lr=config.critic_lr)
        self.alpha_opt = adam([self.log_alpha], lr=config.alpha_lr)
        self._q_params: list[torch.Tensor] = list(self.q.parameters())
        self._q_target_params: list[torch.Tensor] = list(self.q_target.parameters())
        self.gradient_steps = 0

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp().item())

    def update(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
    ) -> dict[str, float]:
        """One gradient step on a normalised batch; returns losses and diagnostics as floats.

        Args:
            obs: ``(B, D)`` normalised observations.
            actions: ``(B, A)`` actions in ``[-1, 1]``.
            rewards: ``(B,)``.
            next_obs: ``(B, D)`` normalised successors.
            terminated: ``(B,)`` 1.0 on true termination.
        """
        cfg = self.config
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():
            next_actions, next_log_prob = self.actor.sample(next_obs, self.generator)
            next_q = self.q_target(torch.cat([next_obs, next_actions], dim=1))
            target = soft_td_target(rewards, terminated, next_q, next_log_prob, alpha, cfg.gamma)
        q = self.q(torch.cat([obs, actions], dim=1))
        critic_loss = F.mse_loss(q, target.unsqueeze(0).expand_as(q), reduction="none").mean(1).sum()
        self.q_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.q_opt.step()
        self.gradient_steps += 1
        out = {"critic_loss": critic_loss.detach().item(), "q_mean": q.detach().mean().item()}

        if self.gradient_steps % cfg.actor_update_interval == 0:
            # The actor's gradient flows through Q into the actions only: freeze Q's parameters so
            # no gradient is computed (or accumulated) for them.
            self.q.requires_grad_(False)
            new_actions, log_prob = self.actor.sample(obs, self.generator)
            q_pi = self.q(torch.cat([obs, new_actions], dim=1)).min(dim=0).values
            actor_loss = (alpha * log_prob - q_pi).mean()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            self.q.requires_grad_(True)
            out["actor_loss"] = actor_loss.detach().item()
            out["entropy"] = -log_prob.detach().mean().item()
            if cfg.autotune:
                alpha_loss = temperature_loss(self.log_alpha, log_prob, self.target_entropy)
                self.alpha_opt.zero_grad(set_to_none=True)
                alpha_loss.backward()
                self.alpha_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._q_target_params, self._q_params, cfg.tau)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "q": self.q.state_dict(),
            "q_target": self.q_target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "actor_opt": self.actor_opt.state_dict(),
            "q_opt": self.q_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
            "gradient_steps": self.gradient_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Everything but the actor's weights (stored under the checkpoint's ``actor`` key)."""
        self.q.load_state_dict(state["q"])
        self.q_target.load_state_dict(state["q_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        load_optimizer_state(self.actor_opt, state["actor_opt"])
        load_optimizer_state(self.q_opt, state["q_opt"])
        load_optimizer_state(self.alpha_opt, state["alpha_opt"])
        self.gradient_steps = int(state["gradient_steps"])


class _Normalizer:
    """Observation normalisation for batches (torch) and single steps (numpy), same statistics.

    Wraps :class:`gail_robot.envs.wrappers.ObsNormalizer` (whose ``export()`` is what checkpoints
    freeze) and caches its mean / inverse std as tensors between statistics updates.
    """

    def __init__(self, obs_dim: int, clip: float, enabled: bool, device: torch.device):
        from gail_robot.envs.wrappers import ObsNormalizer

        self.inner = ObsNormalizer(obs_dim, clip, enabled)
        self.device = device
        self.refresh()

    def refresh(self) -> None:
        self.mean_t = torch.as_tensor(self.inner.mean, dtype=torch.float32, device=self.device)
        inv_std = 1.0 / np.sqrt(self.inner.var + 1e-8)
        self.inv_std_t = torch.as_tensor(inv_std, dtype=torch.float32, device=self.device)

    def update(self, raw: np.ndarray) -> None:
        self.inner.update(raw)
        self.refresh()

    def batch(self, raw: torch.Tensor) -> torch.Tensor:
        """Normalised copy of a raw ``(B, D)`` float32 tensor (on the normaliser's device)."""
        clip = self.inner.clip
        return ((raw - self.mean_t) * self.inv_std_t).clamp_(-clip, clip)

    def one(self, raw: np.ndarray) -> np.ndarray:
        """Normalised ``(D,)`` float32 observation, computed like ``PolicyBundle.normalize_obs``."""
        return self.inner(raw)


# ------------------------------------------------------------------------------------ trainer


class SACTrainer:
    """``--algo sac``: SAC on the env reward with the standard run directory.

    Args:
        config: the run's configuration (its ``sac``, ``env`` and ``run`` sections apply).
        run_dir: run directory (created).
        resume: continue from ``run_dir/checkpoints/latest.pt`` (and ``replay.npy`` when saved).
    """

    def __init__(self, config: TrainConfig, run_dir: str | Path, resume: bool = False):
        from gail_robot.envs.make import make_env
        from gail_robot.envs.wrappers import NormalizedActions
        from gail_robot.policy_io import CHECKPOINT_DIR, LATEST_NAME, load_checkpoint

        self.config = config
        self.run_dir = Path(run_dir)
        cfg = config
        scfg = cfg.sac
        self.sac_config = scfg
        torch.set_num_threads(cfg.run.torch_threads)
        torch.manual_seed(cfg.run.seed)
        self.device = torch.device(scfg.torch_device())
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"sac.device={scfg.device}: torch sees no CUDA GPU here")
        self.torch_rng = torch.Generator(device=self.device).manual_seed(cfg.run.seed)
        self.np_rng = np.random.default_rng(cfg.run.seed)

        self.env = make_env(cfg.env.id, cfg.env.kwargs)
        assert isinstance(self.env, NormalizedActions)
        obs_shape = self.env.observation_space.shape
        assert obs_shape is not None
        self.obs_dim = int(obs_shape[0])
        self.act_dim = int(self.env.low.shape[0])
        self.action_low, self.action_high = self.env.low.copy(), self.env.high.copy()

        self.sac = SAC(self.obs_dim, self.act_dim, scfg, self.torch_rng, str(self.device))
        self.actor = self.sac.actor
        self.normalizer = _Normalizer(self.obs_dim, cfg.env.obs_clip, cfg.env.normalize_obs, self.device)
        self.replay = ReplayBuffer(scfg.buffer_size, self.obs_dim, self.act_dim)
        self.env_steps = 0
        self.normalized_upto = 0  # env steps already folded into the normaliser
        self.wall_offset = 0.0
        self.next_eval = cfg.run.eval_interval if cfg.run.eval_interval > 0 else None
        self.next_checkpoint = cfg.run.checkpoint_interval
        self.last_eval: dict[str, float] = {}
        self._start: float | None = None
        if resume:
            self._restore(load_checkpoint(self.run_dir / CHECKPOINT_DIR / LATEST_NAME))
        elif cfg.init_from:
            raise UserError("--init-from is not supported with --algo sac (its actor is a tanh-Gaussian)")

    # ------------------------------------------------------------------------------ checkpoint

    def bundle(self) -> PolicyBundle:
        """The current deterministic policy with frozen normalisation (for evaluation)."""
        from gail_robot.policy_io import PolicyBundle

        norm = self.normalizer.inner.export()
        # PolicyBundle.act feeds CPU tensors: evaluate a CPU copy of an accelerator actor.
        actor = self.actor if self.device.type == "cpu" else copy.deepcopy(self.actor).cpu()
        return PolicyBundle(
            actor=actor,
            obs_mean=norm["mean"],
            obs_var=norm["var"],
            obs_clip=norm["clip"],
            action_low=self.action_low,
            action_high=self.action_high,
            env_id=self.config.env.id,
            env_kwargs=dict(self.config.env.kwargs),
            meta={"algo": "sac"},
        )

    def payload(self) -> dict[str, Any]:
        from gail_robot.algos.trainer import versions

        cfg = self.config
        return {
            "actor_spec": self.actor.spec(),
            "actor": {k: v.cpu() for k, v in self.actor.state_dict().items()},
            "obs_norm": self.normalizer.inner.export(),
            "action_low": self.action_low,
            "action_high": self.action_high,
            "env_id": cfg.env.id,
            "env_kwargs": dict(cfg.env.kwargs),
            "meta": {
                "algo": "sac",
                "run_dir": str(self.run_dir.resolve()),
                "env_steps": self.env_steps,
                "updates": self.sac.gradient_steps,
                "versions": versions(),
                "eval": dict(self.last_eval),
            },
            "config": cfg.to_dict(),
            "sac": self.sac.state_dict(),
            "normalizer": self.normalizer.inner.state_dict(),
            "progress": {
                "env_steps": self.env_steps,
                "normalized_upto": self.normalized_upto,
                "wall_time": self.wall_time(),
                "next_eval": self.next_eval,
                "next_checkpoint": self.next_checkpoint,
            },
            "rng": {
                "torch": self.torch_rng.get_state(),
                "torch_global": torch.get_rng_state(),
                "numpy": json.dumps(self.np_rng.bit_generator.state),
            },
        }

    def _restore(self, data: dict[str, Any]) -> None:
        from gail_robot.policy_io import CHECKPOINT_DIR, to_numpy_tree

        if data["env_id"] != self.config.env.id:
            raise UserError(
                f"cannot resume: checkpoint env '{data['env_id']}' differs from '{self.config.env.id}'"
            )
        if data["meta"].get("algo") != "sac" or "sac" not in data:
            raise UserError("cannot resume: the checkpoint was not written by --algo sac")
        self.actor.load_state_dict(data["actor"])
        self.sac.load_state_dict(data["sac"])
        self.normalizer.inner.load_state_dict(to_numpy_tree(data["normalizer"]))
        self.normalizer.refresh()
        progress = data["progress"]
        self.env_steps = int(progress["env_steps"])
        self.normalized_upto = int(progress["normalized_upto"])
        self.wall_offset = float(progress["wall_time"])
        self.next_eval = progress["next_eval"]
        self.next_checkpoint = int(progress["next_checkpoint"])
        self.torch_rng.set_state(data["rng"]["torch"])
        torch.set_rng_state(data["rng"]["torch_global"])
        self.np_rng.bit_generator.state = json.loads(data["rng"]["numpy"])
        self.last_eval = dict(data["meta"].get("eval", {}))
        replay = self.run_dir / CHECKPOINT_DIR / REPLAY_NAME
        if replay.is_file():
            self.replay.load(replay)
        else:
            # Without the buffer, learning restarts from an empty one: collect a fresh warm-up first.
            self.replay_warmup_until = self.env_steps + self.sac_config.learning_starts

    def save(self, final: bool = False) -> Path:
        from gail_robot.algos.trainer import write_checkpoints
        from gail_robot.policy_io import CHECKPOINT_DIR

        ckpt_dir = self.run_dir / CHECKPOINT_DIR
        payload = self.payload()
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if self.sac_config.save_replay:
            # The buffer first: a latest.pt on disk always has a buffer at least as new as itself
            # (final.pt is also the new latest.pt, so a finished run can be extended with --resume).
            self.replay.save(ckpt_dir / REPLAY_NAME)
        return write_checkpoints(
            self.run_dir, payload, self.env_steps, self.config.run.keep_checkpoints, final
        )

    # ------------------------------------------------------------------------------ loop

    replay_warmup_until: int | None = None

    def wall_time(self) -> float:
        """Training wall time in seconds, across resumes."""
        return self.wall_offset + (0.0 if self._start is None else time.perf_counter() - self._start)

    def evaluate(self) -> dict[str, float]:
        from gail_robot.algos.trainer import evaluation_row

        return evaluation_row(self.bundle(), self.config.run.eval_episodes, self.config.run.seed)

    def _act(self, obs: np.ndarray) -> np.ndarray:
        """Exploration action ``(A,)`` in ``[-1, 1]``: uniform during warm-up, else a policy sample."""
        warmup = max(self.sac_config.learning_starts, self.replay_warmup_until or 0)
        if self.env_steps < warmup:
            return self.np_rng.uniform(-1.0, 1.0, self.act_dim).astype(np.float32)
        with torch.no_grad():
            obs_t = torch.from_numpy(self.normalizer.one(obs)).unsqueeze(0).to(self.device)
            action, _ = self.actor.sample(obs_t, self.torch_rng)
        return action[0].cpu().numpy()

    def _learn(self) -> dict[str, float]:
        """``sac.gradient_steps`` updates on normalised replay batches; the last step's numbers."""
        scfg = self.sac_config
        stats: dict[str, float] = {}
        for _ in range(scfg.gradient_steps):
            batch = self.replay.sample(scfg.batch_size, self.np_rng)
            parts = self.replay.split(batch if self.device.type == "cpu" else batch.to(self.device))
            stats = self.sac.update(
                self.normalizer.batch(parts["obs"]),
                parts["actions"],
                parts["rewards"],
                self.normalizer.batch(parts["next_obs"]),
                parts["terminated"],
            )
        return stats

    def _refresh_normalizer(self) -> None:
        """Fold the observations added since the last refresh into the running statistics."""
        new = self.env_steps - self.normalized_upto
        if new > 0 and self.normalizer.inner.enabled:
            self.normalizer.update(self.replay.recent_obs(new))
        self.normalized_upto = self.env_steps

    def train(self) -> Path:
        """Run until ``run.total_steps`` env steps and write ``final.pt``; returns its path."""
        from tqdm import tqdm

        from gail_robot.algos.trainer import MetricsLog, reset_seed

        cfg = self.config
        scfg = self.sac_config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(cfg.to_yaml())
        resumed_at = self.env_steps if self.env_steps > 0 else None
        log = MetricsLog(self.run_dir, cfg.run.tensorboard, resumed_at)
        obs, _ = self.env.reset(seed=reset_seed(cfg.run.seed, self.env_steps))
        obs = np.asarray(obs, dtype=np.float32)
        self._start = time.perf_counter()
        bar = tqdm(
            total=cfg.run.total_steps,
            initial=min(self.env_steps, cfg.run.total_steps),
            unit="step",
            unit_scale=True,
            disable=not cfg.run.progress,
            desc=f"sac {cfg.env.id}",
        )
        ep_return, ep_length = 0.0, 0
        returns: list[float] = []
        lengths: list[int] = []
        stats: dict[str, float] = {}
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        update_time = 0.0
        updates_in_window = 0
        window_start, window_steps = time.perf_counter(), 0
        # Statistics are refreshed in chunks (cheap), and at the end of the warm-up so the first
        # updates see statistics of all the warm-up data.
        norm_every = max(1, min(scfg.log_interval, 1000))
        try:
            while self.env_steps < cfg.run.total_steps:
                action = self._act(obs)
                next_obs, reward, terminated, truncated, _info = self.env.step(action)
                next_obs = np.asarray(next_obs, dtype=np.float32)
                self.replay.add(obs, action, float(reward), next_obs, bool(terminated))
                self.env_steps += 1
                window_steps += 1
                ep_return += float(reward)
                ep_length += 1
                if terminated or truncated:
                    returns.append(ep_return)
                    lengths.append(ep_length)
                    ep_return, ep_length = 0.0, 0
                    obs, _ = self.env.reset()
                    obs = np.asarray(obs, dtype=np.float32)
                else:
                    obs = next_obs
                warmup = max(scfg.learning_starts, self.replay_warmup_until or 0)
                if self.env_steps % norm_every == 0 or self.env_steps == warmup:
                    self._refresh_normalizer()
                if self.env_steps >= warmup and len(self.replay) >= scfg.batch_size:
                    t0 = time.perf_counter()
                    stats = self._learn()
                    update_time += time.perf_counter() - t0
                    updates_in_window += scfg.gradient_steps
                    for key, value in stats.items():
                        sums[key] = sums.get(key, 0.0) + value
                        counts[key] = counts.get(key, 0) + 1
                if self.env_steps % 100 == 0:
                    bar.update(100)
                if self.env_steps % scfg.log_interval == 0 or self.env_steps >= cfg.run.total_steps:
                    elapsed = time.perf_counter() - window_start
                    row: dict[str, Any] = {"env_steps": self.env_steps}
                    if returns:
                        row["episode_return"] = float(np.mean(returns))
                        row["episode_length"] = float(np.mean(lengths))
                        row["episodes"] = len(returns)
                    row.update({k: sums[k] / counts[k] for k in sums})
                    row["alpha"] = self.sac.alpha
                    row["steps_per_s"] = window_steps / elapsed if elapsed > 0 else float("nan")
                    row["updates_per_s"] = (
                        updates_in_window / update_time if update_time > 0 else float("nan")
                    )
                    if self.next_eval is not None and self.env_steps >= self.next_eval:
                        while self.next_eval <= self.env_steps:
                            self.next_eval += cfg.run.eval_interval
                        if self.env_steps < cfg.run.total_steps:
                            self.last_eval = self.evaluate()
                            row.update(self.last_eval)
                    row["wall_time"] = self.wall_time()
                    row["updates"] = self.sac.gradient_steps
                    postfix = {"sps": f"{row['steps_per_s']:.0f}", "alpha": f"{row['alpha']:.3f}"}
                    if "episode_return" in row:
                        postfix["ret"] = f"{row['episode_return']:.0f}"
                    if "eval_return" in row:
                        postfix["eval"] = f"{row['eval_return']:.0f}"
                    bar.set_postfix(postfix, refresh=False)
                    log.write(row)
                    returns, lengths, sums, counts = [], [], {}, {}
                    update_time, updates_in_window = 0.0, 0
                    window_start, window_steps = time.perf_counter(), 0
                if self.env_steps >= self.next_checkpoint and self.env_steps < cfg.run.total_steps:
                    while self.next_checkpoint <= self.env_steps:
                        self.next_checkpoint += cfg.run.checkpoint_interval
                    self._refresh_normalizer()
                    self.save()
                    # Reset as a resumed run would, so that resuming continues identically.
                    obs, _ = self.env.reset(seed=reset_seed(cfg.run.seed, self.env_steps))
                    obs = np.asarray(obs, dtype=np.float32)
                    ep_return, ep_length = 0.0, 0
            bar.update(self.env_steps - bar.n)
            self._refresh_normalizer()
            final_eval = self.evaluate()
            if final_eval:
                self.last_eval = final_eval
                log.write({"env_steps": self.env_steps, "wall_time": self.wall_time(), **final_eval})
            return self.save(final=True)
        finally:
            bar.close()
            log.close()
            self.env.close()


def train_sac(config: TrainConfig, run_dir: str | Path, resume: bool = False) -> Path:
    """Train SAC as ``config`` says into ``run_dir``; returns the final checkpoint's path."""
    return SACTrainer(config, run_dir, resume=resume).train()
