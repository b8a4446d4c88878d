"""Soft Actor-Critic for training experts on the true env reward (``gail-robot train --algo sac``).

On-policy PPO/TRPO need tens of millions of steps on Humanoid; SAC reaches a walking humanoid in
about a million (CleanRL: ~5000 after 1M steps). Experts are plain RL, so an off-policy learner
is the right tool for them; imitation (GAIL) keeps its on-policy generators.

The learner, one process, one env:

- :class:`~gail_robot.nets.TanhGaussianActor` (``a = tanh(mu + std * eps)``; its ``forward`` is
  the deterministic ``tanh(mu)``, registered in ``gail_robot.nets`` so checkpoints load through
  :func:`gail_robot.policy_io.load_policy` like any other actor) and
  :class:`~gail_robot.nets.TwinQ` (both Q networks as one stack of batched matrix products).
- :class:`ReplayBuffer`: one preallocated float32 matrix of raw rows
  ``[obs, action, reward, next_obs, terminated]``; a batch is one fancy-indexing gather whose
  observations are normalised with the current statistics (``core.normalize``; on an accelerator
  ``nets.normalize_torch`` after the one copy to the device).
- Truncation (time limit) is not termination: the stored ``next_obs`` is the true final
  observation and the target bootstraps through it; only ``terminated`` cuts the bootstrap
  (:func:`soft_td_target`).

The run directory is :class:`gail_robot.algos.run.Run`'s (docs/DESIGN.md §4), plus
``checkpoints/replay.npy`` (the replay buffer of ``latest.pt``, for ``--resume``).
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from gail_robot.algos.config import SACConfig, TrainConfig, actor_ignored_obs
from gail_robot.algos.run import Run, reset_seed
from gail_robot.envs.make import make_env, policy_actions
from gail_robot.envs.wrappers import NormalizedActions, ObsNormalizer
from gail_robot.errors import UserError
from gail_robot.nets import (
    NetConfig,
    TanhGaussianActor,
    TwinQ,
    adam,
    load_optimizer_state,
    mask_actor_inputs,
    normalization_std,
    normalize_torch,
)
from gail_robot.policy_io import CHECKPOINT_DIR, PolicyBundle, to_numpy_tree
from gail_robot.reward_io import LearnedReward, load_reward

REPLAY_NAME = "replay.npy"


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

    def sample_rows(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """``(batch_size, width)`` float32 copy of uniformly drawn rows (with replacement)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, self.size, size=batch_size)
        return self.rows[idx]

    def sample(self, batch_size: int, rng: np.random.Generator) -> torch.Tensor:
        """:meth:`sample_rows` as a float32 CPU tensor."""
        return torch.from_numpy(self.sample_rows(batch_size, rng))

    def normalize_rows(self, rows: np.ndarray, normalizer: ObsNormalizer) -> np.ndarray:
        """Normalise the ``obs`` and ``next_obs`` columns of sampled ``rows`` in place; returns ``rows``."""
        for key in ("obs", "next_obs"):
            columns = self.slices[key]
            rows[:, columns] = normalizer(rows[:, columns])
        return rows

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
        torch_rng: torch RNG of the policy noise (on ``device``).
        device: torch device of networks, temperature and update inputs.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, config: SACConfig, torch_rng: torch.Generator, device: str = "cpu"
    ):
        self.config = config
        self.torch_rng = torch_rng
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
            next_actions, next_log_prob = self.actor.sample(next_obs, self.torch_rng)
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
            new_actions, log_prob = self.actor.sample(obs, self.torch_rng)
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


# ------------------------------------------------------------------------------------ trainer


