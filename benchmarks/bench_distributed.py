"""GAIL-PPO on Hopper-v5 with Ray rollout workers vs the batched worker processes, in one run.

Measures on this machine, alternating the two modes ``--repeats`` times (same config, seed and
number of workers, so both do the same work bit for bit):

1. env steps per second of the whole training loop, ``ray`` vs ``batched`` (the ratio is the
   engine's overhead; target >= 0.85);
2. where a Ray round goes: broadcast (policy into the object store), collect (until the slowest
   worker finishes its rollout), transfer (results into the driver), learn (discriminator, GAE,
   PPO: the rest of the round), and the bytes moved each way.

From those measured costs it projects rounds on clusters of 4 / 16 / 64 nodes (``--cores`` cores
each, one worker per core, ``--envs-per-worker`` envs each, the shipped rollout length), under
stated assumptions: collect time per worker stays what it is here (each worker does the same
work), transfer time grows with bytes at ``--bandwidth-gbit``, the learner (one process, here)
costs the same per env step, and broadcast costs one put per round. It prints where the learner
becomes the bottleneck.

Usage:
    python benchmarks/bench_distributed.py [--steps 65536] [--repeats 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEMOS = REPO / "datasets" / "experts" / "Hopper-v5" / "demos.hdf5"


def train_once(mode: str, steps: int, workers: int, run_dir: Path) -> list[dict[str, Any]]:
    """One GAIL-PPO run of the shipped Hopper-v5 config; its metrics rows."""
    from gail_robot.algos.config import apply_overrides, config_from_dict, load_yaml, shipped_config_path
    from gail_robot.algos.trainer import OnPolicyTrainer

    path = shipped_config_path("Hopper-v5")
    assert path is not None
    data = load_yaml(path)
    data = apply_overrides(
        data,
        [
            f"env.vectorization={mode}",
            f"env.num_workers={workers}",
            f"gail.demos={DEMOS}",
            f"run.total_steps={steps}",
            "run.eval_interval=0",
            "run.eval_episodes=0",
            "run.progress=false",
            "run.tensorboard=false",
            f"run.checkpoint_interval={10**9}",
        ],
    )
    OnPolicyTrainer(config_from_dict(data), run_dir).train()
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def summarize(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Steady-state rates of one run (the first round, with its warm-up, is left out)."""
    everything = [r for r in rows if "steps_per_s" in r]
    steps = everything[1]["env_steps"] - everything[0]["env_steps"]
    rounds = everything[1:]
    round_s = [steps / r["steps_per_s"] for r in rounds]
    out = {
        "steps_per_round": float(steps),
        "steps_per_s": steps * len(rounds) / sum(round_s),
        "round_s": statistics.median(round_s),
        "collect_s": statistics.median(steps / r["collect_steps_per_s"] for r in rounds),
    }
    if "ray_collect_s" in rounds[0]:
        for key in ("broadcast_s", "collect_s", "transfer_s", "bytes_out", "bytes_in"):
            out[f"ray_{key}"] = statistics.median(r[f"ray_{key}"] for r in rounds)
    out["learn_s"] = out["round_s"] - out["collect_s"]
    return out


