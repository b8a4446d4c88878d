"""``--verify``: the exported file, reloaded in a fresh process, must act as the Python policy does.

The fresh interpreter (``python -m gail_robot.export --worker REQUEST``, see ``__main__.py``) loads
the file with :func:`~gail_robot.export.formats.load_exported`, so nothing from the training code
can leak into what is compared. It is compared with :meth:`PolicyBundle.act` open loop, on env
observations visited with action noise and on observations of the demo file, and closed loop, on one
seeded episode run by each policy in its own env (docs/DESIGN.md §5).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gail_robot.envs.make import make_env
from gail_robot.errors import UserError
from gail_robot.export.formats import load_exported
from gail_robot.policy_io import PolicyBundle

# Tolerances of --verify: open-loop batch (docs/DESIGN.md §5) and closed loop (float32 round-off in the
# policy can be amplified by contact dynamics over a long rollout, so the loop is compared over its
# first `CLOSED_LOOP_COMPARE_STEPS` steps, where that amplification is still negligible).
VERIFY_ATOL = 1e-5
CLOSED_LOOP_ATOL = 1e-4
CLOSED_LOOP_COMPARE_STEPS = 100


def rollout(
    policy: Callable[[np.ndarray], np.ndarray], env_id: str, env_kwargs: dict[str, Any], seed: int, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """One deterministic closed-loop episode: actions ``(T, act_dim) float32`` and rewards ``(T,)``.

    ``policy`` maps a batch ``(1, obs_dim)`` to ``(1, act_dim)`` in env units; the episode ends on
    termination, truncation or after ``steps`` steps.
    """
    env = make_env(env_id, env_kwargs, normalize_actions=False)
    actions, rewards = [], []
    try:
        obs, _ = env.reset(seed=seed)
        for _ in range(steps):
            # (an int64 index for a Discrete action space: the env takes it as it is)
            action = np.asarray(policy(np.asarray(obs, dtype=np.float32)[None]))[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            actions.append(action)
            rewards.append(float(reward))
            if terminated or truncated:
                break
    finally:
        env.close()
    return np.asarray(actions, dtype=np.float32), np.asarray(rewards, dtype=np.float64)


def collect_env_observations(bundle: PolicyBundle, n: int, seed: int = 0, noise: float = 0.3) -> np.ndarray:
    """``(n, obs_dim) float32`` observations visited by the policy with uniform action noise.

    The noise (a fraction of the action range) spreads the states beyond the policy's own narrow
    distribution, which is what a deployment check should cover.
    """
    env = make_env(bundle.env_id, dict(bundle.env_kwargs), normalize_actions=False)
    rng = np.random.default_rng(seed)
    low, high = np.asarray(bundle.action_low), np.asarray(bundle.action_high)
    out: list[np.ndarray] = []
    try:
        obs, _ = env.reset(seed=seed)
        episode = 0
        while len(out) < n:
            out.append(np.asarray(obs, dtype=np.float32))
            action = bundle.act(np.asarray(obs, dtype=np.float32))
            if bundle.discrete:  # the same spread for a Discrete policy: a random action with p = noise
                if rng.uniform() < noise:
                    action = np.asarray(rng.integers(bundle.n_actions), dtype=np.int64)
            else:
                action = np.clip(
                    action + noise * (high - low) / 2 * rng.uniform(-1, 1, size=low.shape), low, high
                ).astype(np.float32)
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                episode += 1
                obs, _ = env.reset(seed=seed + episode)
    finally:
        env.close()
    return np.stack(out)


def demo_observations(demos: str | Path, n: int, env_id: str) -> np.ndarray:
    """Up to ``n`` observations ``(m, obs_dim) float32`` spread evenly over the demo file."""
    from gail_robot.data import DemoDataset

    dataset = DemoDataset(demos)
    if dataset.env_id != env_id:
        raise UserError(f"{demos} holds demos of {dataset.env_id}, the policy is for {env_id}")
    obs = dataset.transitions().obs
    if len(obs) > n:
        obs = obs[np.linspace(0, len(obs) - 1, n).round().astype(int)]
    return np.asarray(obs, dtype=np.float32)


def _demos_from_meta(meta: dict[str, Any]) -> str | None:
    """The training run's demo file (``demos`` in its config.yaml), when it exists on this machine."""

    def find(tree: Any) -> list[str]:
        if isinstance(tree, dict):
            found = [v for k, v in tree.items() if k == "demos" and isinstance(v, str)]
            return found + [f for v in tree.values() for f in find(v)]
        return []

    candidates = find(meta)
    run_dir = meta.get("run_dir")
    config = Path(run_dir) / "config.yaml" if isinstance(run_dir, str) else None
    if config is not None and config.is_file():
        import yaml

        with contextlib.suppress(yaml.YAMLError, OSError):
            candidates += find(yaml.safe_load(config.read_text()))
    for value in candidates:
        for path in (Path(value), Path(str(run_dir)) / value):
            if path.is_file():
                return str(path)
    return None