class SACTrainer:
    """``--algo sac``: SAC on the env reward in a :class:`~gail_robot.algos.run.Run`.

    Args:
        config: the run's configuration (its ``sac``, ``env`` and ``run`` sections apply).
        run_dir: run directory (created).
        resume: continue from ``run_dir/checkpoints/latest.pt`` (and ``replay.npy`` when saved).
    """

    def __init__(self, config: TrainConfig, run_dir: str | Path, resume: bool = False):
        self.config = config
        cfg = config
        scfg = cfg.sac
        self.sac_config = scfg
        self.device = torch.device(scfg.torch_device())
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"sac.device={scfg.device}: torch sees no CUDA GPU here")
        self.run = Run(config, run_dir, self.device)

        self.env = make_env(cfg.env.id, cfg.env.kwargs)
        if not isinstance(self.env, NormalizedActions):  # a Discrete action space
            space = self.env.action_space
            self.env.close()
            raise UserError(
                f"--algo sac acts in continuous Box action spaces; {cfg.env.id} has {space} "
                "(use --algo ppo, trpo, gail or bc)"
            )
        obs_shape = self.env.observation_space.shape
        assert obs_shape is not None
        self.obs_dim = int(obs_shape[0])
        self.act_dim = int(self.env.low.shape[0])
        self.action_low, self.action_high = self.env.low.copy(), self.env.high.copy()

        self.learned_reward: LearnedReward | None = None
        if cfg.reward:
            self.learned_reward = load_reward(cfg.reward)
            self.learned_reward.check_env(cfg.env.id, self.obs_dim, policy_actions(self.env))
            self.learned_reward.check_gamma(self.sac_config.gamma)

        self.sac = SAC(self.obs_dim, self.act_dim, scfg, self.run.torch_rng, str(self.device))
        self.actor = self.sac.actor
        self.normalizer = ObsNormalizer(self.obs_dim, cfg.env.obs_clip, cfg.env.normalize_obs)
        self._device_stats: tuple[torch.Tensor, torch.Tensor] | None = None  # (mean, var) on an accelerator
        self.replay = ReplayBuffer(scfg.buffer_size, self.obs_dim, self.act_dim)
        self.normalized_upto = 0  # env steps already folded into the normaliser
        # Without a saved buffer a resumed run restarts from an empty one: uniform actions until then.
        self.warmup_until = scfg.learning_starts
        if resume:
            self._restore(self.run.resume())
        elif cfg.init_from:
            raise UserError("--init-from is not supported with --algo sac (its actor is a tanh-Gaussian)")
        mask_actor_inputs(self.actor, actor_ignored_obs(cfg, self.obs_dim, include_bc=False))

    # ------------------------------------------------------------------------------ checkpoint

    def bundle(self) -> PolicyBundle:
        """The current deterministic policy with frozen normalisation (for evaluation)."""
        # PolicyBundle.act feeds CPU tensors: evaluate a CPU copy of an accelerator actor.
        actor = self.actor if self.device.type == "cpu" else copy.deepcopy(self.actor).cpu()
        return self.run.bundle(
            actor=actor,
            obs_norm=self.normalizer.export(),
            action_low=self.action_low,
            action_high=self.action_high,
            meta={"algo": "sac"},
        )

    def payload(self) -> dict[str, Any]:
        return self.run.payload(
            actor=self.actor,
            obs_norm=self.normalizer.export(),
            action_low=self.action_low,
            action_high=self.action_high,
            meta={"algo": "sac", "updates": self.sac.gradient_steps},
            progress={"normalized_upto": self.normalized_upto},
            sac=self.sac.state_dict(),
            normalizer=self.normalizer.state_dict(),
        )

    def _restore(self, data: dict[str, Any]) -> None:
        """The learner's own state from a checkpoint (``Run.resume`` restored the rest)."""
        if data["meta"].get("algo") != "sac" or "sac" not in data:
            raise UserError("cannot resume: the checkpoint was not written by --algo sac")
        self.actor.load_state_dict(data["actor"])
        self.sac.load_state_dict(data["sac"])
        self.normalizer.load_state_dict(to_numpy_tree(data["normalizer"]))
        self._device_stats = None
        self.normalized_upto = int(data["progress"]["normalized_upto"])
        replay = self.run.dir / CHECKPOINT_DIR / REPLAY_NAME
        if replay.is_file():
            self.replay.load(replay)
        else:
            self.warmup_until = max(self.warmup_until, self.run.env_steps + self.sac_config.learning_starts)

    def save(self) -> Path:
        """Write the replay buffer, then the next numbered checkpoint (and ``latest.pt``)."""
        return self.run.save(self._payload_with_replay())

    def _payload_with_replay(self) -> dict[str, Any]:
        """The payload, after writing the replay buffer it goes with (when ``sac.save_replay``).

        The buffer first: a ``latest.pt`` on disk always has a buffer at least as new as itself
        (``final.pt`` is also the new ``latest.pt``, so a finished run can be extended).
        """
        payload = self.payload()
        if self.sac_config.save_replay:
            ckpt_dir = self.run.dir / CHECKPOINT_DIR
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            self.replay.save(ckpt_dir / REPLAY_NAME)
        return payload

    # ------------------------------------------------------------------------------ loop

    def _act(self, obs: np.ndarray) -> np.ndarray:
        """Exploration action ``(A,)`` in ``[-1, 1]``: uniform during warm-up, else a policy sample."""
        if self.run.env_steps < self.warmup_until:
            return self.run.np_rng.uniform(-1.0, 1.0, self.act_dim).astype(np.float32)
        with torch.no_grad():
            obs_t = torch.from_numpy(self.normalizer(obs)).unsqueeze(0).to(self.device)
            action, _ = self.actor.sample(obs_t, self.run.torch_rng)
        return action[0].cpu().numpy()

    def _learned(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, terminated: bool) -> float:
        """The learned reward of one transition (``--reward``), for the replay buffer.

        A true termination leads to the reward file's absorbing state, if it has one: its value
        ``r_abs / (1 - gamma)`` is added here, where the target's bootstrap is cut (docs/DESIGN.md §5.2);
        the reward never changes after storage, so this is exactly the bootstrap of the on-policy path.
        """
        assert self.learned_reward is not None
        env_action = self.action_low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (
            self.action_high - self.action_low
        )
        reward = float(
            self.learned_reward(
                obs[None], env_action[None].astype(np.float32), next_obs[None], np.array([terminated])
            )[0]
        )
        r_abs = self.learned_reward.absorbing_reward
        if terminated and r_abs is not None:
            gamma = self.sac_config.gamma
            reward += gamma * (r_abs / (1.0 - gamma) if gamma < 1.0 else r_abs)
        return reward

    def _learn(self) -> dict[str, float]:
        """``sac.gradient_steps`` updates on normalised replay batches; the last step's numbers."""
        scfg = self.sac_config
        stats: dict[str, float] = {}
        for _ in range(scfg.gradient_steps):
            parts = self._normalized_batch(self.replay.sample_rows(scfg.batch_size, self.run.np_rng))
            stats = self.sac.update(
                parts["obs"], parts["actions"], parts["rewards"], parts["next_obs"], parts["terminated"]
            )
        return stats

    def _normalized_batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """Sampled replay ``rows`` split on the device, observations normalised with the current statistics.

        On the CPU with ``core.normalize``; on an accelerator after the copy with its torch mirror
        ``nets.normalize_torch`` (the same numbers), so the host does not compute it.
        """
        if self.device.type == "cpu":
            return self.replay.split(torch.from_numpy(self.replay.normalize_rows(rows, self.normalizer)))
        parts = self.replay.split(torch.from_numpy(rows).to(self.device))
        if self._device_stats is None:
            self._device_stats = (
                torch.as_tensor(self.normalizer.mean, device=self.device),
                normalization_std(self.normalizer.var).to(self.device),
            )
        mean, std = self._device_stats
        for key in ("obs", "next_obs"):
            parts[key] = normalize_torch(parts[key], mean, std, self.normalizer.clip)
        return parts

    def _refresh_normalizer(self) -> None:
        """Fold the observations added since the last refresh into the running statistics."""
        new = self.run.env_steps - self.normalized_upto
        if new > 0 and self.normalizer.enabled:
            self.normalizer.update(self.replay.recent_obs(new))
            self._device_stats = None
        self.normalized_upto = self.run.env_steps

    def _reset(self) -> np.ndarray:
        """Reset the env as a resumed run would (seeded by the env steps), so resuming is exact."""
        obs, _ = self.env.reset(seed=reset_seed(self.config.run.seed, self.run.env_steps))
        return np.asarray(obs, dtype=np.float32)

    def train(self) -> Path:
        """Run until ``run.total_steps`` env steps and write ``final.pt``; returns its path."""
        cfg = self.config
        scfg = self.sac_config
        run = self.run
        window = _LogWindow()
        # Statistics are refreshed in chunks (cheap), and at the end of the warm-up so the first
        # updates see statistics of all the warm-up data.
        norm_every = max(1, min(scfg.log_interval, 1000))
        try:
            obs = self._reset()
            with run.session(f"sac {cfg.env.id}"):
                while run.env_steps < cfg.run.total_steps:
                    action = self._act(obs)
                    next_obs, reward, terminated, truncated, _info = self.env.step(action)
                    next_obs = np.asarray(next_obs, dtype=np.float32)
                    learned = (
                        float(reward)
                        if self.learned_reward is None
                        else self._learned(obs, action, next_obs, terminated)
                    )
                    self.replay.add(obs, action, learned, next_obs, bool(terminated))
                    run.env_steps += 1
                    window.step(float(reward), bool(terminated or truncated))
                    if terminated or truncated:
                        obs, _ = self.env.reset()
                        obs = np.asarray(obs, dtype=np.float32)
                    else:
                        obs = next_obs
                    if run.env_steps % norm_every == 0 or run.env_steps == self.warmup_until:
                        self._refresh_normalizer()
                    if run.env_steps >= self.warmup_until and len(self.replay) >= scfg.batch_size:
                        t0 = time.perf_counter()
                        window.learned(self._learn(), time.perf_counter() - t0, scfg.gradient_steps)
                    if run.env_steps % 100 == 0:
                        run.progress(run.env_steps)
                    if run.env_steps % scfg.log_interval == 0 or run.env_steps >= cfg.run.total_steps:
                        row = {"env_steps": run.env_steps, **window.row(self.sac.alpha)}
                        row.update(run.scheduled_evaluation(self.bundle))
                        row["wall_time"] = run.wall_time()
                        row["updates"] = self.sac.gradient_steps
                        run.progress(run.env_steps, _postfix(row))
                        run.write(row)
                    if run.checkpoint_due():
                        self._refresh_normalizer()
                        self.save()
                        obs = self._reset()
                        window.episode_cut()
                run.progress(run.env_steps)
                self._refresh_normalizer()
                return run.finish(self.bundle, self._payload_with_replay)
        finally:
            self.env.close()


