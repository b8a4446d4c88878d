"""The on-policy training loop shared by PPO, TRPO and GAIL.

One round::

    collect (T, N) rollout  ->  [GAIL: update D, relabel rewards]  ->  GAE  ->  PPO / TRPO update

The run directory, logs, schedules and checkpoints are :class:`gail_robot.algos.run.Run`'s
(docs/DESIGN.md §4). Resume is exact: a checkpoint is taken between rounds and the envs are then
reset with a seed derived from (run seed, env steps), both in the run that wrote it and in a run
resumed from it; together with the saved RNG, optimiser, normaliser and discriminator-replay
states, the resumed run computes the same next update as the original one would have.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gail_robot.algos.airl import AIRL
from gail_robot.algos.bc import init_source
from gail_robot.algos.config import TrainConfig, actor_ignored_obs
from gail_robot.algos.demos import load_expert_transitions
from gail_robot.algos.gail import GAIL, reward_kind_for
from gail_robot.algos.ppo import PPO
from gail_robot.algos.rollout import RolloutBuffer, RolloutCollector
from gail_robot.algos.run import Run, reset_seed
from gail_robot.algos.trpo import TRPO
from gail_robot.envs.make import make_env, policy_actions
from gail_robot.envs.ray_vector import RayVectorEnv, WorkersUnavailable
from gail_robot.envs.variants import original_of
from gail_robot.envs.vector import make_vector_env
from gail_robot.envs.wrappers import ObsNormalizer, RewardScaler
from gail_robot.errors import UserError
from gail_robot.evaluate import evaluate_in_workers
from gail_robot.nets import (
    Critic,
    GaussianActor,
    NetConfig,
    OnPolicyActor,
    make_policy_actor,
    mask_actor_inputs,
)
from gail_robot.policy_io import PolicyBundle, load_checkpoint, to_numpy_tree
from gail_robot.reward_io import LearnedReward, load_reward


def load_init_actor(
    path: str, actor: OnPolicyActor, normalizer: ObsNormalizer, env_id: str, min_log_std: float | None = None
) -> None:
    """Warm start: copy a checkpoint's actor weights and observation statistics (e.g. from BC).

    ``min_log_std`` (when given) floors the copied per-dimension log std of a Gaussian actor.
    """
    data = load_checkpoint(path)
    # A variant keeps its original's spaces (envs/variants.py): a policy of one starts the other.
    if original_of(data["env_id"]) != original_of(env_id):
        raise UserError(f"--init-from {path} was trained on '{data['env_id']}', not '{env_id}'")
    spec = data["actor_spec"]
    if spec != actor.spec():
        raise UserError(
            f"--init-from {path}: its actor {spec['net']['hidden_sizes']} ({spec['net']['activation']}) "
            f"differs from policy.hidden_sizes {actor.config.hidden_sizes} ({actor.config.activation})"
        )
    actor.load_state_dict(data["actor"])
    if min_log_std is not None and isinstance(actor, GaussianActor):
        with torch.no_grad():
            actor.log_std.clamp_(min=min_log_std)
    norm = to_numpy_tree(data["obs_norm"])
    if normalizer.enabled:
        normalizer.load_frozen(norm["mean"], norm["var"])


class OnPolicyTrainer:
    """PPO / TRPO on the env reward (or a learned reward file), or GAIL / AIRL with a PPO / TRPO generator.

    Args:
        config: the run's configuration.
        run_dir: run directory (created).
        resume: continue from ``run_dir/checkpoints/latest.pt``.
    """

    def __init__(self, config: TrainConfig, run_dir: str | Path, resume: bool = False):
        if config.algo in ("bc", "sac"):
            raise ValueError(f"--algo {config.algo} has its own trainer (gail_robot.algos.{config.algo})")
        self.config = config
        cfg = config
        self.run = Run(config, run_dir)
        self.torch_rng = self.run.torch_rng

        probe = make_env(cfg.env.id, cfg.env.kwargs)
        obs_space = probe.observation_space
        assert obs_space.shape is not None
        self.obs_dim = int(obs_space.shape[0])
        self.actions = policy_actions(probe)  # a Box, or Discrete(n): a categorical actor
        self.act_dim = self.actions.act_dim
        self.action_low, self.action_high = self.actions.low, self.actions.high
        probe.close()

        net = NetConfig(list(cfg.policy.hidden_sizes), cfg.policy.activation)
        self.actor = make_policy_actor(
            self.obs_dim, self.act_dim, self.actions.n_actions, net, cfg.initial_log_std
        )
        self.critic = Critic(self.obs_dim, net)
        self.normalizer = ObsNormalizer(self.obs_dim, cfg.env.obs_clip, cfg.env.normalize_obs)
        self.algo: PPO | TRPO
        if cfg.generator == "ppo":
            self.algo = PPO(self.actor, self.critic, cfg.ppo, self.torch_rng)
        else:
            self.algo = TRPO(self.actor, self.critic, cfg.trpo, self.torch_rng)
        self.gail: GAIL | None = None
        self.airl: AIRL | None = None
        self.reward_kind: str | None = None
        if cfg.adversarial:
            if not cfg.gail.demos:
                raise UserError(f"--algo {cfg.algo} needs demos: --demos FILE (or gail.demos in the config)")
            # person-driven steps only from intervention recordings (docs/DESIGN.md §3.1)
            expert, self.num_demos = load_expert_transitions(
                cfg.gail.demos,
                cfg.env.id,
                cfg.env.kwargs,
                mask=cfg.gail.demo_mask,
                max_demos=cfg.gail.max_demos,
                subsample=cfg.gail.demo_subsample,
            )
        if cfg.algo == "airl":
            if cfg.gail.disc_ignore_obs:
                raise UserError(
                    "gail.disc_ignore_obs is a GAIL option: AIRL's h sees the whole observation "
                    "(airl.g_ignore_obs keeps dims from g)"
                )
            self.airl = AIRL(
                cfg.gail,
                cfg.airl,
                expert,
                self.normalizer,
                self.actor,
                self.action_low,
                self.action_high,
                cfg.rollout.gamma,
                self.torch_rng,
                n_actions=self.actions.n_actions,
            )
        elif cfg.algo == "gail":
            self.reward_kind = reward_kind_for(cfg.env.id, cfg.gail.reward)
            self.gail = GAIL(
                cfg.gail,
                expert,
                self.normalizer,
                self.action_low,
                self.action_high,
                self.reward_kind,
                cfg.rollout.gamma,
                self.torch_rng,
                n_actions=self.actions.n_actions,
            )

        self.learned_reward: LearnedReward | None = None
        if cfg.reward:
            self.learned_reward = load_reward(cfg.reward)
            self.learned_reward.check_env(cfg.env.id, self.obs_dim, self.actions)
            self.learned_reward.check_gamma(cfg.rollout.gamma)

        scale = cfg.rollout.normalize_rewards
        if scale is None:
            scale = not cfg.adversarial and self.learned_reward is None
        self.reward_scaler = RewardScaler(cfg.env.num_envs, cfg.rollout.gamma) if scale else None

        self.updates = 0
        if resume:
            self._restore(self.run.resume())
        elif cfg.init_from:
            load_init_actor(
                init_source(cfg.init_from, run_dir),
                self.actor,
                self.normalizer,
                cfg.env.id,
                cfg.policy.warm_start_min_log_std,
            )
        # After the weights are in place (fresh, warm-started or resumed): the actor stays blind to
        # policy.ignore_obs and, from a warm start, to BC's input selection (docs/DESIGN.md §8.9), or the
        # generator's updates could re-learn the spurious inputs.
        mask_actor_inputs(self.actor, actor_ignored_obs(cfg, self.obs_dim, include_bc=bool(cfg.init_from)))

    # ------------------------------------------------------------------------------ checkpoint

    def bundle(self) -> PolicyBundle:
        """The current deterministic policy with frozen normalisation (for evaluation)."""
        return self.run.bundle(
            actor=self.actor,
            obs_norm=self.normalizer.export(),
            action_low=self.action_low,
            action_high=self.action_high,
        )

    def payload(self) -> dict[str, Any]:
        cfg = self.config
        return self.run.payload(
            actor=self.actor,
            obs_norm=self.normalizer.export(),
            action_low=self.action_low,
            action_high=self.action_high,
            meta={
                "algo": cfg.algo,
                "generator": cfg.generator,
                "reward_kind": self.reward_kind,
                "updates": self.updates,
            },
            progress={"updates": self.updates},
            critic=self.critic.state_dict(),
            algo_state=self.algo.state_dict(),
            normalizer=self.normalizer.state_dict(),
            gail=None if self.gail is None else self.gail.state_dict(),
            airl=None if self.airl is None else self.airl.state_dict(),
            reward_scaler=None if self.reward_scaler is None else self.reward_scaler.state_dict(),
        )

    def _restore(self, data: dict[str, Any]) -> None:
        """The trainer's own state from a checkpoint (``Run.resume`` restored the rest)."""
        self.actor.load_state_dict(data["actor"])
        self.critic.load_state_dict(data["critic"])
        self.algo.load_state_dict(data["algo_state"])
        self.normalizer.load_state_dict(to_numpy_tree(data["normalizer"]))
        if self.gail is not None:
            self.gail.load_state_dict(data["gail"])
        if self.airl is not None:
            if not data.get("airl"):
                raise UserError("cannot resume: the checkpoint was not written by --algo airl")
            self.airl.load_state_dict(data["airl"])
        if self.reward_scaler is not None:
            self.reward_scaler.load_state_dict(to_numpy_tree(data["reward_scaler"]))
        self.updates = int(data["progress"]["updates"])

    def save(self) -> Path:
        """Write the next numbered checkpoint (and ``latest.pt``)."""
        return self.run.save(self.payload())

    # ------------------------------------------------------------------------------ loop

    def train(self) -> Path:
        """Run until ``run.total_steps`` env steps and write ``final.pt``; returns its path."""
        cfg = self.config
        run = self.run
        envs = self._make_envs()
        try:
            if cfg.env.vectorization == "ray":  # evaluation episodes run on the workers too
                run.evaluator = functools.partial(evaluate_in_workers, envs)
            collector = RolloutCollector(envs, self.normalizer, self.torch_rng)
            collector.reset(reset_seed(cfg.run.seed, run.env_steps))
            buffer = RolloutBuffer.empty(
                cfg.rollout.n_steps, cfg.env.num_envs, self.obs_dim, self.act_dim, self.actions.discrete
            )
            desc = f"{cfg.algo}{'-' + cfg.generator if cfg.adversarial else ''} {cfg.env.id}"
            with run.session(desc):
                while run.env_steps < cfg.run.total_steps:
                    try:
                        row = self.round(collector, buffer)
                    except WorkersUnavailable as exc:
                        path = self.save()
                        raise WorkersUnavailable(
                            f"{exc}; saved {path}: continue with gail-robot train --resume {run.dir}"
                        ) from None
                    run.progress(run.env_steps, _postfix(row))
                    run.write(row)
                    if run.checkpoint_due():
                        self.save()
                        collector.reset(reset_seed(cfg.run.seed, run.env_steps))
                        if self.reward_scaler is not None:
                            self.reward_scaler.reset()
                return run.finish(self.bundle, self.payload)
        finally:
            envs.close()

    def _make_envs(self) -> Any:
        env = self.config.env
        if env.vectorization == "ray":
            return RayVectorEnv(
                env.id,
                env.num_envs,
                env.kwargs,
                env.num_workers,
                cpus_per_worker=env.cpus_per_worker,
                address=env.ray_address or None,
                timeout_s=env.worker_timeout_s,
            )
        return make_vector_env(env.id, env.num_envs, env.kwargs, env.vectorization, env.num_workers or None)

    def round(self, collector: RolloutCollector, buffer: RolloutBuffer) -> dict[str, Any]:
        """One rollout + update; returns the metrics row.

        When the cluster cannot replace a lost rollout worker in time, the round is abandoned: the
        noise RNG goes back to its state before the round, a checkpoint is saved and the run stops
        with one line (``--resume`` continues from there).
        """
        cfg = self.config
        run = self.run
        t0 = time.perf_counter()
        rng_before = self.torch_rng.get_state()
        try:
            collector.collect(self.actor, self.critic, buffer)
        except WorkersUnavailable:
            self.torch_rng.set_state(rng_before)  # the round never happened
            raise
        collect_time = time.perf_counter() - t0
        steps = buffer.n_steps * buffer.num_envs
        progress = run.env_steps / cfg.run.total_steps
        run.env_steps += steps
        row: dict[str, Any] = {"env_steps": run.env_steps}
        bootstrap_terminal = None
        if self.gail is not None:
            row.update(self.gail.update(buffer))
            bootstrap_terminal = self.gail.relabel(buffer)
            row["disc_reward"] = float(buffer.rewards.mean())
        elif self.airl is not None:
            row.update(self.airl.update(buffer))
            bootstrap_terminal = self.airl.relabel(buffer)
            row["disc_reward"] = float(buffer.rewards.mean())
        elif self.learned_reward is not None:
            bootstrap_terminal = relabel_with_reward(
                self.learned_reward, buffer, self.action_low, self.action_high, cfg.rollout.gamma
            )
            row["learned_reward"] = float(buffer.rewards.mean())
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
        if isinstance(collector.envs, RayVectorEnv):
            row["workers_replaced"] = collector.envs.replaced
            row.update({f"ray_{k}": v for k, v in dataclasses.asdict(collector.envs.last_call).items()})
        row["collect_steps_per_s"] = steps / collect_time
        row.update(run.scheduled_evaluation(self.bundle))
        row["wall_time"] = run.wall_time()
        row["updates"] = self.updates
        return row


