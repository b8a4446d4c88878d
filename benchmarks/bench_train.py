"""End-to-end GAIL-PPO throughput on Hopper-v5, beside the raw env stepping rate, in one run.

Measures (env steps per second, wall clock, this machine):

1. raw env stepping with random actions: one plain env, and the vector env (N envs; sync,
   batched and async) exactly as training builds it (SAME_STEP autoreset, normalised actions);
2. the full GAIL-PPO loop with the shipped Hopper-v5 config (rollout, discriminator update,
   reward relabelling, GAE, PPO update, logging), with each vectorisation and 1 or 2 learner
   threads.

It prints one table and the ratio of each rate to the fastest raw vector-env rate (the ceiling:
a training loop can never step envs faster than the envs step themselves). The demos are a few
random-policy episodes recorded through gail_robot.data: throughput does not depend on demo quality.

With ``--peer`` it also measures the `imitation` library's GAIL (Stable-Baselines3 PPO) at matched
settings (rollout 8 x 512, 10 epochs, minibatch 256, 64-64 tanh actor/critic, 100-100
discriminator, 256 + 256 samples per discriminator step, 32 discriminator steps per round) in
its own virtual environment (imitation 1.0.1, SB3 2.2.1, Gymnasium 0.29.1, mujoco 3.1.6, torch
2.13.0), which it creates on first use WITHOUT the system site packages and installs with pip (see
``PEER_REQUIREMENTS``); it is reused while its requirement set is unchanged and it still works.
That Gymnasium has Hopper-v4, not v5, so both sides run Hopper-v4 for that comparison.

Usage:
    python benchmarks/bench_train.py [--steps 32768] [--num-envs 8] [--peer] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

ENV_ID = "Hopper-v5"


def raw_single_env(steps: int) -> float:
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(steps, *env.action_space.shape)).astype(np.float32)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def raw_vector_env(steps: int, num_envs: int, mode: str) -> float:
    from gail_robot.envs.vector import make_vector_env

    envs = make_vector_env(ENV_ID, num_envs, {}, mode=mode)  # type: ignore[arg-type]
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    n_calls = max(1, steps // num_envs)
    actions = rng.uniform(-1, 1, size=(n_calls, num_envs, 3)).astype(np.float32)
    envs.step(actions[0])  # warm-up: workers fully started
    start = time.perf_counter()
    for action in actions:
        envs.step(action)
    rate = n_calls * num_envs / (time.perf_counter() - start)
    envs.close()
    return rate


def record_random_demos(path: Path, episodes: int = 5, env_id: str = ENV_ID) -> None:
    from gail_robot.data import DemoWriter
    from gail_robot.envs.physics import get_physics_state

    env = gym.make(env_id)
    rng = np.random.default_rng(0)
    with DemoWriter(path, env, mode="w", durable=False) as writer:
        for ep in range(episodes):
            obs, _ = env.reset(seed=ep)
            writer.start_episode(seed=ep, source="policy:random")
            while True:
                state = get_physics_state(env)
                action = rng.uniform(-1, 1, size=3).astype(np.float32)
                next_obs, reward, terminated, truncated, _ = env.step(action)
                writer.add_step(obs, action, float(reward), next_obs, terminated, truncated, state)
                obs = next_obs
                if terminated or truncated:
                    break
            writer.end_episode(success=False, final_state=get_physics_state(env))
    env.close()


def train_rate(
    demos: Path, steps: int, num_envs: int, mode: str, threads: int, workdir: Path, env_id: str = ENV_ID
) -> dict[str, float]:
    """Steady-state GAIL-PPO env steps/s (first round excluded: worker start-up and lazy init)."""
    from gail_robot.algos.config import config_from_dict, load_yaml, shipped_config_path
    from gail_robot.algos.trainer import OnPolicyTrainer

    path = shipped_config_path(ENV_ID)
    assert path is not None
    data = load_yaml(path)
    data["env"].update(id=env_id, num_envs=num_envs, vectorization=mode)
    data["gail"]["demos"] = str(demos)
    data["run"].update(
        total_steps=steps, eval_interval=0, eval_episodes=0, progress=False, torch_threads=threads
    )
    config = config_from_dict(data)
    run_dir = workdir / f"run_{env_id}_{mode}_{threads}"
    start = time.perf_counter()
    OnPolicyTrainer(config, run_dir).train()
    total_wall = time.perf_counter() - start
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "steps_per_s" in r]
    steady = rows[1:] if len(rows) > 1 else rows
    per_round = config.rollout.n_steps * num_envs
    seconds = sum(per_round / r["steps_per_s"] for r in steady)
    collect = sum(per_round / r["collect_steps_per_s"] for r in steady)
    return {
        "steps_per_s": len(steady) * per_round / seconds,
        "collect_share": collect / seconds,
        "end_to_end_steps_per_s": rows[-1]["env_steps"] / total_wall,
    }


# The peer's own environment, installed by pip into a venv WITHOUT the system site packages (so a
# fresh machine works without anything preinstalled). torch goes first, pinned, and is pinned again
# as a constraint for the rest so no resolver step ever replaces it. Versions that work together:
# imitation 1.0.1 wants SB3 ~2.2.1 and Gymnasium ~0.29; Gymnasium 0.29 needs NumPy < 2 (np.bool8)
# and has Hopper-v4 on the mujoco bindings; mujoco 3.1.6 is the last release that still ships
# NumPy 1 wheels for every Python we support.
PEER_TORCH = "torch==2.13.0"
PEER_REQUIREMENTS = [
    "imitation==1.0.1",
    "stable-baselines3==2.2.1",
    "gymnasium[mujoco]==0.29.1",
    "mujoco==3.1.6",
    "numpy==1.26.4",
]
# What peer_imitation_gail.py imports, and one env step of the peer's Hopper-v4: the venv works.
PEER_SMOKE = (
    "import gymnasium as gym, imitation, mujoco, numpy, stable_baselines3, torch\n"
    "from imitation.algorithms.adversarial.gail import GAIL\n"
    "env = gym.make('Hopper-v4'); env.reset(seed=0); env.step(env.action_space.sample()); env.close()\n"
)


def _peer_venv_works(python: Path, marker: Path, requirements: str) -> bool:
    if not (python.exists() and marker.exists() and marker.read_text() == requirements):
        return False
    smoke = subprocess.run([str(python), "-c", PEER_SMOKE], capture_output=True, text=True)
    if smoke.returncode != 0:
        last = (smoke.stderr.strip().splitlines() or ["?"])[-1]
        print(f"# the peer venv in {python.parent.parent} is broken ({last}); rebuilding it", flush=True)
    return smoke.returncode == 0


def ensure_peer_venv(venv: Path) -> Path:
    """Create (or reuse) the peer's virtual environment; returns its python.

    The venv is reused when its marker file lists exactly the current requirement set and the
    smoke test (imports + one Hopper-v4 step) passes; otherwise it is rebuilt from scratch.

    Raises:
        SystemExit: ``venv`` is a folder that is not a virtual environment (never cleared), or an
            install step failed (the message names the step).
    """
    python = venv / "bin" / "python"
    marker = venv / ".gail_robot_peer_requirements"
    requirements = "\n".join([PEER_TORCH, *PEER_REQUIREMENTS]) + "\n"
    if _peer_venv_works(python, marker, requirements):
        return python
    if venv.exists() and any(venv.iterdir()) and not (venv / "pyvenv.cfg").exists():
        raise SystemExit(f"--peer-venv {venv} exists and is not a virtual environment; choose another folder")
    print(f"# creating the peer venv in {venv}: {', '.join([PEER_TORCH, *PEER_REQUIREMENTS])}", flush=True)
    marker.unlink(missing_ok=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    # No --system-site-packages: the peer must not depend on what the base interpreter happens to have.
    steps = [
        ("create the venv", [sys.executable, "-m", "venv", "--clear", str(venv)]),
        ("install torch", [str(python), "-m", "pip", "install", "-q", PEER_TORCH]),
    ]
    for what, cmd in steps:
        _run_step(what, cmd)
    constraints = venv / "constraints.txt"
    constraints.write_text(PEER_TORCH + "\n")
    _run_step(
        "install the peer",
        [str(python), "-m", "pip", "install", "-q", "-c", str(constraints), *PEER_REQUIREMENTS],
    )
    smoke = subprocess.run([str(python), "-c", PEER_SMOKE], capture_output=True, text=True)
    if smoke.returncode != 0:
        last = (smoke.stderr.strip().splitlines() or ["?"])[-1]
        raise SystemExit(f"the peer venv in {venv} was installed but does not work: {last}")
    marker.write_text(requirements)
    return python


def _run_step(what: str, cmd: list[str]) -> None:
    result = subprocess.run(cmd)
    if result.returncode != 0:
        raise SystemExit(f"peer venv: could not {what} (exit {result.returncode}): {' '.join(cmd)}")


def peer_rate(python: Path, steps: int, num_envs: int, parallel: bool) -> float:
    script = Path(__file__).with_name("peer_imitation_gail.py")
    cmd = [
        str(python),
        str(script),
        "--steps",
        str(steps),
        "--num-envs",
        str(num_envs),
        "--disc-updates",
        "32",
    ]
    if parallel:
        cmd.append("--parallel")
    # The peer prints its own logs; its last stdout line is the JSON result.
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=tempfile.gettempdir()).stdout
    return float(json.loads(out.strip().splitlines()[-1])["steps_per_s"])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=32768, help="env steps per training measurement")
    parser.add_argument("--raw-steps", type=int, default=20000, help="env steps per raw stepping measurement")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    parser.add_argument("--peer", action="store_true", help="also measure imitation's GAIL (Hopper-v4)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats of the peer comparison")
    parser.add_argument(
        "--peer-venv",
        type=Path,
        default=Path.home() / ".cache" / "gail_robot" / "bench-imitation-venv",
        help="where the peer's virtual environment lives",
    )
    args = parser.parse_args()

    import torch

    results: dict[str, float] = {}
    print(f"# {ENV_ID}, {os.cpu_count()} CPUs, torch {torch.__version__}, python {sys.version.split()[0]}")
    results["raw_single_env"] = raw_single_env(args.raw_steps)
    results["raw_vector_sync"] = raw_vector_env(args.raw_steps, args.num_envs, "sync")
    results["raw_vector_async"] = raw_vector_env(args.raw_steps, args.num_envs, "async")
    results["raw_vector_batched"] = raw_vector_env(args.raw_steps, args.num_envs, "batched")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        demos = work / "random_demos.hdf5"
        record_random_demos(demos)
        details = {}
        for mode, threads in (("batched", 1), ("async", 1), ("sync", 1), ("batched", 2)):
            key = f"gail_ppo_{mode}_threads{threads}"
            details[key] = train_rate(demos, args.steps, args.num_envs, mode, threads, work)
            results[key] = details[key]["steps_per_s"]
        if args.peer:
            python = ensure_peer_venv(args.peer_venv)
            demos_v4 = work / "random_demos_v4.hdf5"
            record_random_demos(demos_v4, env_id="Hopper-v4")
            # Interleaved and repeated, best of each kept: on a shared machine the load of other
            # jobs changes between measurements; the best run is the least disturbed one.
            for rep in range(args.repeats):
                for mode in ("sync", "batched"):
                    ours = train_rate(
                        demos_v4, args.steps, args.num_envs, mode, 1, work / f"rep{rep}", env_id="Hopper-v4"
                    )
                    key = f"v4_gail_robot_{mode}"
                    results[key] = max(results.get(key, 0.0), ours["steps_per_s"])
                for parallel in (False, True):
                    key = f"v4_imitation_{'subproc' if parallel else 'dummy'}"
                    theirs = peer_rate(python, args.steps, args.num_envs, parallel)
                    results[key] = max(results.get(key, 0.0), theirs)
    ceiling = max(results[k] for k in ("raw_vector_sync", "raw_vector_async", "raw_vector_batched"))
    print(f"{'measurement':<30} {'env steps/s':>12} {'vs best raw':>13}  note")
    for key, value in results.items():
        note = ""
        if key in details:
            d = details[key]
            share, overall = d["collect_share"], d["end_to_end_steps_per_s"]
            note = f"collect {share:.0%} of round; incl. start-up {overall:.0f}/s"
        print(f"{key:<30} {value:>12.0f} {value / ceiling:>12.2f}x  {note}")
    if args.peer:
        ours_best = max(results["v4_gail_robot_sync"], results["v4_gail_robot_batched"])
        theirs_best = max(results["v4_imitation_dummy"], results["v4_imitation_subproc"])
        print("\n# Hopper-v4, matched settings: gail_robot vs imitation 1.0.1 (SB3 2.2.1), env steps/s")
        sync_rate, batched_rate = results["v4_gail_robot_sync"], results["v4_gail_robot_batched"]
        print(f"gail_robot sync {sync_rate:.0f}, batched {batched_rate:.0f}")
        print(
            f"imitation  DummyVecEnv {results['v4_imitation_dummy']:.0f}, "
            f"SubprocVecEnv {results['v4_imitation_subproc']:.0f}"
        )
        print(f"best vs best: {ours_best:.0f} / {theirs_best:.0f} = {ours_best / theirs_best:.2f}x")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