def project(
    measured: dict[str, float], workers_here: int, args: argparse.Namespace
) -> list[dict[str, float]]:
    """Round time and throughput on bigger clusters from this machine's measured costs."""
    steps_here = measured["steps_per_round"]
    worker_s = measured["ray_collect_s"]  # each worker's rollout time, all in parallel here
    per_worker_steps = steps_here / workers_here
    learn_per_step = measured["learn_s"] / steps_here
    bytes_in_per_step = measured["ray_bytes_in"] / steps_here
    bandwidth = args.bandwidth_gbit * 1e9 / 8
    rows = []
    for nodes in (1, 4, 16, 64):
        workers = nodes * args.cores
        steps = workers * args.envs_per_worker * args.n_steps
        collect = worker_s * (args.envs_per_worker * args.n_steps) / per_worker_steps
        transfer = steps * bytes_in_per_step / bandwidth
        learn = steps * learn_per_step
        broadcast = measured["ray_broadcast_s"]
        total = collect + transfer + learn + broadcast
        rows.append(
            {
                "nodes": nodes,
                "workers": workers,
                "steps_per_round": steps,
                "collect_s": collect,
                "transfer_s": transfer,
                "transfer_MB": steps * bytes_in_per_step / 1e6,
                "learn_s": learn,
                "round_s": total,
                "steps_per_s": steps / total,
                "learner_share": learn / total,
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=65536, help="env steps per run (16 rounds of 4096)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per mode, alternating")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="workers in both modes")
    parser.add_argument("--cores", type=int, default=16, help="cores per node in the projection")
    parser.add_argument("--envs-per-worker", type=int, default=4, help="envs per worker in the projection")
    parser.add_argument("--n-steps", type=int, default=512, help="rollout length in the projection")
    parser.add_argument("--bandwidth-gbit", type=float, default=10.0, help="driver link in the projection")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    from gail_robot.cluster import connect

    cluster = connect(num_cpus=args.workers)
    print(
        f"Ray: {cluster.nodes} node(s), {cluster.cpus:g} CPUs; {args.workers} workers in both modes",
        flush=True,
    )
    results: dict[str, list[dict[str, float]]] = {"batched": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for mode in ("batched", "ray"):
                rows = train_once(mode, args.steps, args.workers, Path(tmp) / f"{mode}{repeat}")
                results[mode].append(summarize(rows))
                print(
                    f"  {mode:8s} run {repeat + 1}: {results[mode][-1]['steps_per_s']:.0f} steps/s",
                    flush=True,
                )

    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    ratio = median("ray", "steps_per_s") / median("batched", "steps_per_s")
    print(f"\nGAIL-PPO Hopper-v5, {args.steps} steps per run, median of {args.repeats}:")
    for mode in ("batched", "ray"):
        print(
            f"  {mode:8s} {median(mode, 'steps_per_s'):7.0f} env steps/s  "
            f"(round {median(mode, 'round_s'):.3f} s: collect {median(mode, 'collect_s'):.3f} s, "
            f"learn {median(mode, 'learn_s'):.3f} s)"
        )
    print(f"  ray / batched = {ratio:.3f}  (target >= 0.85)")
    ray = {k: median("ray", k) for k in results["ray"][0]}
    print(
        f"\nRay round ({ray['steps_per_round']:.0f} env steps): "
        f"broadcast {ray['ray_broadcast_s'] * 1e3:.1f} ms, "
        f"collect {ray['ray_collect_s'] * 1e3:.1f} ms, transfer {ray['ray_transfer_s'] * 1e3:.1f} ms, "
        f"learn {ray['learn_s'] * 1e3:.1f} ms; bytes out {ray['ray_bytes_out'] / 1e3:.1f} kB, "
        f"in {ray['ray_bytes_in'] / 1e6:.2f} MB"
    )
    projection = project(ray, args.workers, args)
    print(
        f"\nProjection ({args.cores} cores/node, 1 worker per core, {args.envs_per_worker} envs x "
        f"{args.n_steps} steps per worker, {args.bandwidth_gbit:g} Gbit/s to the driver):"
    )
    print("  nodes  workers  steps/round  collect_s  transfer_s (MB)  learn_s  round_s  steps/s  learner")
    for p in projection:
        print(
            f"  {p['nodes']:5d}  {p['workers']:7d}  {p['steps_per_round']:11d}  {p['collect_s']:9.2f}  "
            f"{p['transfer_s']:6.2f} ({p['transfer_MB']:6.0f})  {p['learn_s']:7.2f}  {p['round_s']:7.2f}  "
            f"{p['steps_per_s']:7.0f}  {p['learner_share']:6.0%}"
        )
    per_worker_s = ray["ray_collect_s"] / (ray["steps_per_round"] / args.workers)
    learn_per_step = ray["learn_s"] / ray["steps_per_round"]
    print(
        f"  the learner takes longer than a worker's rollout beyond {per_worker_s / learn_per_step:.0f} "
        "workers (learner time grows with the round's steps; a worker's does not)"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"runs": results, "ray_over_batched": ratio, "projection": projection}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
