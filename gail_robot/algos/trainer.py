"""The on-policy training loop shared by PPO, TRPO and GAIL, with its run directory.

One round::

    collect (T, N) rollout  ->  [GAIL: update D, relabel rewards]  ->  GAE  ->  generator.update

Run directory: ``config.yaml``, ``metrics.jsonl`` (one JSON object per round), ``tb/`` (TensorBoard),
``checkpoints/latest.pt`` + ``checkpoints/step_<env steps>.pt`` and ``final.pt``.

Resume is exact: a checkpoint is taken between rounds and the envs are then reset with a seed
derived from (run seed, env steps), both in the run that wrote it and in a run resumed from it;
together with the saved RNG, optimiser, normaliser and discriminator-replay states, the resumed
run computes the same next update as the original one would have.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gail_robot.algos.config import TrainConfig
from gail_robot.algos.gail import GAIL, reward_kind_for
from gail_robot.algos.ppo import PPO
from gail_robot.algos.rollout import RolloutBuffer, RolloutCollector
from gail_robot.algos.trpo import TRPO
from gail_robot.envs.make import make_env
from gail_robot.envs.vector import make_vector_env
from gail_robot.envs.wrappers import NormalizedActions, ObsNormalizer, RewardScaler
from gail_robot.errors import UserError
from gail_robot.nets import Critic, GaussianActor, NetConfig
from gail_robot.policy_io import (
    CHECKPOINT_DIR,
    FINAL_NAME,
    LATEST_NAME,
    PolicyBundle,
    load_checkpoint,
    save_checkpoint,
    to_numpy_tree,
)


def versions() -> dict[str, str]:
    """Versions of the packages that decide what a checkpoint means."""
    import gymnasium
    import mujoco

    from gail_robot import __version__

    return {
        "gail_robot": __version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "mujoco": mujoco.__version__,
    }


def reset_seed(seed: int, env_steps: int) -> int:
    """Env reset seed after ``env_steps`` steps: distinct per reset, identical on resume."""
    return int(np.random.SeedSequence([seed, env_steps]).generate_state(1)[0])


class MetricsLog:
    """``metrics.jsonl`` + optional TensorBoard, both appended one row per round."""

    def __init__(self, run_dir: Path, tensorboard: bool, resume_step: int | None):
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            # Drop rows the interrupted run wrote after its last checkpoint: they will be redone.
            rows = [line for line in self.path.read_text().splitlines() if line.strip()]
            kept = [r for r in rows if json.loads(r).get("env_steps", 0) <= resume_step]
            self.path.write_text("".join(r + "\n" for r in kept))
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step)

    def write(self, row: dict[str, Any]) -> None:
        # NaN / inf are not JSON: write null.
        row = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.writer is not None:
            step = int(row["env_steps"])
            for key, value in row.items():
                if key != "env_steps" and isinstance(value, int | float):
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def load_init_actor(
    path: str, actor: GaussianActor, normalizer: ObsNormalizer, env_id: str, min_log_std: float | None = None
) -> None:
    """Warm start: copy a checkpoint's actor weights and observation statistics (e.g. from BC).

    ``min_log_std`` (when given) floors the copied per-dimension log std.
    """
    data = load_checkpoint(path)
    if data["env_id"] != env_id:
        raise UserError(f"--init-from {path} was trained on '{data['env_id']}', not '{env_id}'")
    spec = data["actor_spec"]
    if spec != actor.spec():
        raise UserError(
            f"--init-from {path}: its actor {spec['net']['hidden_sizes']} ({spec['net']['activation']}) "
            f"differs from policy.hidden_sizes {actor.config.hidden_sizes} ({actor.config.activation})"
        )
    actor.load_state_dict(data["actor"])
    if min_log_std is not None:
        with torch.no_grad():
            actor.log_std.clamp_(min=min_log_std)
    norm = to_numpy_tree(data["obs_norm"])
    if normalizer.enabled:
        normalizer.load_frozen(norm["mean"], norm["var"])


def write_checkpoints(run_dir: Path, payload: dict[str, Any], env_steps: int, keep: int, final: bool) -> Path:
    """Write ``checkpoints/latest.pt`` and either ``final.pt`` or a numbered checkpoint (atomic writes).

    Only the newest ``keep`` numbered checkpoints are kept. Returns the path of the final or numbered one.
    """
    ckpt_dir = run_dir / CHECKPOINT_DIR
    save_checkpoint(ckpt_dir / LATEST_NAME, payload)
    if final:
        return save_checkpoint(run_dir / FINAL_NAME, payload)
    path = save_checkpoint(ckpt_dir / f"step_{env_steps:010d}.pt", payload)
    numbered = sorted(ckpt_dir.glob("step_*.pt"))
    for old in numbered[: max(0, len(numbered) - keep)]:
        old.unlink(missing_ok=True)
    return path


def evaluation_row(bundle: PolicyBundle, episodes: int, run_seed: int) -> dict[str, float]:
    """The ``eval_*`` metrics of ``episodes`` deterministic episodes (empty when ``episodes`` is 0).

    Evaluation seeds start at 10 000 + the run seed, away from the seeds training resets with.
    """
    from gail_robot.evaluate import evaluate_policy

    if episodes == 0:
        return {}
    result = evaluate_policy(bundle, episodes, seed=10_000 + run_seed)
    out = {"eval_return": result.mean_return, "eval_return_std": result.std_return}
    out["eval_length"] = result.mean_length
    if not np.isnan(result.success_rate):
        out["eval_success_rate"] = result.success_rate
    if not np.isnan(result.mean_forward_velocity):
        out["eval_forward_velocity"] = result.mean_forward_velocity
    return out


class OnPolicyTrainer:
    """PPO / TRPO on the env reward, or GAIL with a PPO / TRPO generator.

    Args:
        config: the run's configuration.
        run_dir: run directory (created).
        resume: continue from ``run_dir/checkpoints/latest.pt``.
    """

    def __init__(self, config: TrainConfig, run_dir: str | Path, resume: bool = False):
        if config.algo == "bc":
            raise ValueError("BC is trained by gail_robot.algos.bc.train_bc")
        self.config = config
        self.run_dir = Path(run_dir)
        cfg = config
        torch.set_num_threads(cfg.run.torch_threads)
        torch.manual_seed(cfg.run.seed)
        self.torch_rng = torch.Generator().manual_seed(cfg.run.seed)

        probe = make_env(cfg.env.id, cfg.env.kwargs)
        assert isinstance(probe, NormalizedActions)
        obs_space = probe.observation_space
        assert obs_space.shape is not None
        self.obs_dim = int(obs_space.shape[0])
        self.act_dim = int(probe.low.shape[0])
        self.action_low, self.action_high = probe.low.copy(), probe.high.copy()
        probe.close()

        net = NetConfig(list(cfg.policy.hidden_sizes), cfg.policy.activation)
        self.actor = GaussianActor(self.obs_dim, self.act_dim, net, cfg.policy.init_log_std)
        self.critic = Critic(self.obs_dim, net)
        self.normalizer = ObsNormalizer(self.obs_dim, cfg.env.obs_clip, cfg.env.normalize_obs)
        self.algo: PPO | TRPO
        if cfg.generator == "ppo":
            self.algo = PPO(self.actor, self.critic, cfg.ppo, self.torch_rng)
        else:
            self.algo = TRPO(self.actor, self.critic, cfg.trpo, self.torch_rng)
        self.gail: GAIL | None = None
        self.reward_kind: str | None = None
        if cfg.algo == "gail":
            from gail_robot.algos.demos import concatenate, load_demo_episodes

            if not cfg.gail.demos:
                raise UserError("--algo gail needs demos: --demos FILE (or gail.demos in the config)")
            episodes = load_demo_episodes(
                cfg.gail.demos,
                cfg.env.id,
                cfg.env.kwargs,
                mask=cfg.gail.demo_mask,
                max_demos=cfg.gail.max_demos,
                subsample=cfg.gail.demo_subsample,
            )
            self.num_demos = len(episodes)
            self.reward_kind = reward_kind_for(cfg.env.id, cfg.gail.reward)
            self.gail = GAIL(
                cfg.gail,
                concatenate(episodes),
                self.normalizer,
                self.action_low,
                self.action_high,
                self.reward_kind,
                cfg.rollout.gamma,
                self.torch_rng,
            )

        scale = cfg.rollout.normalize_rewards
        if scale is None:
            scale = cfg.algo != "gail"
        self.reward_scaler = RewardScaler(cfg.env.num_envs, cfg.rollout.gamma) if scale else None

        self.env_steps = 0
        self.updates = 0
        self.wall_offset = 0.0
        self.next_eval = cfg.run.eval_interval if cfg.run.eval_interval > 0 else None
        self.next_checkpoint = cfg.run.checkpoint_interval
        self.last_eval: dict[str, float] = {}
        self._start: float | None = None  # perf_counter at the start of train()
        if resume:
            self._restore(load_checkpoint(self.run_dir / CHECKPOINT_DIR / LATEST_NAME))
        elif cfg.init_from:
            load_init_actor(
                cfg.init_from, self.actor, self.normalizer, cfg.env.id, cfg.policy.warm_start_min_log_std
            )

    # ------------------------------------------------------------------------------ checkpoint

    def bundle(self) -> PolicyBundle:
        """The current deterministic policy with frozen normalisation (for evaluation)."""
        norm = self.normalizer.export()
        return PolicyBundle(
            actor=self.actor,
            obs_mean=norm["mean"],
            obs_var=norm["var"],
            obs_clip=norm["clip"],
            action_low=self.action_low,
            action_high=self.action_high,
            env_id=self.config.env.id,
            env_kwargs=dict(self.config.env.kwargs),
        )

    def payload(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "actor_spec": self.actor.spec(),
            "actor": self.actor.state_dict(),
            "obs_norm": self.normalizer.export(),
            "action_low": self.action_low,
            "action_high": self.action_high,
            "env_id": cfg.env.id,
            "env_kwargs": dict(cfg.env.kwargs),
            "meta": {
                "algo": cfg.algo,
                "generator": cfg.generator,
                "reward_kind": self.reward_kind,
                "run_dir": str(self.run_dir.resolve()),
                "env_steps": self.env_steps,
                "updates": self.updates,
                "versions": versions(),
                "eval": dict(self.last_eval),
            },
            "config": cfg.to_dict(),
            "critic": self.critic.state_dict(),
            "algo_state": self.algo.state_dict(),
            "normalizer": self.normalizer.state_dict(),
            "gail": None if self.gail is None else self.gail.state_dict(),
            "reward_scaler": None if self.reward_scaler is None else self.reward_scaler.state_dict(),
            "progress": {
                "env_steps": self.env_steps,
                "updates": self.updates,
                "wall_time": self.wall_time(),
                "next_eval": self.next_eval,
                "next_checkpoint": self.next_checkpoint,
            },
            "rng": {"torch": self.torch_rng.get_state(), "torch_global": torch.get_rng_state()},
        }

    def _restore(self, data: dict[str, Any]) -> None:
        if data["env_id"] != self.config.env.id:
            raise UserError(
                f"cannot resume: checkpoint env '{data['env_id']}' differs from '{self.config.env.id}'"
            )
        self.actor.load_state_dict(data["actor"])
        self.critic.load_state_dict(data["critic"])
        self.algo.load_state_dict(data["algo_state"])
        self.normalizer.load_state_dict(to_numpy_tree(data["normalizer"]))
        if self.gail is not None:
            self.gail.load_state_dict(data["gail"])
        if self.reward_scaler is not None:
            self.reward_scaler.load_state_dict(to_numpy_tree(data["reward_scaler"]))
        progress = data["progress"]
        self.env_steps = int(progress["env_steps"])
        self.updates = int(progress["updates"])
        self.wall_offset = float(progress["wall_time"])
        self.next_eval = progress["next_eval"]
        self.next_checkpoint = int(progress["next_checkpoint"])
        self.torch_rng.set_state(data["rng"]["torch"])
        torch.set_rng_state(data["rng"]["torch_global"])
        self.last_eval = dict(data["meta"].get("eval", {}))

    def save(self, final: bool = False) -> Path:
        return write_checkpoints(
            self.run_dir, self.payload(), self.env_steps, self.config.run.keep_checkpoints, final
        )

    # ------------------------------------------------------------------------------ loop

    def wall_time(self) -> float:
        """Training wall time in seconds, across resumes."""
        return self.wall_offset + (0.0 if self._start is None else time.perf_counter() - self._start)

    def evaluate(self) -> dict[str, float]:
        return evaluation_row(self.bundle(), self.config.run.eval_episodes, self.config.run.seed)

    def train(self) -> Path:
        """Run until ``run.total_steps`` env steps and write ``final.pt``; returns its path."""
        from tqdm import tqdm

        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(cfg.to_yaml())
        resumed_at = self.env_steps if self.env_steps > 0 else None
        envs = make_vector_env(
            cfg.env.id, cfg.env.num_envs, cfg.env.kwargs, cfg.env.vectorization, cfg.env.num_workers or None
        )
        log = MetricsLog(self.run_dir, cfg.run.tensorboard, resumed_at)
        collector = RolloutCollector(envs, self.normalizer, self.torch_rng)
        collector.reset(reset_seed(cfg.run.seed, self.env_steps))
        buffer = RolloutBuffer.empty(cfg.rollout.n_steps, cfg.env.num_envs, self.obs_dim, self.act_dim)
        self._start = time.perf_counter()
        bar = tqdm(
            total=cfg.run.total_steps,
            initial=min(self.env_steps, cfg.run.total_steps),
            unit="step",
            unit_scale=True,
            disable=not cfg.run.progress,
            desc=f"{cfg.algo}{'-' + cfg.generator if cfg.algo == 'gail' else ''} {cfg.env.id}",
        )
        try:
            while self.env_steps < cfg.run.total_steps:
                row = self.round(collector, buffer)
                bar.update(row["steps"])
                postfix = {"sps": f"{row['steps_per_s']:.0f}"}
                if "episode_return" in row:
                    postfix["ret"] = f"{row['episode_return']:.1f}"
                if "disc_acc_expert" in row:
                    postfix["D_acc"] = f"{row['disc_acc_expert']:.2f}/{row['disc_acc_policy']:.2f}"
                if "eval_return" in row:
                    postfix["eval"] = f"{row['eval_return']:.1f}"
                bar.set_postfix(postfix, refresh=False)
                del row["steps"]
                log.write(row)
                if self.env_steps >= self.next_checkpoint and self.env_steps < cfg.run.total_steps:
                    while self.next_checkpoint <= self.env_steps:
                        self.next_checkpoint += cfg.run.checkpoint_interval
                    self.save()
                    collector.reset(reset_seed(cfg.run.seed, self.env_steps))
                    if self.reward_scaler is not None:
                        self.reward_scaler.reset()
            final_eval = self.evaluate()
            if final_eval:
                self.last_eval = final_eval
                log.write({"env_steps": self.env_steps, "wall_time": self.wall_time(), **final_eval})
            return self.save(final=True)
        finally:
            bar.close()
            log.close()
            envs.close()

    def round(self, collector: RolloutCollector, buffer: RolloutBuffer) -> dict[str, Any]:
        """One rollout + update; returns the metrics row (plus ``steps``)."""
        cfg = self.config
        t0 = time.perf_counter()
        collector.collect(self.actor, self.critic, buffer)
        collect_time = time.perf_counter() - t0
        steps = buffer.n_steps * buffer.num_envs
        progress = self.env_steps / cfg.run.total_steps
        self.env_steps += steps
        row: dict[str, Any] = {"env_steps": self.env_steps}
        bootstrap_terminal = None
        if self.gail is not None:
            row.update(self.gail.update(buffer))
            bootstrap_terminal = self.gail.relabel(buffer)
            row["disc_reward"] = float(buffer.rewards.mean())
        if self.reward_scaler is not None:
            buffer.rewards[:] = self.reward_scaler(buffer.rewards, buffer.terminated | buffer.truncated)
        buffer.compute_advantages(cfg.rollout.gamma, cfg.rollout.gae_lambda, bootstrap_terminal)
        critic_only = self.updates < cfg.run.critic_warmup_rounds
        row.update(self.algo.update(buffer, progress, critic_only=critic_only))
        self.updates += 1
        elapsed = time.perf_counter() - t0
        row.update(collector.stats.summary())
        row["env_reward"] = float(buffer.env_rewards.mean())
        row["explained_variance"] = explained_variance(buffer.values, buffer.returns)
        row["steps_per_s"] = steps / elapsed
        row["collect_steps_per_s"] = steps / collect_time
        if self.next_eval is not None and self.env_steps >= self.next_eval:
            while self.next_eval <= self.env_steps:
                self.next_eval += cfg.run.eval_interval
            if self.env_steps < cfg.run.total_steps:  # the final evaluation follows anyway
                self.last_eval = self.evaluate()
                row.update(self.last_eval)
        row["wall_time"] = self.wall_time()
        row["updates"] = self.updates
        row["steps"] = steps
        return row


def explained_variance(values: np.ndarray, returns: np.ndarray) -> float:
    """``1 - Var(R - V) / Var(R)``: 1 is a perfect critic, <= 0 a useless one."""
    var = float(np.var(returns))
    return float("nan") if var == 0 else 1.0 - float(np.var(returns - values)) / var