def relabel_with_reward(
    reward: LearnedReward, buffer: RolloutBuffer, low: np.ndarray, high: np.ndarray, gamma: float
) -> np.ndarray | None:
    """Overwrite ``buffer.rewards`` with a learned reward of the executed transitions.

    The reward file takes env-unit actions: the buffer's ``[-1, 1]`` samples are clipped and scaled
    as the env wrapper does (docs/DESIGN.md §2). Returns the ``(T, N)`` absorbing-state value
    ``r_abs / (1 - gamma)`` that bootstraps true terminations when the file has one (docs/DESIGN.md
    §5.2), else None.
    """
    t, n, d = buffer.obs_raw.shape
    if buffer.actions.ndim == 2:  # Discrete: int64 indices
        actions = buffer.actions.reshape(-1)
    else:
        clipped = np.clip(buffer.actions.reshape(t * n, -1), -1.0, 1.0)
        actions = (low + (clipped + 1.0) * 0.5 * (high - low)).astype(np.float32)
    rewards = reward(
        buffer.obs_raw.reshape(t * n, d),
        actions,
        buffer.next_obs_raw.reshape(t * n, d),
        buffer.terminated.reshape(-1),
    )
    buffer.rewards[:] = rewards.reshape(t, n)
    r_abs = reward.absorbing_reward
    if r_abs is None:
        return None
    return np.full((t, n), r_abs / (1.0 - gamma) if gamma < 1.0 else r_abs, dtype=np.float32)


def _postfix(row: dict[str, Any]) -> dict[str, str]:
    """The progress bar's summary of a round."""
    postfix = {"sps": f"{row['steps_per_s']:.0f}"}
    if "episode_return" in row:
        postfix["ret"] = f"{row['episode_return']:.1f}"
    if "disc_acc_expert" in row:
        postfix["D_acc"] = f"{row['disc_acc_expert']:.2f}/{row['disc_acc_policy']:.2f}"
    if "eval_return" in row:
        postfix["eval"] = f"{row['eval_return']:.1f}"
    return postfix


def explained_variance(values: np.ndarray, returns: np.ndarray) -> float:
    """``1 - Var(R - V) / Var(R)``: 1 is a perfect critic, <= 0 a useless one."""
    var = float(np.var(returns))
    return float("nan") if var == 0 else 1.0 - float(np.var(returns - values)) / var
