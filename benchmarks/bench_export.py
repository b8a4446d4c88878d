"""Per-action latency at batch 1: eager Python policy vs TorchScript from Python vs the C++ controller.

All three run in the same invocation on the same policy (a 2x256 tanh MLP for Hopper-v5 by default,
or ``--policy RUN_DIR|CHECKPOINT``), single-threaded, after a warm-up, and the table reports ratios
against the C++ controller measured in this run. The C++ numbers come from the controller's own JSON
report (time around ``forward`` in the closed loop, with MuJoCo stepping in between calls).

    python benchmarks/bench_export.py [--policy RUN_DIR] [--calls 5000] [--pt2] [--onnx] [--json]

Target (issue 6): C++ median under 25 us for a 2x256 MLP on the development machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gail_robot import controller, export
from gail_robot.policy_io import PolicyBundle, load_policy, save_checkpoint

TARGET_CPP_P50_US = 25.0


def random_policy(tmp: Path, env_id: str, hidden: list[int]) -> PolicyBundle:
    """A randomly initialised policy of the training code's own actor class (weights do not matter)."""
    import gymnasium as gym

    from gail_robot.nets import GaussianActor, NetConfig

    env = gym.make(env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    torch.manual_seed(0)
    actor = GaussianActor(obs_dim, act_dim, NetConfig(hidden, "tanh"))
    path = save_checkpoint(
        tmp / "final.pt",
        {
            "actor_spec": actor.spec(),
            "actor": actor.state_dict(),
            "obs_norm": {"mean": np.zeros(obs_dim), "var": np.ones(obs_dim), "clip": 10.0},
            "action_low": env.action_space.low,
            "action_high": env.action_space.high,
            "env_id": env_id,
            "env_kwargs": {"terminate_when_unhealthy": False},
            "meta": {"algo": "benchmark"},
        },
    )
    env.close()
    return load_policy(path)


def time_calls(fn: Callable[[], Any], calls: int, warmup: int) -> np.ndarray:
    """Microseconds per call ``(calls,) float64``."""
    for _ in range(warmup):
        fn()
    out = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter_ns()
        fn()
        out[i] = (time.perf_counter_ns() - t0) / 1e3
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default=None, help="run dir or checkpoint (default: random 2x256 Hopper)")
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--build-dir", default=None, help="controller build dir (built if missing)")
    parser.add_argument(
        "--pt2", action="store_true", help="also time the AOTInductor package (compiles ~30 s)"
    )
    parser.add_argument("--onnx", action="store_true", help="also time ONNX Runtime (needs onnxruntime)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    # The controller runs one intra-op and one inter-op thread; give Python the same.
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp_name:
        tmp = Path(tmp_name)
        bundle = load_policy(args.policy) if args.policy else random_policy(tmp, args.env, args.hidden)
        ts_path = tmp / "policy.pt"
        meta = export.export_policy(bundle, ts_path)
        obs = np.asarray(export.collect_env_observations(bundle, 1, seed=0)[0], dtype=np.float32)
        obs_t = torch.from_numpy(obs[None].copy())

        rows: list[tuple[str, np.ndarray]] = []
        eager = export.build_module(bundle)
        with torch.inference_mode():
            rows.append(
                (
                    "Python: PolicyBundle.act (numpy in/out)",
                    time_calls(lambda: bundle.act(obs), args.calls, args.warmup),
                )
            )
            rows.append(
                ("Python: eager module forward", time_calls(lambda: eager(obs_t), args.calls, args.warmup))
            )
            scripted = export.load_exported(ts_path)
            with export.torchscript_calls():
                module = torch.jit.load(str(ts_path))
            rows.append(
                ("Python: TorchScript forward", time_calls(lambda: module(obs_t), args.calls, args.warmup))
            )
            rows.append(
                (
                    "Python: TorchScript, numpy in/out",
                    time_calls(lambda: scripted.fn(obs[None]), args.calls, args.warmup),
                )
            )
            if (
                args.onnx
                and importlib.util.find_spec("onnxruntime")
                and importlib.util.find_spec("onnxscript")
            ):
                export.export_policy(bundle, tmp / "policy.onnx", fmt="onnx")
                ort = export.load_exported(tmp / "policy.onnx")
                rows.append(
                    (
                        "Python: ONNX Runtime, numpy in/out",
                        time_calls(lambda: ort.fn(obs[None]), args.calls, args.warmup),
                    )
                )
            if args.pt2:
                export.export_policy(bundle, tmp / "policy.pt2", fmt="pt2")
                pt2 = export.load_exported(tmp / "policy.pt2")
                rows.append(
                    (
                        "Python: AOTInductor pt2, numpy in/out",
                        time_calls(lambda: pt2.fn(obs[None]), args.calls, args.warmup),
                    )
                )

        build_dir = args.build_dir
        try:
            controller.binary_path(build_dir)
        except Exception:
            print("building the controller ...", file=sys.stderr)
            controller.build_controller(build_dir)
        cpp = controller.run_controller(
            ts_path,
            steps=args.calls,
            build_dir=build_dir,
            extra=["--no-terminate", "--warmup", str(args.warmup)],
        )

    results = [
        {"name": name, "p50_us": float(np.median(t)), "p99_us": float(np.percentile(t, 99))}
        for name, t in rows
    ]
    results.append(
        {
            "name": "C++ controller: TorchScript forward (libtorch)",
            "p50_us": cpp["infer_us_p50"],
            "p99_us": cpp["infer_us_p99"],
        }
    )
    ref = cpp["infer_us_p50"]
    hidden = [m.out_features for m in bundle.actor.modules() if isinstance(m, torch.nn.Linear)][:-1]
    header = {
        "policy": f"{meta['env_id']} MLP {meta['obs_dim']}->{'x'.join(map(str, hidden))}->{meta['act_dim']}",
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": 1,
        "calls": args.calls,
        "cpp_loop_hz": cpp["loop_hz"],
        "cpp_steps": cpp["steps"],
        "target_cpp_p50_us": TARGET_CPP_P50_US,
        "target_met": bool(ref < TARGET_CPP_P50_US),
    }
    if args.json:
        print(json.dumps({**header, "results": results}, indent=1))
        return 0
    print(
        f"policy {header['policy']}, batch 1, 1 thread, {args.calls} calls after {args.warmup} warm-up, "
        f"torch {torch.__version__}"
    )
    print(f"| {'path':<48} | {'p50 us':>8} | {'p99 us':>8} | {'p50 / C++':>9} |")
    print(f"|{'-' * 50}|{'-' * 10}|{'-' * 10}|{'-' * 11}|")
    for r in results:
        print(f"| {r['name']:<48} | {r['p50_us']:8.1f} | {r['p99_us']:8.1f} | {r['p50_us'] / ref:8.2f}x |")
    print(
        f"C++ closed loop: {cpp['loop_hz']:.0f} Hz free-running ({cpp['steps']} steps, physics included); "
        f"target C++ median < {TARGET_CPP_P50_US:g} us: {'met' if header['target_met'] else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
