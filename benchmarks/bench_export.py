"""Per-action latency at batch 1: eager Python policy vs TorchScript from Python vs the C++ controller.

All three run in the same invocation on the same policy (a 2x256 tanh MLP for Hopper-v5 by default,
or ``--policy RUN_DIR|CHECKPOINT``), single-threaded, after a warm-up, and the table reports ratios
against the C++ controller measured in this run. The C++ numbers come from the controller's own JSON
report (time around ``act()`` in the closed loop, with MuJoCo stepping in between calls).

    python benchmarks/bench_export.py [--policy RUN_DIR] [--calls 5000] [--pt2] [--onnx] [--json]

Target (issue 6): C++ median under 25 us for a 2x256 MLP on the development machine.

``--library`` instead measures the C++ policy library's ``act()`` (``policy_check``: p50 / p99 / max and heap
allocations per call) for 2x64, 2x256 and a Humanoid-sized (348 -> 2x256 -> 17) MLP beside Python's
TorchScript forward in the same run, with the libtorch interpreter backend and unflushed denormals as
the knobs (``--pt2``: also the same policies as AOTInductor packages, on the native kernels and on
libtorch's AOTI runner); ``--realtime-seconds S`` then runs the real-time loop example at 500 Hz for
S seconds.
Targets (issue 18, ratios in one run): act() p50 <= 0.3 x Python TorchScript forward p50, act() p99 <=
2 x its own p50, zero deadline misses at 500 Hz for 60 s on an idle machine.

``--ablation`` measures which of the library's real-time measures matter (``rt_ablation``,
csrc/policy/tests/rt_ablation.cpp): for a 2x256 Hopper and a Humanoid-sized MLP, the full setup and each
measure removed in turn (libtorch: preallocated input, InferenceMode, frozen module, one intra-op thread,
plus optimize_for_inference and the static runtime; native kernels: flushed denormals, on ordinary weights
and on a copy with denormal weights), as allocations per call and p50 / p99 / max with ratios to the full
setup measured in the same run (default 10,000 calls after 500 warm-up).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
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
TARGET_ACT_P50_RATIO = 0.3  # act() p50 / Python TorchScript forward p50
TARGET_ACT_P99_OVER_P50 = 2.0
LIBRARY_POLICIES = (("Hopper-v5", [64, 64]), ("Hopper-v5", [256, 256]), ("Humanoid-v5", [256, 256]))
# Threads matter most for wide layers: the 2x256 Hopper and the Humanoid-sized MLP (348 -> 2x256 -> 17).
ABLATION_POLICIES = (("Hopper-v5", [256, 256]), ("Humanoid-v5", [256, 256]))


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


def policy_check(build_dir: str | None, policy: Path, calls: int, warmup: int, *args: str) -> dict[str, Any]:
    """The policy library's act() measured by policy_check (p50/p99/max us, allocations per call)."""
    cmd = [str(controller.policy_check_path(build_dir)), "--policy", str(policy), "--calls", str(calls)]
    proc = subprocess.run([*cmd, "--warmup", str(warmup), *args], capture_output=True, text=True, check=True)
    return dict(json.loads(proc.stdout))