def _fresh_process(request: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run :func:`worker` in a new interpreter and return its JSON result."""
    request_file = workdir / "request.json"
    request_file.write_text(json.dumps(request))
    proc = subprocess.run(
        [sys.executable, "-m", "gail_robot.export", "--worker", str(request_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UserError(f"verification process failed to run the exported policy: {last}")
    return dict(json.loads((workdir / "result.json").read_text()))


def verify_export(
    bundle: PolicyBundle,
    path: str | Path,
    demos: str | Path | None = None,
    n_obs: int = 1000,
    rollout_steps: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare the exported file, reloaded in a fresh process, with the Python policy.

    Open loop: ``n_obs`` env observations plus up to ``n_obs`` demo observations, max abs action
    difference <= :data:`VERIFY_ATOL`. Closed loop: the same seeded episode run by each policy in its
    own env; actions must agree within :data:`CLOSED_LOOP_ATOL` over the first
    :data:`CLOSED_LOOP_COMPARE_STEPS` steps (the whole episode is reported).

    Returns:
        A report dict with ``ok`` (bool) and the measured differences.
    """
    env_obs = collect_env_observations(bundle, n_obs, seed=seed)
    demo_file = str(demos) if demos is not None else _demos_from_meta(dict(bundle.meta))
    demo_obs = (
        demo_observations(demo_file, n_obs, bundle.env_id)
        if demo_file
        else np.zeros((0, env_obs.shape[1]), np.float32)
    )
    obs = np.concatenate([env_obs, demo_obs]).astype(np.float32)
    expected = np.asarray(bundle.act(obs), dtype=np.float32)
    py_actions, py_rewards = rollout(bundle.act, bundle.env_id, dict(bundle.env_kwargs), seed, rollout_steps)

    with tempfile.TemporaryDirectory(prefix="gail-robot-verify-") as tmp:
        workdir = Path(tmp)
        np.save(workdir / "obs.npy", obs)
        result = _fresh_process(
            {"policy": str(Path(path).resolve()), "seed": seed, "steps": rollout_steps, "workdir": tmp},
            workdir,
        )
        got = np.load(workdir / "actions.npy")
        ts_actions = np.load(workdir / "rollout_actions.npy")
        ts_rewards = np.load(workdir / "rollout_rewards.npy")

    open_diff = float(np.max(np.abs(got - expected))) if len(obs) else 0.0
    n_cmp = min(len(py_actions), len(ts_actions), CLOSED_LOOP_COMPARE_STEPS)
    loop_diff_head = float(np.max(np.abs(py_actions[:n_cmp] - ts_actions[:n_cmp]))) if n_cmp else 0.0
    n_all = min(len(py_actions), len(ts_actions))
    loop_diff_all = float(np.max(np.abs(py_actions[:n_all] - ts_actions[:n_all]))) if n_all else 0.0
    report = {
        "n_env_obs": len(env_obs),
        "n_demo_obs": len(demo_obs),
        "demos": demo_file,
        "open_loop_max_abs_diff": open_diff,
        "closed_loop_steps_python": len(py_actions),
        "closed_loop_steps_exported": len(ts_actions),
        "closed_loop_max_abs_diff_head": loop_diff_head,
        "closed_loop_max_abs_diff_all": loop_diff_all,
        "return_python": float(py_rewards.sum()),
        "return_exported": float(ts_rewards.sum()),
        "fresh_process_torch": result["torch"],
    }
    report["ok"] = bool(
        open_diff <= VERIFY_ATOL
        and n_cmp == min(CLOSED_LOOP_COMPARE_STEPS, len(py_actions))
        and loop_diff_head <= CLOSED_LOOP_ATOL
    )
    return report


def worker(request_file: str) -> int:
    """The fresh process of --verify: loads the exported file with torch only and runs it."""
    request = json.loads(Path(request_file).read_text())
    workdir = Path(request["workdir"])
    loaded = load_exported(request["policy"])
    obs = np.load(workdir / "obs.npy")
    np.save(workdir / "actions.npy", loaded.fn(obs).astype(np.float32))
    meta = loaded.meta
    actions, rewards = rollout(
        loaded.fn, meta["env_id"], dict(meta["env_kwargs"]), int(request["seed"]), int(request["steps"])
    )
    np.save(workdir / "rollout_actions.npy", actions)
    np.save(workdir / "rollout_rewards.npy", rewards)
    (workdir / "result.json").write_text(json.dumps({"torch": torch.__version__}))
    return 0
