"""Typed training configuration: one small dataclass per concern, one docstring per field.

A YAML config file maps onto :class:`TrainConfig` section by section (``env:``, ``ppo:``, ...);
``--set section.field=value`` overrides single fields (values parsed as YAML scalars). Unknown
keys and invalid values raise :class:`~gail_robot.errors.UserError` with one line naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import numpy as np
import yaml

from gail_robot.errors import UserError
from gail_robot.nets import ACTIVATIONS
from gail_robot.obs_dims import ignored_obs_indices

ALGOS = ("ppo", "trpo", "gail", "airl", "bc", "sac")
GENERATORS = ("ppo", "trpo")
REWARD_KINDS = ("auto", "gail", "airl", "neg")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise UserError(message)


@dataclass
class EnvConfig:
    """Which env and how to run it."""

    id: str = "InvertedPendulum-v5"
    """Gymnasium env id, e.g. Hopper-v5 or gail_robot/ArmReach-v0."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for gymnasium.make (e.g. max_episode_steps)."""
    num_envs: int = 8
    """Parallel envs in the vector env."""
    vectorization: Literal["batched", "async", "sync", "ray"] = "batched"
    """batched: num_workers subprocesses stepping num_envs / num_workers envs each (fewest messages);
    async: one subprocess per env (Gymnasium AsyncVectorEnv); sync: all envs in the learner process;
    ray: num_workers Ray actors across a cluster's nodes (docs/DESIGN.md §9). The same seed gives the
    same rollouts and weights in sync, batched and ray."""
    num_workers: int = 0
    """Worker processes (batched) or Ray actors (ray); 0: one per CPU core (batched) or as many as the
    cluster's CPUs hold at cpus_per_worker each (ray), at most num_envs. Each worker steps
    num_envs / num_workers envs (set num_envs = workers x envs per worker)."""
    cpus_per_worker: float = 1.0
    """CPUs a Ray rollout worker reserves (ray)."""
    ray_address: str = ""
    """Ray cluster to use (ray): HOST:PORT, ray://HOST:PORT or auto; empty: $RAY_ADDRESS, else a local
    Ray started for the run. --ray-address sets it (also on --resume)."""
    worker_timeout_s: float = 120.0
    """Seconds to wait for the cluster to provide (or replace) rollout workers (ray) before the run
    saves a checkpoint and stops."""
    normalize_obs: bool = True
    """Running observation normalisation, shared by policy, critic and discriminator."""
    obs_clip: float = 10.0
    """Clip bound of normalised observations."""

    def __post_init__(self) -> None:
        _check(self.num_envs >= 1, f"env.num_envs must be >= 1, got {self.num_envs}")
        _check(
            self.vectorization in ("batched", "async", "sync", "ray"),
            "env.vectorization must be batched, async, sync or ray",
        )
        _check(self.cpus_per_worker > 0, f"env.cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        _check(self.worker_timeout_s > 0, f"env.worker_timeout_s must be > 0, got {self.worker_timeout_s}")
        _check(self.num_workers >= 0, f"env.num_workers must be >= 0, got {self.num_workers}")
        _check(self.obs_clip > 0, f"env.obs_clip must be > 0, got {self.obs_clip}")


@dataclass
class PolicyConfig:
    """Actor and critic networks."""

    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden layer widths of actor and critic."""
    activation: str = "tanh"
    """Hidden activation: tanh, relu, elu or silu."""
    init_log_std: float = 0.0
    """Initial log standard deviation of the Gaussian policy (normalised action units). A warm start
    (--init-from) keeps the checkpoint's instead, floored by warm_start_min_log_std."""
    warm_start_min_log_std: float | None = None
    """With --init-from, raise the copied log std to at least this (null: keep it as is). BC on a
    deterministic expert's demos learns a tiny std, which leaves PPO / TRPO almost no exploration."""
    ignore_obs: list[int | str] = field(default_factory=list)
    """Observation dims the actor never reads, in every algorithm (bc, ppo, trpo, gail, airl, sac):
    indices or half-open ranges, as bc.ignore_obs. Their first-layer weights are held at exactly zero
    from the start; the critic, the discriminator and the observation statistics still see them, and the
    policy file keeps the full observation. E.g. ["27:105"] on Ant-v5: its 78 contact-force dims, which
    Ant-v4 left out of the observation by default (docs/DESIGN.md §8.10)."""

    def __post_init__(self) -> None:
        _check(all(int(h) > 0 for h in self.hidden_sizes), "policy.hidden_sizes must be positive ints")
        _check(self.activation in ACTIVATIONS, f"policy.activation must be one of {sorted(ACTIVATIONS)}")


@dataclass
class RolloutConfig:
    """Rollout collection and advantage estimation (shared by PPO and TRPO)."""

    n_steps: int = 256
    """Steps per env per rollout; a rollout holds n_steps * num_envs transitions."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    normalize_rewards: bool | None = None
    """Scale rewards by the running std of the discounted return; null: on for ppo/trpo on the env
    reward, off for gail / airl and for a learned reward (a running std on discriminator rewards is
    reported to destabilise)."""

    def __post_init__(self) -> None:
        _check(self.n_steps >= 1, f"rollout.n_steps must be >= 1, got {self.n_steps}")
        _check(0.0 <= self.gamma <= 1.0, f"rollout.gamma must be in [0, 1], got {self.gamma}")
        _check(0.0 <= self.gae_lambda <= 1.0, f"rollout.gae_lambda must be in [0, 1], got {self.gae_lambda}")


@dataclass
class PPOConfig:
    """PPO update (Schulman et al. 2017)."""

    lr: float = 3e-4
    """Adam learning rate of actor and critic."""
    anneal_lr: bool = True
    """Linearly anneal the learning rate to 0 over the run."""
    epochs: int = 10
    """Passes over each rollout."""
    minibatches: int = 32
    """Minibatches per epoch."""
    clip_range: float = 0.2
    """Clip range of the probability ratio."""
    clip_value: float | None = None
    """Clip range of the value update around the old values (None: no value clipping)."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    target_kl: float | None = None
    """Stop the epochs early once the approximate KL exceeds this (None: never)."""
    normalize_advantages: bool = True
    """Normalise advantages per minibatch."""
    init_log_std: float | None = None
    """Initial log std of a Gaussian policy when PPO is the generator (null: policy.init_log_std); as
    that one, unused by a warm start (--init-from)."""

    def __post_init__(self) -> None:
        _check(self.lr > 0, f"ppo.lr must be > 0, got {self.lr}")
        _check(self.epochs >= 1 and self.minibatches >= 1, "ppo.epochs and ppo.minibatches must be >= 1")
        _check(self.clip_range > 0, f"ppo.clip_range must be > 0, got {self.clip_range}")
        _check(self.clip_value is None or self.clip_value > 0, "ppo.clip_value must be > 0 or null")
        _check(self.target_kl is None or self.target_kl > 0, "ppo.target_kl must be > 0 or null")
        _check(self.max_grad_norm > 0, "ppo.max_grad_norm must be > 0")


@dataclass
class TRPOConfig:
    """TRPO update (Schulman et al. 2015): natural gradient step inside a KL trust region."""

    max_kl: float = 0.01
    """Trust-region bound on the mean KL(old || new)."""
    anneal_kl: bool = False
    """Shrink the bound linearly to 0 over the run, as PPO anneals its learning rate (late GAIL steps
    then settle instead of chasing the moving discriminator reward at full size)."""
    cg_iters: int = 10
    """Conjugate-gradient iterations."""
    cg_damping: float = 0.1
    """Damping added to the Fisher-vector product."""
    line_search_steps: int = 10
    """Backtracking line-search steps."""
    backtrack_ratio: float = 0.8
    """Step shrink factor per line-search step."""
    ent_coef: float = 0.0
    """Entropy bonus in the surrogate."""
    normalize_advantages: bool = True
    """Normalise advantages over the rollout."""
    vf_lr: float = 1e-3
    """Adam learning rate of the value function."""
    vf_epochs: int = 5
    """Passes of value regression over each rollout."""
    vf_minibatches: int = 16
    """Minibatches per value epoch."""
    init_log_std: float | None = None
    """Initial log std of a Gaussian policy when TRPO is the generator (null: policy.init_log_std).
    Its KL-bounded natural-gradient steps narrow the policy more slowly than PPO's epochs of Adam
    steps, so a task may start TRPO narrower (docs/DESIGN.md §8.14). Unused by a warm start (--init-from),
    as policy.init_log_std is."""

    def __post_init__(self) -> None:
        _check(self.max_kl > 0, f"trpo.max_kl must be > 0, got {self.max_kl}")
        _check(self.cg_iters >= 1 and self.line_search_steps >= 1, "trpo iterations must be >= 1")
        _check(0 < self.backtrack_ratio < 1, "trpo.backtrack_ratio must be in (0, 1)")
        _check(self.cg_damping >= 0, "trpo.cg_damping must be >= 0")
        _check(self.vf_lr > 0 and self.vf_epochs >= 1 and self.vf_minibatches >= 1, "bad trpo.vf_* settings")


@dataclass
class GAILConfig:
    """GAIL (Ho & Ermon 2016): a discriminator's reward for a PPO or TRPO generator."""

    demos: str | list[str] | None = None
    """Demo file (HDF5), or a list of files of the same env (e.g. initial demos plus intervention
    rounds); also given by --demos a.hdf5 b.hdf5 ... Intervention recordings contribute their
    person-driven steps only (interventions == 1, docs/DESIGN.md §3.1); ordinary demos every step."""
    demo_mask: str | None = None
    """Use only the demos of this mask (e.g. train)."""
    demo_subsample: int = 1
    """Keep every k-th expert pair (the GAIL paper used 20)."""
    max_demos: int | None = None
    """Use at most this many demos (first ones, numeric order; of each file); null: all."""
    generator: Literal["ppo", "trpo"] = "ppo"
    """The RL algorithm that trains the policy on the discriminator's reward."""
    reward: Literal["auto", "gail", "airl", "neg"] = "auto"
    """Reward from logits: gail=softplus(l) (walkers), neg=-softplus(-l) (tasks ending on success),
    airl=l (pair with absorbing); auto picks neg for gail_robot/Arm* tasks and gail otherwise."""
    disc_input: Literal["sa", "ss"] = "sa"
    """Discriminator input: (s, a) or (s, s')."""
    disc_ignore_obs: list[int | str] = field(default_factory=list)
    """Observation dims the discriminator does not see (of s and s'): indices or half-open ranges, as
    bc.ignore_obs; the policy still reads them. E.g. ["27:105"] on Ant-v5 drops its 78 contact-force
    dims (docs/DESIGN.md §8.10)."""
    hidden_sizes: list[int] = field(default_factory=lambda: [100, 100])
    """Discriminator hidden widths."""
    activation: str = "tanh"
    """Discriminator activation."""
    lr: float = 3e-4
    """Discriminator Adam learning rate."""
    updates_per_round: int = 1
    """Discriminator passes over the round's data per rollout (few, against overpowering)."""
    batch_size: int = 512
    """Discriminator minibatch size (expert and policy halves each)."""
    grad_penalty: float = 0.0
    """WGAN-GP style gradient-penalty weight on expert/policy interpolates (0: off)."""
    ent_coef: float = 0.0
    """Bonus on the entropy of D's Bernoulli output (keeps D uncertain; 0: off)."""
    replay_rounds: int = 1
    """Policy samples of this many most recent rollouts feed D (1: the current rollout only)."""
    absorbing: bool = False
    """DAC absorbing states for true terminations (pair with reward: airl)."""
    expert_noise: float = 0.0
    """Std of Gaussian noise on normalised expert inputs (regularises D)."""

    def __post_init__(self) -> None:
        _check(self.generator in GENERATORS, f"gail.generator must be one of {GENERATORS}")
        _check(self.reward in REWARD_KINDS, f"gail.reward must be one of {REWARD_KINDS}")
        _check(self.disc_input in ("sa", "ss"), "gail.disc_input must be sa or ss")
        _check(self.demo_subsample >= 1, "gail.demo_subsample must be >= 1")
        _check(self.max_demos is None or self.max_demos >= 1, "gail.max_demos must be >= 1 or null")
        _check(self.updates_per_round >= 1 and self.batch_size >= 2, "bad gail.updates_per_round/batch_size")
        _check(
            self.lr > 0 and self.grad_penalty >= 0 and self.ent_coef >= 0, "bad gail.lr/grad_penalty/ent_coef"
        )
        _check(self.replay_rounds >= 1, "gail.replay_rounds must be >= 1")
        _check(self.activation in ACTIVATIONS, f"gail.activation must be one of {sorted(ACTIVATIONS)}")
        _check(self.expert_noise >= 0, "gail.expert_noise must be >= 0")


@dataclass
class AIRLConfig:
    """AIRL (Fu et al. 2018): the discriminator ``D = exp f / (exp f + pi(a|s))`` with
    ``f(s, a, s') = g(s [, a]) + gamma h(s') - h(s)``, the generator's reward ``f - log pi``.

    AIRL shares the ``gail`` section's demos, generator and discriminator training settings
    (``hidden_sizes`` and ``activation`` of g and h, ``lr``, ``updates_per_round``, ``batch_size``,
    ``grad_penalty``, ``ent_coef``, ``replay_rounds``, ``demo_subsample``, ``max_demos``,
    ``demo_mask``); ``gail.reward``, ``gail.disc_input``, ``gail.absorbing`` and
    ``gail.expert_noise`` do not apply (docs/DESIGN.md §8.8).
    """

    state_only: bool = True
    """g(s) (the disentangled reward, which transfers to new dynamics) instead of g(s, a)."""
    absorbing: bool = True
    """DAC absorbing states for true terminations (Kostrikov et al. 2019): without them an episode's
    length biases the learned reward (the imitation library's issues #279 and #310)."""
    entropy_weight: float = 1.0
    """beta in the generator's reward ``f - beta log pi`` (D is unchanged): 1 is the paper's
    maximum-entropy objective. With a Gaussian policy whose actions the env clips, ``-log pi`` grows
    without bound as the policy's std does while the clipped actions stay the same, so on a task that
    never terminates (HalfCheetah) the generator widens its std instead of imitating; a smaller beta
    (the original AIRL code's ``entropy_weight``, 0.1 in its scripts) removes that (docs/DESIGN.md §8.8)."""

    absorbing_log_pi: str = "zero"
    """``log pi`` of the absorbing state's one action in D's logit ``f - log pi``. ``zero``: probability
    1 (DAC's convention for a discrete placeholder). ``policy_mean``: the mean ``log pi`` of the round's
    policy samples. A Gaussian's ``log pi`` is a density whose level depends on the policy's std (and
    the action units), so with ``zero`` the absorbing state's logit sits ``mean log pi`` away from the
    living steps' before D has seen a single termination: a narrow policy (BC's, ``log pi`` +3 per step
    on Walker2d) is paid to fall, a wide one (``log pi`` -6) to survive. ``policy_mean`` starts it level
    with a typical living step and leaves the ranking to what D learns (docs/DESIGN.md §8.8)."""

    absorbing_grad_penalty: bool = True
    """Whether the gradient penalty's interpolates include pairs whose ``s'`` is the absorbing state.
    The absorbing state (zeros, flag 1) is not a point of the state space, yet it sits at the centre of
    the normalised states, next to the expert's: a penalty on the path from an expert pair to it ties
    ``f(s_abs)`` to the expert's ``f``, and D cannot make falling policy-like however often it sees
    a fall (from BC on Walker2d: D at 1.00 / 0.98 accuracy, the absorbing logit stuck near 0 while
    the policy's living steps sat at -5.7). ``false`` leaves those pairs out (docs/DESIGN.md §8.8)."""

    g_ignore_obs: list[int | str] = field(default_factory=list)
    """Observation dims the reward ``g`` does not see (indices or half-open ranges, as
    gail.disc_ignore_obs); ``h``, the shaping, still sees them all, and so does the policy. A prior on what
    the reward may depend on: a locomotion reward is a function of the torso's motion, so a g kept off
    the joints cannot pay for the demos' leg posture, which a changed body cannot reach
    (docs/DESIGN.md §8.8)."""

    cap_absorbing_reward: bool = False
    """Cap the generator's absorbing reward at the lowest reward ``f - beta log pi`` of any expert pair
    this round (D is unchanged). Demos that never fall say nothing about how falling compares with the
    states a policy keeps alive in; both are "policy" samples to D, so whether the learned absorbing
    reward sits above or below a living step is set by a small, seed- and machine-dependent difference,
    and above it the generator learns to fall (Walker2d from BC, docs/RESULTS.md §2). The cap keeps falling
    worth no more than the expert's worst step: the training-time twin of ``export-reward --absorbing
    demo-min`` (docs/DESIGN.md §8.8)."""

    def __post_init__(self) -> None:
        _check(
            0.0 <= self.entropy_weight <= 1.0,
            f"airl.entropy_weight must be in [0, 1], got {self.entropy_weight}",
        )
        _check(
            self.absorbing_log_pi in ("zero", "policy_mean"),
            f"airl.absorbing_log_pi must be zero or policy_mean, got {self.absorbing_log_pi!r}",
        )


@dataclass
class BCConfig:
    """Behaviour cloning: Gaussian maximum likelihood with a validation split and early stopping."""

    demos: str | list[str] | None = None
    """Demo file (HDF5), or a list of files of the same env (e.g. initial demos plus intervention
    rounds); also given by --demos a.hdf5 b.hdf5 ..."""
    demo_mask: str | None = None
    """Train on the demos of this mask only (validation is split off from them)."""
    max_demos: int | None = None
    """Use at most this many demos (of each file); null: all."""
    intervention_weighting: bool = False
    """Demos recorded with interventions (policy_actions / interventions datasets, docs/DESIGN.md §3).
    false: HG-DAgger (Kelly et al. 2019): train on their intervention steps only (the person's
    labels), plus every step of ordinary demos. true: IWR (Mandlekar et al. 2020): train on every
    step, weighted so that intervention steps and all other steps (policy-driven steps and ordinary
    demos) each carry half of the loss: w = M / (2 M_int) on intervention steps, M / (2 M_other)
    on the others (M steps in all; weights 1 when a class is empty)."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    batch_size: int = 256
    """Minibatch size."""
    max_epochs: int = 200
    """Upper bound on epochs."""
    valid_fraction: float = 0.1
    """Fraction of demos (whole episodes) held out for validation."""
    patience: int = 10
    """Stop after this many epochs without validation improvement."""
    ignore_obs: list[int | str] = field(default_factory=list)
    """Observation dimensions the actor does not read: indices (7) or half-open ranges ("0:14"). Their
    first-layer weights are held at zero while BC trains, and stay zero in a run warm-started with
    ``init_from`` (GAIL, PPO, TRPO). They stay in the observation and its statistics, so the policy file
    and export see the usual observation.
    The arm configs drop what their scripted experts never read (README "What limits BC on ArmPush /
    ArmPickPlace")."""
    loss: Literal["nll", "mse"] = "nll"
    """nll: maximum likelihood (Gaussian, or cross-entropy for Discrete actions), which also learns the
    actor's state-independent log-std; mse: squared error of the deterministic mean action (continuous
    actions only; the log-std stays at policy.init_log_std). Early stopping watches the same quantity
    on the held-out demos."""

    def __post_init__(self) -> None:
        _check(self.lr > 0 and self.weight_decay >= 0, "bad bc.lr/weight_decay")
        _check(self.batch_size >= 1 and self.max_epochs >= 1 and self.patience >= 1, "bad bc sizes")
        _check(0.0 <= self.valid_fraction < 1.0, "bc.valid_fraction must be in [0, 1)")
        _check(self.max_demos is None or self.max_demos >= 1, "bc.max_demos must be >= 1 or null")


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


@dataclass
class RunConfig:
    """Budget, logging, evaluation and checkpoints."""

    total_steps: int = 100_000
    """Env steps to train for (BC: ignored)."""
    seed: int = 0
    """Seed of torch, numpy and env resets."""
    torch_threads: int = 1
    """Learner threads (1 is fastest for small MLPs while env subprocesses use the other cores)."""
    eval_interval: int = 50_000
    """Deterministic evaluation every this many env steps (0: only at the end)."""
    eval_episodes: int = 5
    """Episodes per evaluation."""
    checkpoint_interval: int = 100_000
    """Checkpoint every this many env steps (envs are reset there, so resume is exact)."""
    keep_checkpoints: int = 3
    """Numbered checkpoints to keep besides latest.pt and final.pt."""
    critic_warmup_rounds: int = 0
    """PPO/TRPO/GAIL: the first rounds of a run update only the critic (and the discriminator), so
    that a warm-started actor (``--init-from`` a BC run) is not pushed around by an untrained
    critic's advantages."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = True
    """Write TensorBoard event files."""

    def __post_init__(self) -> None:
        _check(self.total_steps >= 1, f"run.total_steps must be >= 1, got {self.total_steps}")
        _check(self.torch_threads >= 1, "run.torch_threads must be >= 1")
        _check(self.eval_interval >= 0 and self.eval_episodes >= 0, "bad run.eval_interval/eval_episodes")
        _check(self.checkpoint_interval >= 1 and self.keep_checkpoints >= 0, "bad run.checkpoint settings")
        _check(self.critic_warmup_rounds >= 0, "run.critic_warmup_rounds must be >= 0")


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as the run's config.yaml."""

    algo: Literal["ppo", "trpo", "gail", "airl", "bc", "sac"] = "ppo"
    """ppo / trpo: RL on the env reward (or on a learned one: reward); gail / airl: imitation with a
    ppo/trpo generator (gail.generator); bc: cloning; sac: off-policy RL on the env reward (for
    experts, see gail_robot/algos/sac.py)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """Env id, kwargs, vectorisation and observation normalisation."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """Actor and critic networks."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Rollout size and GAE."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """PPO update (algo ppo, or gail with generator ppo)."""
    trpo: TRPOConfig = field(default_factory=TRPOConfig)
    """TRPO update (algo trpo, or gail with generator trpo)."""
    gail: GAILConfig = field(default_factory=GAILConfig)
    """Discriminator and demos (algo gail; demos, generator and discriminator training for airl)."""
    airl: AIRLConfig = field(default_factory=AIRLConfig)
    """AIRL's reward structure (algo airl)."""
    bc: BCConfig = field(default_factory=BCConfig)
    """Behaviour cloning (algo bc)."""
    sac: SACConfig = field(default_factory=SACConfig)
    """Soft Actor-Critic (algo sac)."""
    run: RunConfig = field(default_factory=RunConfig)
    """Budget, seed, logging, evaluation and checkpoints."""
    init_from: str | None = None
    """Warm start: a BC (or any) run dir / checkpoint whose actor and obs normaliser are copied; ``bc``:
    the run trains BC on its demos first (its bc section and seed) in ``RUN/init_bc`` and starts from
    it, so that a sweep's every seed is a whole BC + GAIL pipeline."""
    reward: str | None = None
    """A learned reward file (gail-robot export-reward) that ppo / trpo / sac train on instead of
    the env reward; the env reward is still logged as the score. --reward sets it."""

    def __post_init__(self) -> None:
        _check(self.algo in ALGOS, f"algo must be one of {ALGOS}, got {self.algo!r}")
        _check(
            self.reward is None or self.algo in ("ppo", "trpo", "sac"),
            f"--reward (a learned reward) goes with --algo ppo, trpo or sac, not {self.algo}",
        )

    @property
    def adversarial(self) -> bool:
        """GAIL or AIRL: a discriminator relabels the rollout's rewards."""
        return self.algo in ("gail", "airl")

    @property
    def generator(self) -> str:
        """The RL update in use: the algo itself, or gail.generator for gail and airl."""
        return self.gail.generator if self.adversarial else self.algo

    @property
    def initial_log_std(self) -> float:
        """The on-policy actor's initial log std: the generator's own setting, else policy.init_log_std."""
        own = {"ppo": self.ppo.init_log_std, "trpo": self.trpo.init_log_std}.get(self.generator)
        return self.policy.init_log_std if own is None else own

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ------------------------------------------------------------------------- building from data


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check/convert ``value`` against a type hint (the small subset the configs use)."""
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise UserError(f"{key} must be one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{key} must be a list, got {value!r}")
        (item,) = get_args(hint)
        return [_coerce(v, item, key) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise UserError(f"{key} must be an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-4" (no dot) as a string; accept it as the number it means.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{key} must be a string, got {value!r}")
        return value
    if hint is Any:
        return value
    raise UserError(f"{key}: unsupported config type {hint}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise UserError(f"{prefix or 'config'} must be a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f" in section '{prefix}'" if prefix else ""
        raise UserError(f"unknown config key '{prefix}{'.' if prefix else ''}{unknown[0]}'{where}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(typing.cast(type, hint), value or {}, key)
        else:
            kwargs[name] = _coerce(value, hint, key)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"invalid config{' section ' + prefix if prefix else ''}: {exc}") from exc


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from nested plain data."""
    return typing.cast(TrainConfig, _build(TrainConfig, data, ""))


def actor_ignored_obs(cfg: TrainConfig, obs_dim: int, include_bc: bool) -> np.ndarray:
    """The observation dims the actor must not read: ``policy.ignore_obs``, and with ``include_bc`` also
    ``bc.ignore_obs`` (BC itself, and a run warm-started from BC, which keeps BC's input selection:
    docs/DESIGN.md §8.9). Sorted unique indices (checked as :func:`ignored_obs_indices`)."""
    ignored = ignored_obs_indices(cfg.policy.ignore_obs, obs_dim, "policy.ignore_obs")
    if include_bc:
        ignored = np.union1d(ignored, ignored_obs_indices(cfg.bc.ignore_obs, obs_dim, "bc.ignore_obs"))
    if len(ignored) >= obs_dim:
        raise UserError(
            f"policy.ignore_obs / bc.ignore_obs leave the actor none of the {obs_dim} observation dims"
        )
    return ignored.astype(np.int64)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"ppo.lr=1e-4"`` -> ``(["ppo", "lr"], 1e-4)``; the value is parsed as a YAML scalar/list."""
    if "=" not in text:
        raise UserError(f"--set expects key=value, got '{text}'")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"--set expects key=value, got '{text}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise UserError(f"--set {key}: cannot parse value '{raw}'") from exc
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to nested plain data (a copy); unknown keys fail at build time."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"--set {'.'.join(path)}: '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return data


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file as plain data (``{}`` for an empty file)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"cannot parse config {path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping at the top level")
    return data


def shipped_config_path(name: str) -> Path | None:
    """The packaged config for an env id or a config name (``Hopper-v5``, ``gail_robot/ArmReach-v0``)."""
    folder = Path(__file__).resolve().parent.parent / "configs"
    nested = folder / f"{name.removesuffix('.yaml')}.yaml"  # e.g. sac/Hopper-v5
    if "/" in name and nested.is_file():
        return nested
    stem = name.split("/")[-1].removesuffix(".yaml")
    candidate = folder / f"{stem}.yaml"
    return candidate if candidate.is_file() else None