class _LogWindow:
    """What happened since the last metrics row: finished episodes, update losses, rates."""

    def __init__(self) -> None:
        self.ep_return, self.ep_length = 0.0, 0
        self._clear()

    def _clear(self) -> None:
        self.returns: list[float] = []
        self.lengths: list[int] = []
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.update_time, self.updates, self.steps = 0.0, 0, 0
        self.start = time.perf_counter()

    def step(self, reward: float, episode_end: bool) -> None:
        self.steps += 1
        self.ep_return += reward
        self.ep_length += 1
        if episode_end:
            self.returns.append(self.ep_return)
            self.lengths.append(self.ep_length)
            self.episode_cut()

    def episode_cut(self) -> None:
        """The running episode ended without being counted (an env reset at a checkpoint)."""
        self.ep_return, self.ep_length = 0.0, 0

    def learned(self, stats: dict[str, float], seconds: float, updates: int) -> None:
        self.update_time += seconds
        self.updates += updates
        for key, value in stats.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def row(self, alpha: float) -> dict[str, Any]:
        """The window's metrics (episode means, mean losses, rates); starts a new window."""
        elapsed = time.perf_counter() - self.start
        row: dict[str, Any] = {}
        if self.returns:
            row["episode_return"] = float(np.mean(self.returns))
            row["episode_length"] = float(np.mean(self.lengths))
            row["episodes"] = len(self.returns)
        row.update({k: self.sums[k] / self.counts[k] for k in self.sums})
        row["alpha"] = alpha
        row["steps_per_s"] = self.steps / elapsed if elapsed > 0 else float("nan")
        row["updates_per_s"] = self.updates / self.update_time if self.update_time > 0 else float("nan")
        self._clear()
        return row


def _postfix(row: dict[str, Any]) -> dict[str, str]:
    """The progress bar's summary of a metrics row."""
    postfix = {"sps": f"{row['steps_per_s']:.0f}", "alpha": f"{row['alpha']:.3f}"}
    if "episode_return" in row:
        postfix["ret"] = f"{row['episode_return']:.0f}"
    if "eval_return" in row:
        postfix["eval"] = f"{row['eval_return']:.0f}"
    return postfix


def train_sac(config: TrainConfig, run_dir: str | Path, resume: bool = False) -> Path:
    """Train SAC as ``config`` says into ``run_dir``; returns the final checkpoint's path."""
    return SACTrainer(config, run_dir, resume=resume).train()