def library_rows(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """One block of rows per policy size: Python TorchScript forward, then act() of each C++ variant."""
    out = []
    for env_id, hidden in LIBRARY_POLICIES:
        work = tmp / f"{env_id}-{'x'.join(map(str, hidden))}"
        work.mkdir()
        bundle = random_policy(work, env_id, hidden)
        path = work / "policy.pt"
        meta = export.export_policy(bundle, path)
        obs = np.asarray(export.collect_env_observations(bundle, 1, seed=0)[0], dtype=np.float32)
        obs_t = torch.from_numpy(obs[None].copy())
        with export.torchscript_calls():
            module = torch.jit.load(str(path))
        with torch.inference_mode():
            python = time_calls(lambda m=module, x=obs_t: m(x), args.calls, args.warmup)
        label = f"{meta['obs_dim']}->{'x'.join(map(str, hidden))}->{meta['act_dim']}"
        ref = float(np.median(python))
        out.append(
            {
                "policy": label,
                "path": "Python: TorchScript forward",
                "p50_us": ref,
                "p99_us": float(np.percentile(python, 99)),
                "max_us": float(python.max()),
                "allocs_per_call": None,
            }
        )
        variants: list[tuple[str, Path, list[str]]] = [
            ("C++ act(): native kernels", path, []),
            ("C++ act(): native, denormals not flushed", path, ["--no-flush-denormals"]),
            ("C++ act(): libtorch interpreter (frozen)", path, ["--backend", "libtorch"]),
        ]
        if args.pt2:  # the same policy as an AOTInductor package (compiles ~30 s)
            pt2 = work / "policy.pt2"
            export.export_policy(bundle, pt2, fmt="pt2")
            variants += [
                ("C++ act(): pt2, native kernels", pt2, []),
                ("C++ act(): pt2, libtorch AOTI runner", pt2, ["--backend", "libtorch"]),
            ]
        for name, policy, extra in variants:
            r = policy_check(args.build_dir, policy, args.calls, args.warmup, *extra)
            out.append(
                {
                    "policy": label,
                    "path": f"{name} [{r['backend']}]",
                    "p50_us": r["act_us_p50"],
                    "p99_us": r["act_us_p99"],
                    "max_us": r["act_us_max"],
                    "allocs_per_call": r["allocations"] / r["calls"],
                }
            )
        for row in out[-1 - len(variants) :]:
            row["p50_over_python"] = row["p50_us"] / ref
    return out


def realtime_loop(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The real-time loop example at 500 Hz on a 2x256 Hopper policy for --realtime-seconds."""
    bundle = random_policy(tmp, "Hopper-v5", [256, 256])
    path = tmp / "rt.pt"
    meta = export.export_policy(bundle, path)
    binary = controller.binary_path(args.build_dir).parent / controller.REALTIME_LOOP_NAME
    model = controller.default_model(meta)
    cmd = [str(binary), "--policy", str(path), "--model", str(model), "--hz", "500", "--seconds"]
    load_before = os.getloadavg()
    proc = subprocess.run([*cmd, str(args.realtime_seconds)], capture_output=True, text=True, check=True)
    report = dict(json.loads(proc.stdout))
    report["loadavg_before"], report["loadavg_after"] = load_before, os.getloadavg()
    return report


def library_main(args: argparse.Namespace) -> int:
    """``--library``: the act() table (and the real-time loop)."""
    try:
        controller.policy_check_path(args.build_dir)
    except Exception:
        print("building the policy library and controller ...", file=sys.stderr)
        controller.build_controller(args.build_dir)
    with tempfile.TemporaryDirectory(prefix="bench-policy-lib-") as tmp_name:
        rows = library_rows(args, Path(tmp_name))
        rt = realtime_loop(args, Path(tmp_name)) if args.realtime_seconds > 0 else None
    header = {
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "calls": args.calls,
        "loadavg": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps({**header, "rows": rows, "realtime_loop": rt}, indent=1))
        return 0
    print(
        f"batch 1, 1 thread, {args.calls} calls after {args.warmup} warm-up, torch {torch.__version__}, "
        f"load average {header['loadavg'][0]:.2f} on {header['cpus']} CPUs"
    )
    print(
        f"| {'MLP':<16} | {'path':<56} | {'p50 us':>7} | {'p99 us':>7} | {'max us':>7} | "
        f"{'p50 / Py TS':>11} | {'allocs/call':>11} |"
    )
    print(f"|{'-' * 18}|{'-' * 58}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 13}|{'-' * 13}|")
    for r in rows:
        allocs = "" if r["allocs_per_call"] is None else f"{r['allocs_per_call']:.1f}"
        print(
            f"| {r['policy']:<16} | {r['path']:<56} | {r['p50_us']:7.2f} | {r['p99_us']:7.2f} | "
            f"{r['max_us']:7.1f} | {r['p50_over_python']:10.2f}x | {allocs:>11} |"
        )
    for r in rows:
        if r["path"].startswith(("C++ act(): native kernels", "C++ act(): pt2, native kernels")):
            ok_ratio = r["p50_over_python"] <= TARGET_ACT_P50_RATIO
            ok_tail = r["p99_us"] <= TARGET_ACT_P99_OVER_P50 * r["p50_us"]
            name = r["policy"] + (" pt2" if "pt2" in r["path"] else "")
            print(
                f"{name}: p50 <= {TARGET_ACT_P50_RATIO} x Python TS: "
                f"{'met' if ok_ratio else 'NOT met'}; "
                f"p99 <= {TARGET_ACT_P99_OVER_P50:g} x p50: {'met' if ok_tail else 'NOT met'}"
            )
    if rt is not None:
        print(
            f"real-time loop, {rt['env_id']} 2x256 at {rt['hz']:g} Hz for {rt['seconds']:g} s: "
            f"{rt['deadline_misses']} deadline misses of {rt['ticks']} ticks; wake-up lateness p50/p99/max "
            f"{rt['wake_late_us_p50']:.0f}/{rt['wake_late_us_p99']:.0f}/{rt['wake_late_us_max']:.0f} us; "
            f"act() p50/p99/max {rt['act_us_p50']:.1f}/{rt['act_us_p99']:.1f}/{rt['act_us_max']:.1f} us; "
            f"load average {rt['loadavg_before'][0]:.2f} -> {rt['loadavg_after'][0]:.2f} "
            f"(SCHED_OTHER, not pinned)"
        )
    return 0


def ablation_main(args: argparse.Namespace) -> int:
    """``--ablation``: rt_ablation on each of ABLATION_POLICIES, one markdown table with ratios."""
    try:
        binary = controller.rt_ablation_path(args.build_dir)
    except Exception:
        print("building the policy library and controller ...", file=sys.stderr)
        controller.build_controller(args.build_dir)
        binary = controller.rt_ablation_path(args.build_dir)
    reports = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-rt-ablation-") as tmp_name:
        for env_id, hidden in ABLATION_POLICIES:
            work = Path(tmp_name) / f"{env_id}-{'x'.join(map(str, hidden))}"
            work.mkdir()
            bundle = random_policy(work, env_id, hidden)
            path = work / "policy.pt"
            meta = export.export_policy(bundle, path)
            # Observations the policy visits (timing cycles through them; actions are compared on all).
            obs = np.ascontiguousarray(export.collect_env_observations(bundle, 100, seed=0), dtype=np.float32)
            obs.tofile(work / "obs.f32")
            cmd = [str(binary), "--policy", str(path), "--obs", str(work / "obs.f32"), "--tmp-dir", str(work)]
            cmd += ["--calls", str(args.calls), "--warmup", str(args.warmup)]
            report = dict(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout))
            report["label"] = f"{meta['obs_dim']}->{'x'.join(map(str, hidden))}->{meta['act_dim']}"
            reports.append(report)
    header = {
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    if args.json:
        print(json.dumps({**header, "reports": reports}, indent=1))
        return 0
    first = reports[0]
    print(
        f"rt_ablation: batch 1, {first['calls']} calls after {first['warmup']} warm-up per configuration "
        f"(timed in {first['rounds']} round-robin rounds), torch {torch.__version__}, libtorch's default "
        f"intra-op threads here {first['default_threads']}, load average {load_before[0]:.2f} -> "
        f"{header['loadavg_after'][0]:.2f} on {header['cpus']} CPUs"
    )
    print(
        f"| {'MLP':<16} | {'configuration':<32} | {'allocs/call':>11} | {'p50 us':>7} | {'p99 us':>7} | "
        f"{'max us':>8} | {'p50 / full':>10} | {'p99 / full':>10} | {'max |da|':>8} |"
    )
    print(
        f"|{'-' * 18}|{'-' * 34}|{'-' * 13}|{'-' * 9}|{'-' * 9}|{'-' * 10}|{'-' * 12}|{'-' * 12}|{'-' * 10}|"
    )
    for report in reports:
        by_name = {c["config"]: c for c in report["configs"]}
        for c in report["configs"]:
            base = by_name[c["baseline"]]
            print(
                f"| {report['label']:<16} | {c['config']:<32} | {c['allocations'] / c['calls']:11.1f} | "
                f"{c['us_p50']:7.2f} | {c['us_p99']:7.1f} | {c['us_max']:8.0f} | "
                f"{c['us_p50'] / base['us_p50']:9.2f}x | {c['us_p99'] / base['us_p99']:9.2f}x | "
                f"{c['max_diff_vs_baseline']:8.1e} |"
            )
    for report in reports:
        notes = [
            f"denormal copy: {report['denormal_layer']} x {report['denormal_scale']:g} "
            f"({report['denormal_weights']} denormal weights)",
            f"native vs libtorch actions max |da| {report['native_vs_libtorch_max_diff']:.1e}",
            *(f"skipped {s}" for s in report["skipped"]),
        ]
        print(f"{report['label']}: " + "; ".join(notes))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default=None, help="run dir or checkpoint (default: random 2x256 Hopper)")
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--calls", type=int, default=None, help="default 5000 (10000 with --ablation)")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--build-dir", default=None, help="controller build dir (built if missing)")
    parser.add_argument(
        "--pt2", action="store_true", help="also time the AOTInductor package (compiles ~30 s)"
    )
    parser.add_argument("--onnx", action="store_true", help="also time ONNX Runtime (needs onnxruntime)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--library", action="store_true", help="measure the C++ policy library's act() instead"
    )
    parser.add_argument(
        "--realtime-seconds",
        type=float,
        default=0.0,
        help="with --library: run the 500 Hz loop example this long",
    )
    parser.add_argument(
        "--ablation", action="store_true", help="measure which of the library's real-time measures matter"
    )
    args = parser.parse_args()
    if args.calls is None:
        args.calls = 10000 if args.ablation else 5000
    if args.ablation:
        return ablation_main(args)
    if args.library:
        torch.set_num_threads(1)
        return library_main(args)

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
