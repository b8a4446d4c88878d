"""One rollout path for every on-policy generator: collect ``(T, N)`` transitions, then GAE.

The buffer keeps terminations and truncations apart and stores the true successor observation of
every step (``final_obs`` on episode ends, from SAME_STEP autoreset). Values are computed after
the rollout in two batched passes, ``V(obs)`` and ``V(next_obs)``, with the observation statistics
frozen for the whole rollout, so ``next_values`` of a truncated step is V(final observation) and
never V(reset observation). Rewards are a separate array that GAIL may overwrite before
:meth:`RolloutBuffer.compute_advantages`; nothing is folded into them (docs/DESIGN.md §8.2).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gail_robot import core
from gail_robot.envs.vector import final_observations, step_info_value
from gail_robot.envs.wrappers import ObsNormalizer
from gail_robot.nets import Critic, GaussianActor, OnPolicyActor


@dataclass
class RolloutBuffer:
    """Time-major storage of one rollout; all arrays are ``(T, N, ...)``.

    Attributes:
        obs_raw: ``(T, N, obs_dim) float32`` raw observations s_t.
        obs: ``(T, N, obs_dim) float32`` normalised s_t as the policy saw it.
        next_obs_raw: ``(T, N, obs_dim) float32`` raw true successor (final obs on episode end).
        next_obs: ``(T, N, obs_dim) float32`` normalised successor (same statistics as ``obs``).
        actions: ``(T, N, act_dim) float32`` sampled (unclipped) normalised actions; for a
            ``Discrete`` action space ``(T, N) int64`` action indices (``discrete=True``).
        log_probs: ``(T, N) float32`` log pi(a_t | s_t) at collection.
        env_rewards: ``(T, N) float32`` the env's own reward.
        rewards: ``(T, N) float32`` reward used for learning (env reward, or relabelled by GAIL).
        terminated: ``(T, N) bool`` true termination at step t.
        truncated: ``(T, N) bool`` time-limit truncation at step t.
        values: ``(T, N) float32`` V(s_t).
        next_values: ``(T, N) float32`` V(true successor of step t).
        advantages: ``(T, N) float32`` after :meth:`compute_advantages`.
        returns: ``(T, N) float32`` after :meth:`compute_advantages`.
    """

    obs_raw: np.ndarray
    obs: np.ndarray
    next_obs_raw: np.ndarray
    next_obs: np.ndarray
    actions: np.ndarray
    log_probs: np.ndarray
    env_rewards: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    values: np.ndarray
    next_values: np.ndarray
    advantages: np.ndarray
    returns: np.ndarray

    @classmethod
    def empty(
        cls, n_steps: int, num_envs: int, obs_dim: int, act_dim: int, discrete: bool = False
    ) -> RolloutBuffer:
        """Zeroed arrays; ``discrete`` stores actions as int64 indices ``(T, N)`` (``act_dim`` unused)."""

        def f32(*shape: int) -> np.ndarray:
            return np.zeros(shape, dtype=np.float32)

        t, n = n_steps, num_envs
        return cls(
            obs_raw=f32(t, n, obs_dim),
            obs=f32(t, n, obs_dim),
            next_obs_raw=f32(t, n, obs_dim),
            next_obs=f32(t, n, obs_dim),
            actions=np.zeros((t, n), np.int64) if discrete else f32(t, n, act_dim),
            log_probs=f32(t, n),
            env_rewards=f32(t, n),
            rewards=f32(t, n),
            terminated=np.zeros((t, n), dtype=bool),
            truncated=np.zeros((t, n), dtype=bool),
            values=f32(t, n),
            next_values=f32(t, n),
            advantages=f32(t, n),
            returns=f32(t, n),
        )

    @property
    def n_steps(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def num_envs(self) -> int:
        return int(self.rewards.shape[1])

    def compute_values(self, critic: Critic) -> None:
        """Fill ``values`` and ``next_values`` with two batched critic passes."""
        t, n, d = self.obs.shape
        with torch.no_grad():
            self.values[:] = critic(torch.from_numpy(self.obs.reshape(t * n, d))).numpy().reshape(t, n)
            self.next_values[:] = (
                critic(torch.from_numpy(self.next_obs.reshape(t * n, d))).numpy().reshape(t, n)
            )

    def compute_advantages(
        self, gamma: float, lam: float, bootstrap_terminal: np.ndarray | None = None
    ) -> None:
        """GAE over the rollout via ``gail_robot.core.gae`` (docs/DESIGN.md §2 semantics).

        Args:
            gamma: discount.
            lam: GAE lambda.
            bootstrap_terminal: optional ``(T, N)`` value of the absorbing successor for terminated
                steps (DAC). Such steps then cut the trace but bootstrap from this value, which is
                exactly GAE's truncation case, so they are passed as truncated with that next value.
        """
        terminated, truncated, next_values = self.terminated, self.truncated, self.next_values
        if bootstrap_terminal is not None:
            next_values = np.where(terminated, bootstrap_terminal, next_values).astype(np.float32)
            truncated = truncated | terminated
            terminated = np.zeros_like(terminated)
        adv, ret = core.gae(self.rewards, self.values, next_values, terminated, truncated, gamma, lam)
        self.advantages[:] = adv
        self.returns[:] = ret

    def flat(self) -> dict[str, torch.Tensor]:
        """The fields an update needs, flattened to ``(T * N, ...)`` tensors."""
        t, n = self.rewards.shape
        return {
            "obs": torch.from_numpy(self.obs.reshape(t * n, -1)),
            "actions": torch.from_numpy(self.actions.reshape(t * n, *self.actions.shape[2:])),
            "log_probs": torch.from_numpy(self.log_probs.reshape(-1)),
            "values": torch.from_numpy(self.values.reshape(-1)),
            "advantages": torch.from_numpy(self.advantages.reshape(-1)),
            "returns": torch.from_numpy(self.returns.reshape(-1)),
        }


@dataclass
class EpisodeStats:
    """Finished-episode statistics of the true env (independent of any relabelled reward)."""

    window: int = 20
    returns: deque[float] = field(default_factory=deque)
    lengths: deque[int] = field(default_factory=deque)
    successes: deque[float] = field(default_factory=deque)
    forward_velocity: deque[float] = field(default_factory=deque)
    episodes: int = 0

    def add(self, ret: float, length: int, success: float | None, velocity: float | None) -> None:
        self.episodes += 1
        for store, value in (
            (self.returns, ret),
            (self.lengths, length),
            (self.successes, success),
            (self.forward_velocity, velocity),
        ):
            if value is not None:
                store.append(value)  # type: ignore[arg-type]
                while len(store) > self.window:
                    store.popleft()

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.returns:
            out["episode_return"] = float(np.mean(self.returns))
            out["episode_length"] = float(np.mean(self.lengths))
        if self.successes:
            out["success_rate"] = float(np.mean(self.successes))
        if self.forward_velocity:
            out["forward_velocity"] = float(np.mean(self.forward_velocity))
        return out


class RolloutCollector:
    """Steps a SAME_STEP-autoreset vector env with the current policy and fills a buffer.

    Args:
        envs: Gymnasium vector env whose sub-envs take ``[-1, 1]`` actions.
        normalizer: observation normaliser; frozen during a rollout, updated after it.
        torch_rng: the torch RNG of the action noise (saved with checkpoints).
    """

    def __init__(self, envs: Any, normalizer: ObsNormalizer, torch_rng: torch.Generator):
        self.envs = envs
        self.normalizer = normalizer
        self.torch_rng = torch_rng
        self.num_envs = int(envs.num_envs)
        self.stats = EpisodeStats()
        self._obs: np.ndarray | None = None
        self._ep_return = np.zeros(self.num_envs)
        self._ep_length = np.zeros(self.num_envs, dtype=np.int64)
        self._ep_velocity = np.zeros(self.num_envs)

    def reset(self, seed: int) -> None:
        """Start fresh episodes in every env (seeds ``seed, seed + 1, ...``)."""
        obs, _ = self.envs.reset(seed=[int(seed) + i for i in range(self.num_envs)])
        self._obs = np.asarray(obs, dtype=np.float32)
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        self._ep_velocity[:] = 0.0

    def collect(self, actor: OnPolicyActor, critic: Critic, buffer: RolloutBuffer) -> None:
        """Fill ``buffer`` with ``buffer.n_steps`` vector steps, then its log-probabilities and values.

        The normaliser is updated with the rollout's raw observations only after the rollout,
        so every normalised array in the buffer uses the same statistics. With worker processes
        (:class:`~gail_robot.envs.vector.BatchedSubprocVectorEnv`) each worker runs the whole
        rollout of its envs with a NumPy copy of the actor: no message per step. The noise of
        every step is drawn here first (Gaussian noise, or Gumbel noise for a categorical actor)
        and every mode computes the actions with the same row-by-row kernel
        (:func:`gail_robot.core.mlp_forward`), so the rollout is bit-identical in ``sync``,
        ``batched`` and ``ray`` modes (docs/DESIGN.md §9).
        """
        if self._obs is None:
            raise RuntimeError("call reset(seed) before collect()")
        t_steps, n = buffer.rewards.shape
        with torch.no_grad():
            noise = actor.draw_noise((t_steps, n), self.torch_rng)
        policy = self._rollout_policy(actor)
        if policy is None:
            self._collect_here(actor, noise, buffer)
        else:
            self._collect_parts(policy, noise.numpy(), buffer)
        d = buffer.obs_raw.shape[2]
        with torch.no_grad():
            log_probs = actor.rollout_log_probs(
                torch.from_numpy(buffer.obs), torch.from_numpy(buffer.actions), noise
            )
        buffer.log_probs[:] = log_probs.numpy()
        next_obs = self.normalizer(buffer.next_obs_raw.reshape(t_steps * n, d))
        buffer.next_obs[:] = next_obs.reshape(t_steps, n, d)
        buffer.rewards[:] = buffer.env_rewards
        buffer.compute_values(critic)
        self.normalizer.update(buffer.obs_raw.reshape(t_steps * n, d))

    def _collect_here(self, actor: OnPolicyActor, noise: torch.Tensor, buffer: RolloutBuffer) -> None:
        assert self._obs is not None
        everything = slice(0, self.num_envs)
        for t in range(buffer.n_steps):
            obs_raw = self._obs
            obs_n = self.normalizer(obs_raw)
            with torch.no_grad():
                action = actor.noisy_action(torch.from_numpy(obs_n), noise[t]).numpy()
            next_obs, reward, terminated, truncated, infos = self.envs.step(action)
            terminated = np.asarray(terminated, dtype=bool)
            truncated = np.asarray(truncated, dtype=bool)
            done = terminated | truncated
            buffer.obs_raw[t] = obs_raw
            buffer.obs[t] = obs_n
            buffer.next_obs_raw[t] = final_observations(next_obs, infos, done)
            buffer.actions[t] = action
            buffer.env_rewards[t] = reward
            buffer.terminated[t] = terminated
            buffer.truncated[t] = truncated
            velocity = step_info_value(infos, "x_velocity", done)
            success = step_info_value(infos, "is_success", done)
            self._track(everything, np.asarray(reward, dtype=np.float64), done, velocity, success)
            self._obs = np.asarray(next_obs, dtype=np.float32)

    def _rollout_policy(self, actor: OnPolicyActor) -> NumpyPolicy | None:
        """The actor as a :class:`NumpyPolicy`; None (torch stepping) only in-process for other actors."""
        try:
            std = actor.log_std.detach().exp() if isinstance(actor, GaussianActor) else None
            return NumpyPolicy.from_actor(actor, std, self.normalizer)
        except ValueError:
            if hasattr(self.envs, "call_parts"):
                raise  # worker processes can only run a NumpyPolicy
            return None

    def _collect_parts(self, policy: NumpyPolicy, noise: np.ndarray, buffer: RolloutBuffer) -> None:
        """:func:`worker_rollout` in every worker at once (or here, over all envs, for in-process envs)."""
        assert self._obs is not None
        if hasattr(self.envs, "call_parts"):
            # The workers keep their envs' current observations between rollouts.
            parts: list[slice] = self.envs.parts
            results = self.envs.call_parts(worker_rollout, [(policy, noise[:, sl]) for sl in parts])
        else:
            parts = [slice(0, self.num_envs)]
            result, self._obs = worker_rollout(self.envs, self._obs, policy, noise)
            results = [result]
        for sl, part in zip(parts, results, strict=True):
            for key in ("obs_raw", "next_obs_raw", "actions", "env_rewards", "terminated", "truncated"):
                getattr(buffer, key)[:, sl] = part[key]
        t_steps, n, d = buffer.obs_raw.shape
        buffer.obs[:] = self.normalizer(buffer.obs_raw.reshape(t_steps * n, d)).reshape(t_steps, n, d)
        for t in range(t_steps):
            for sl, part in zip(parts, results, strict=True):
                done = part["terminated"][t] | part["truncated"][t]
                velocity = part["velocity"][t], part["has_velocity"][t]
                success = part["success"][t], part["has_success"][t]
                self._track(sl, part["env_rewards"][t].astype(np.float64), done, velocity, success)

    def _track(
        self,
        sl: slice,
        reward: np.ndarray,
        done: np.ndarray,
        velocity: tuple[np.ndarray, np.ndarray],
        success: tuple[np.ndarray, np.ndarray],
    ) -> None:
        """Episode statistics of envs ``sl``; ``velocity``/``success`` are ``(values, present)``."""
        ep_return, ep_length, ep_velocity = self._ep_return[sl], self._ep_length[sl], self._ep_velocity[sl]
        ep_return += reward
        ep_length += 1
        ep_velocity += velocity[0]
        for i in np.flatnonzero(done):
            self.stats.add(
                float(ep_return[i]),
                int(ep_length[i]),
                float(success[0][i]) if success[1][i] else None,
                float(ep_velocity[i] / ep_length[i]) if velocity[1][i] else None,
            )
            ep_return[i] = 0.0
            ep_length[i] = 0
            ep_velocity[i] = 0.0


#: the hidden activations NumpyPolicy can reproduce (core.mlp_forward's names), by torch module type
_NUMPY_ACTIVATIONS: dict[type[torch.nn.Module], str] = {
    torch.nn.Tanh: "tanh",
    torch.nn.ReLU: "relu",
    torch.nn.ELU: "elu",
    torch.nn.SiLU: "silu",
}

#: how far NumpyPolicy's mean action may be from the torch actor's (float32 round-off only)
NUMPY_POLICY_ATOL = 1e-5


@dataclass
class NumpyPolicy:
    """The rollout policy as plain arrays for worker processes.

    Gaussian: ``mlp(normalise(obs)) + std * noise``; categorical: ``argmax(mlp(normalise(obs)) + noise)``
    with Gumbel noise (the Gumbel-max trick, see :class:`~gail_robot.nets.CategoricalActor`).
    Rebuilt from an actor whose ``rollout_net`` (the Gaussian mean, the categorical logits) is Linear
    layers with the hidden activations above between them; :meth:`from_actor` refuses anything else
    and checks the copy against the torch actor on a probe batch, so a network it cannot reproduce
    (a LayerNorm, a new head) fails loudly instead of silently changing batched-mode actions.
    Its forward pass is :func:`gail_robot.core.mlp_forward` (about a microsecond per row for a
    64-64 MLP), the same in every vectorisation mode; the workers never use torch (or fork its
    thread pools).

    Attributes:
        weights: per Linear layer ``(W (in, out), b (out,))`` float32.
        activations: the activation name after each hidden layer (``len(weights) - 1`` names).
        std: ``(act_dim,)`` action noise scale (Gaussian); ``(0,)`` for a categorical policy.
        normalizer_state: the learner's :class:`ObsNormalizer` state (frozen for the rollout).
        discrete: the actions are ``argmax`` indices (int64) of the network's output plus the noise.
    """

    weights: list[tuple[np.ndarray, np.ndarray]]
    activations: list[str]
    std: np.ndarray
    normalizer_state: dict[str, Any]
    discrete: bool = False

    @classmethod
    def from_actor(
        cls, actor: OnPolicyActor, std: torch.Tensor | None, normalizer: ObsNormalizer
    ) -> NumpyPolicy:
        """Copy ``actor``'s rollout network; raises ``ValueError`` when the copy would act differently.

        ``std`` is the Gaussian noise scale ``(act_dim,)``; None for a categorical actor.
        """
        modules = list(getattr(actor, "rollout_net", []))
        weights: list[tuple[np.ndarray, np.ndarray]] = []
        activations: list[str] = []
        for i, module in enumerate(modules):
            expect_linear = i % 2 == 0
            if expect_linear and type(module) is torch.nn.Linear:
                weights.append((module.weight.detach().numpy().T.copy(), module.bias.detach().numpy().copy()))
            elif not expect_linear and type(module) in _NUMPY_ACTIVATIONS:
                activations.append(_NUMPY_ACTIVATIONS[type(module)])
            else:
                raise ValueError(
                    f"the batched vector env cannot run {type(actor).__name__}: its rollout_net has "
                    f"{type(module).__name__} at position {i}, NumpyPolicy reproduces only Linear layers "
                    "with tanh/relu/elu/silu between them (use env.vectorization=sync or async)"
                )
        if not weights or len(modules) % 2 == 0:
            raise ValueError(
                f"the batched vector env cannot run {type(actor).__name__}: it has no Linear rollout_net "
                "ending in a Linear layer (use env.vectorization=sync or async)"
            )
        discrete = bool(getattr(actor, "DISCRETE", False))
        scale = np.zeros(0, np.float32) if std is None else std.detach().numpy().copy()
        policy = cls(weights, activations, scale, normalizer.state_dict(), discrete)
        policy.check(actor)
        return policy

    def check(self, actor: torch.nn.Module, atol: float = NUMPY_POLICY_ATOL) -> None:
        """Compare :meth:`mean` with ``actor`` on a fixed probe batch; ``ValueError`` beyond ``atol``.

        ``atol`` applies to outputs up to 1 in magnitude and relative to the largest output beyond.
        """
        obs_dim = self.weights[0][0].shape[0]
        # Normalised inputs span the clip range; a private RNG leaves every training RNG untouched.
        probe = np.random.default_rng(0).uniform(-3.0, 3.0, (32, obs_dim)).astype(np.float32)
        with torch.no_grad():
            expected = actor(torch.from_numpy(probe)).numpy()
        got = self.mean(probe)
        diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
        # float32 round-off grows with the size of the outputs: the bound is relative beyond 1.
        bound = atol * max(1.0, float(np.max(np.abs(expected))))
        if not diff <= bound:  # (also catches NaN)
            raise ValueError(
                f"NumpyPolicy does not reproduce {type(actor).__name__} (max abs difference {diff:.3g} > "
                f"{bound:.3g} on a probe batch): use env.vectorization=sync or async"
            )

    def normalizer(self) -> ObsNormalizer:
        normalizer = ObsNormalizer(self.weights[0][0].shape[0])
        normalizer.load_state_dict(self.normalizer_state)
        return normalizer

    def mean(self, obs_n: np.ndarray) -> np.ndarray:
        """The actor's output ``(n, out)`` (mean action, or logits) for normalised ``obs_n (n, obs_dim)``."""
        # Row by row in a fixed order, not BLAS: a row's action must not depend on its batch.
        return core.mlp_forward(obs_n, self.weights, self.activations)

    def act(self, obs_n: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Sampled actions for one step: ``(n, act_dim) float32``, or ``(n,) int64`` indices when discrete.

        ``noise`` is the step's ``(n, act_dim)`` standard-normal or ``(n, n_actions)`` Gumbel noise.
        """
        out = self.mean(obs_n)
        if self.discrete:
            return np.argmax(out + noise, axis=1).astype(np.int64)
        return (out + self.std.astype(np.float32) * noise).astype(np.float32)


def worker_rollout(
    envs: Any, obs: np.ndarray, policy: NumpyPolicy, noise: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A whole rollout of one worker's envs (runs in the worker process, see ``call_parts``).

    Args:
        envs: the worker's SAME_STEP vector env.
        obs: its current observations ``(n, obs_dim)``.
        policy: the actor and the frozen observation statistics.
        noise: ``(T, n, act_dim)`` standard-normal (or ``(T, n, n_actions)`` Gumbel) action noise.

    Returns:
        Per-step arrays ``(T, n, ...)`` for the buffer and the episode statistics, and the
        observations after the last step.
    """
    t_steps, n, width = noise.shape
    normalize = policy.normalizer()
    obs = np.asarray(obs, dtype=np.float32)
    d = obs.shape[1]
    out: dict[str, np.ndarray] = {
        "obs_raw": np.empty((t_steps, n, d), np.float32),
        "next_obs_raw": np.empty((t_steps, n, d), np.float32),
        "actions": np.empty((t_steps, n), np.int64)
        if policy.discrete
        else np.empty((t_steps, n, width), np.float32),
        "env_rewards": np.empty((t_steps, n), np.float32),
        "terminated": np.empty((t_steps, n), bool),
        "truncated": np.empty((t_steps, n), bool),
        "velocity": np.empty((t_steps, n), np.float64),
        "has_velocity": np.empty((t_steps, n), bool),
        "success": np.empty((t_steps, n), np.float64),
        "has_success": np.empty((t_steps, n), bool),
    }
    for t in range(t_steps):
        action = policy.act(normalize(obs), noise[t])
        next_obs, reward, terminated, truncated, infos = envs.step(action)
        done = np.asarray(terminated, dtype=bool) | np.asarray(truncated, dtype=bool)
        out["obs_raw"][t] = obs
        out["next_obs_raw"][t] = final_observations(next_obs, infos, done)
        out["actions"][t] = action
        out["env_rewards"][t] = reward
        out["terminated"][t] = terminated
        out["truncated"][t] = truncated
        out["velocity"][t], out["has_velocity"][t] = step_info_value(infos, "x_velocity", done)
        out["success"][t], out["has_success"][t] = step_info_value(infos, "is_success", done)
        obs = np.asarray(next_obs, dtype=np.float32)
    return out, obs
