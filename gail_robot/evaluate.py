"""``gail-robot eval``: deterministic evaluation of a run directory, checkpoint or exported policy.

Reports mean/std return, success rate (``info["is_success"]`` at the episode's last step, when
the env provides it), mean episode length and, for walkers, the mean forward velocity
(``info["x_velocity"]`` of the v5 locomotion envs, averaged over each episode's steps).
``--zero-obs`` zeroes raw observation dims before the policy reads them: a dead sensor, or an ablation
of which inputs a trained policy's behaviour depends on (docs/DESIGN.md §8.10).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gail_robot.errors import UserError
from gail_robot.obs_dims import ignored_obs_indices

if TYPE_CHECKING:
    from gail_robot.policy_io import PolicyBundle


@dataclass
class EvalResult:
    """Summary of deterministic evaluation episodes (NaN where a quantity is not reported by the env)."""

    mean_return: float
    std_return: float
    success_rate: float
    mean_length: float
    mean_forward_velocity: float
    episodes: int
    returns: list[float]
    lengths: list[int]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (NaN -> null)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def evaluate_policy(
    policy: PolicyBundle,
    episodes: int,
    *,
    env_id: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    video: str | Path | None = None,
    progress: bool = False,
    zero_obs: np.ndarray | None = None,
) -> EvalResult:
    """Run ``episodes`` deterministic episodes of ``policy`` in one (in-process) env.

    Deterministic means the mean action, or the argmax of the logits for a Discrete action space.

    Args:
        policy: the policy (its ``act`` maps raw observations to env actions).
        episodes: number of episodes (>= 1).
        env_id: env to evaluate in (default: the policy's own).
        env_kwargs: its kwargs (default: the policy's when the env is the policy's own).
        seed: episode ``i`` resets with ``seed + i``.
        video: write an MP4 of all episodes here (rendered headless, ``rgb_array``).
        progress: show a progress bar.
        zero_obs: raw observation dims set to 0 before the policy reads them (None: none).
    """
    import gymnasium as gym

    from gail_robot.envs.make import make_env

    if episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {episodes}")
    env_id = env_id or policy.env_id
    if env_kwargs is None:
        env_kwargs = policy.env_kwargs if env_id == policy.env_id else {}
    env = make_env(env_id, env_kwargs, render_mode="rgb_array" if video else None, normalize_actions=False)
    obs_shape = env.observation_space.shape
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        same_actions = int(space.n) == policy.n_actions
        env_actions = f"Discrete({int(space.n)})"
    else:
        same_actions = not policy.discrete and space.shape == (policy.act_dim,)
        env_actions = f"Box{tuple(space.shape or ())}"
    if obs_shape != (policy.obs_dim,) or not same_actions:
        raise UserError(
            f"policy expects obs ({policy.obs_dim},) / actions {policy.describe_actions()}, "
            f"{env_id} has {obs_shape} / {env_actions}"
        )
    writer = None
    if video is not None:
        import imageio.v2 as imageio

        fps = int(env.metadata.get("render_fps", 30))
        writer = imageio.get_writer(str(video), fps=fps, macro_block_size=1)
    episodes_out: list[Episode] = []
    try:
        from tqdm import tqdm

        for episode in tqdm(range(episodes), desc="eval", unit="ep", disable=not progress):
            episodes_out.append(run_episode(env, policy, seed + episode, writer, zero_obs))
    finally:
        if writer is not None:
            writer.close()
        env.close()
    return summarize(episodes_out)


@dataclass
class Episode:
    """One deterministic episode: return, length, final ``is_success``, mean ``x_velocity`` (None: absent)."""

    ret: float
    length: int
    success: float | None
    velocity: float | None


def run_episode(
    env: Any, policy: PolicyBundle, seed: int, writer: Any = None, zero_obs: np.ndarray | None = None
) -> Episode:
    """One deterministic episode of ``policy`` in ``env`` (reset with ``seed``), optionally recorded, with the
    observation dims ``zero_obs`` set to 0 before the policy reads them."""
    obs, _ = env.reset(seed=seed)
    total, length, velocity_sum, has_velocity = 0.0, 0, 0.0, False
    info: dict[str, Any] = {}
    while True:
        if writer is not None:
            writer.append_data(np.asarray(env.render()))
        seen = np.array(obs, dtype=np.float32)  # a copy: the env's own array stays as it is
        if zero_obs is not None:
            seen[zero_obs] = 0.0
        action = policy.act(seen)
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        length += 1
        if "x_velocity" in info:
            velocity_sum += float(info["x_velocity"])
            has_velocity = True
        if terminated or truncated:
            break
    success = float(info["is_success"]) if "is_success" in info else None
    return Episode(total, length, success, velocity_sum / length if has_velocity else None)


def summarize(episodes: list[Episode]) -> EvalResult:
    """The :class:`EvalResult` of ``episodes`` (in order)."""
    returns = [e.ret for e in episodes]
    successes = [e.success for e in episodes if e.success is not None]
    velocities = [e.velocity for e in episodes if e.velocity is not None]
    nan = float("nan")
    return EvalResult(
        mean_return=float(np.mean(returns)),
        std_return=float(np.std(returns)),
        success_rate=float(np.mean(successes)) if successes else nan,
        mean_length=float(np.mean([e.length for e in episodes])),
        mean_forward_velocity=float(np.mean(velocities)) if velocities else nan,
        episodes=len(episodes),
        returns=returns,
        lengths=[e.length for e in episodes],
    )


def evaluate_in_workers(envs: Any, policy: PolicyBundle, episodes: int, seed: int = 0) -> EvalResult:
    """:func:`evaluate_policy` with the episodes spread over a vector env's workers (``call_parts``).

    Episode ``i`` still resets with ``seed + i`` in a fresh env of its own, so the result equals
    :func:`evaluate_policy`'s. Used by ``env.vectorization: ray`` (docs/DESIGN.md §9).
    """
    if episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {episodes}")
    chunks = np.array_split(np.arange(seed, seed + episodes), len(envs.parts))
    results = envs.call_parts(_evaluate_part, [(policy, [int(s) for s in chunk]) for chunk in chunks])
    return summarize([episode for part in results for episode in part])


def _evaluate_part(
    envs: Any, obs: np.ndarray, policy: PolicyBundle, seeds: list[int]
) -> tuple[list[Episode], np.ndarray]:
    """On a worker (``call_parts``): episodes ``seeds`` in a fresh env; the rollout envs are untouched."""
    del envs
    if not seeds:
        return [], obs
    import torch

    from gail_robot.envs.make import make_env

    torch.set_num_threads(1)  # one MLP row per step: threads only add overhead on a busy worker
    env = make_env(policy.env_id, policy.env_kwargs, normalize_actions=False)
    try:
        return [run_episode(env, policy, s) for s in seeds], obs
    finally:
        env.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", help="run directory, training checkpoint or exported policy.pt")
    parser.add_argument("--env", default=None, help="env id (default: the policy's own env)")
    parser.add_argument("--episodes", type=int, default=10, help="number of episodes (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="episode i resets with seed + i (default 0)")
    parser.add_argument("--video", default=None, metavar="FILE.mp4", help="render the episodes to a video")
    parser.add_argument(
        "--zero-obs",
        default=None,
        metavar="DIMS",
        help='observation dims set to 0 before the policy reads them: "27:105", "0,5:8" (a dead sensor)',
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def main(args: argparse.Namespace) -> int:
    from gail_robot.policy_io import load_policy

    policy = load_policy(args.policy)
    zero_obs = None
    if args.zero_obs is not None:
        zero_obs = ignored_obs_indices(args.zero_obs.split(","), policy.obs_dim, "--zero-obs")
    if args.video is not None and not Path(args.video).parent.exists():
        raise UserError(f"video directory does not exist: {Path(args.video).parent}")
    result = evaluate_policy(
        policy,
        args.episodes,
        env_id=args.env,
        seed=args.seed,
        video=args.video,
        progress=not args.json,
        zero_obs=zero_obs,
    )
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    env_id = args.env or policy.env_id
    print(f"{env_id}: {result.episodes} episodes")
    print(f"  return          {result.mean_return:.2f} +- {result.std_return:.2f}")
    shortest = min(result.lengths)
    print(
        f"  episode length  {result.mean_length:.1f}"
        + (f" (shortest {shortest})" if shortest < max(result.lengths) else "")
    )
    if zero_obs is not None:
        print(f"  zeroed obs dims {len(zero_obs)} of {policy.obs_dim}")
    if not math.isnan(result.success_rate):
        print(f"  success rate    {result.success_rate:.2%}")
    if not math.isnan(result.mean_forward_velocity):
        print(f"  forward velocity {result.mean_forward_velocity:.3f} m/s")
    if args.video:
        print(f"  video           {args.video}")
    return 0
