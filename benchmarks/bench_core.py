"""Benchmark of the C++ core against NumPy and torch, with a memory-bandwidth floor from the same run.

Run: ``python benchmarks/bench_core.py`` (about half a minute). Prints Markdown tables:

* GAE on float32 ``(T, N)`` for (2048, 1), (2048, 16), (1024, 1024): ns per element of
  ``gail_robot.core.gae`` (the public API: validation, allocation and the C++ kernel), of the NumPy
  reference ``core.gae_reference``, of a per-step NumPy loop vectorised over envs (how common RL
  libraries compute GAE), of the same per-step loop in torch, the speed-ups, and the memory-bound floor
  = the time np.copyto takes, in this run, to move exactly the bytes the kernel must touch (so a
  working set that fits in cache is compared with an in-cache copy, not with DRAM bandwidth).
* ``disc_rewards(kind="gail")`` vs the stable NumPy expression and ``torch.nn.functional.softplus``.
* The thread split at (1024, 1024): one thread (the default) vs one per CPU.

Timings are the best of several repeats (the minimum is the least disturbed by other processes on a
shared machine). Targets from the design: >= 100x the per-step NumPy loop at (2048, 16); within 3x of
the memory floor at (1024, 1024).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from gail_robot import _core, core

SHAPES = [(2048, 1), (2048, 16), (1024, 1024)]
GAMMA, LAM = 0.99, 0.95
# Bytes one element costs at least: GAE reads rewards, values, next_values (float32) and two bool
# flags, and writes advantages and returns (float32); disc_rewards reads and writes one float32.
GAE_BYTES = 3 * 4 + 2 * 1 + 2 * 4
REWARD_BYTES = 4 + 4


def best_time(fn: Callable[[], Any], min_total: float, repeats: int = 5) -> float:
    """Seconds per call: the best over `repeats` rounds, each round averaging enough calls to last
    about min_total / repeats seconds (at least one call)."""
    fn()  # warm-up (first-touch page faults, lazy initialisation)
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-9)
    calls = max(1, int(min_total / repeats / once))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def memcpy_seconds(nbytes: int, min_total: float) -> float:
    """Seconds np.copyto needs to move `nbytes` (nbytes / 2 read + nbytes / 2 written), buffers pre-faulted.

    Copying exactly the bytes a kernel must touch gives that kernel's floor with the same cache
    level: a working set that fits the last-level cache is timed against an in-cache copy, not DRAM.
    """
    src = np.ones(max(nbytes // 2, 1), dtype=np.uint8)
    dst = np.zeros_like(src)
    return best_time(lambda: np.copyto(dst, src), min_total)


def numpy_step_loop(
    r: np.ndarray,
    v: np.ndarray,
    nv: np.ndarray,
    term: np.ndarray,
    trunc: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """GAE as SB3/CleanRL-style libraries write it: a Python loop over steps, NumPy over envs."""
    adv = np.zeros_like(r)
    last = np.zeros(r.shape[1], dtype=r.dtype)
    for t in reversed(range(r.shape[0])):
        not_term = 1.0 - term[t].astype(r.dtype)
        not_cut = 1.0 - (term[t] | trunc[t]).astype(r.dtype)
        delta = r[t] + gamma * nv[t] * not_term - v[t]
        last = delta + gamma * lam * not_cut * last
        adv[t] = last
    return adv, adv + v


def torch_step_loop(
    r: torch.Tensor,
    v: torch.Tensor,
    nv: torch.Tensor,
    term: torch.Tensor,
    trunc: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same per-step loop on torch tensors (as in CleanRL's PPO)."""
    adv = torch.zeros_like(r)
    last = torch.zeros(r.shape[1], dtype=r.dtype)
    for t in reversed(range(r.shape[0])):
        not_term = 1.0 - term[t].to(r.dtype)
        not_cut = 1.0 - (term[t] | trunc[t]).to(r.dtype)
        delta = r[t] + gamma * nv[t] * not_term - v[t]
        last = delta + gamma * lam * not_cut * last
        adv[t] = last
    return adv, adv + v


def fmt(x: float) -> str:
    return f"{x:.3g}" if x < 100 else f"{x:,.0f}"


def gae_row(steps: int, envs: int, rng: np.random.Generator, min_total: float) -> str:
    floor_ns = memcpy_seconds(GAE_BYTES * steps * envs, min_total) / (steps * envs) * 1e9
    r, v, nv = (rng.standard_normal((steps, envs), dtype=np.float32) for _ in range(3))
    term = rng.random((steps, envs)) < 0.01
    trunc = rng.random((steps, envs)) < 0.01
    rt, vt, nvt, termt, trunct = (torch.from_numpy(a) for a in (r, v, nv, term, trunc))
    # All contestants agree before anything is timed.
    adv, _ = core.gae(r, v, nv, term, trunc, GAMMA, LAM)
    np.testing.assert_allclose(
        numpy_step_loop(r, v, nv, term, trunc, GAMMA, LAM)[0], adv, rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(
        torch_step_loop(rt, vt, nvt, termt, trunct, GAMMA, LAM)[0].numpy(), adv, rtol=1e-4, atol=1e-4
    )
    with torch.inference_mode():
        t_cpp = best_time(lambda: core.gae(r, v, nv, term, trunc, GAMMA, LAM), min_total)
        t_ref = best_time(lambda: core.gae_reference(r, v, nv, term, trunc, GAMMA, LAM), min_total, 3)
        t_np = best_time(lambda: numpy_step_loop(r, v, nv, term, trunc, GAMMA, LAM), min_total, 3)
        t_torch = best_time(lambda: torch_step_loop(rt, vt, nvt, termt, trunct, GAMMA, LAM), min_total, 3)
    ns = [t / r.size * 1e9 for t in (t_cpp, t_ref, t_np, t_torch)]
    return (
        f"| {steps} x {envs} | {fmt(ns[0])} | {fmt(ns[1])} | {fmt(ns[2])} | {fmt(ns[3])} "
        f"| {fmt(ns[2] / ns[0])}x | {fmt(ns[3] / ns[0])}x | {fmt(floor_ns)} | {ns[0] / floor_ns:.2f}x |"
    )


def bench_gae(min_total: float) -> list[str]:
    rng = np.random.default_rng(0)
    return [
        "| T x N | C++ `core.gae` ns/el | reference ns/el | NumPy step loop ns/el | torch step loop ns/el "
        "| NumPy loop / C++ | torch loop / C++ | memory floor ns/el | C++ / floor |",
        "|---|---|---|---|---|---|---|---|---|",
        *(gae_row(steps, envs, rng, min_total) for steps, envs in SHAPES),
    ]


def rewards_row(steps: int, envs: int, rng: np.random.Generator, min_total: float) -> str:
    floor_ns = memcpy_seconds(REWARD_BYTES * steps * envs, min_total) / (steps * envs) * 1e9
    x = rng.standard_normal((steps, envs), dtype=np.float32) * np.float32(5)
    xt = torch.from_numpy(x)

    def numpy_softplus() -> np.ndarray:
        # The stable NumPy expression (np.logaddexp(0, x) is the same formula and no faster).
        return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))

    np.testing.assert_allclose(core.disc_rewards(x, "gail"), numpy_softplus(), rtol=1e-6)
    with torch.inference_mode():
        t_cpp = best_time(lambda: core.disc_rewards(x, "gail"), min_total)
        t_np = best_time(numpy_softplus, min_total)
        t_torch = best_time(lambda: torch.nn.functional.softplus(xt), min_total)
    ns = [t / x.size * 1e9 for t in (t_cpp, t_np, t_torch)]
    return (
        f"| {steps} x {envs} | {fmt(ns[0])} | {fmt(ns[1])} | {fmt(ns[2])} | {fmt(ns[1] / ns[0])}x "
        f"| {fmt(ns[2] / ns[0])}x | {fmt(floor_ns)} | {ns[0] / floor_ns:.2f}x |"
    )


def bench_rewards(min_total: float) -> list[str]:
    rng = np.random.default_rng(1)
    return [
        "| T x N | C++ `disc_rewards` ns/el | NumPy ns/el | torch softplus ns/el | NumPy / C++ | torch / C++ "
        "| memory floor ns/el | C++ / floor |",
        "|---|---|---|---|---|---|---|---|",
        *(rewards_row(steps, envs, rng, min_total) for steps, envs in SHAPES),
    ]


def bench_threads(min_total: float) -> list[str]:
    """Kernel time with 1 thread (the default) vs one thread per CPU, at the largest shape."""
    rng = np.random.default_rng(2)
    steps, envs = SHAPES[-1]
    r, v, nv = (rng.standard_normal((steps, envs), dtype=np.float32) for _ in range(3))
    term = rng.random((steps, envs)) < 0.01
    x = r * np.float32(5)
    default = _core.get_max_threads()
    many = os.cpu_count() or 1
    rows = [
        f"| {steps} x {envs}, ns/el | 1 thread (default) | {many} threads | speed-up |",
        "|---|---|---|---|",
    ]
    results = {}
    try:
        for threads in (1, many):
            _core.set_max_threads(threads)
            results[threads] = (
                best_time(lambda: core.gae(r, v, nv, term, term, GAMMA, LAM), min_total) / r.size * 1e9,
                best_time(lambda: core.disc_rewards(x, "gail"), min_total) / r.size * 1e9,
            )
    finally:
        _core.set_max_threads(default)
    for i, name in enumerate(("gae", "disc_rewards")):
        one, multi = results[1][i], results[many][i]
        rows.append(f"| {name} | {fmt(one)} | {fmt(multi)} | {one / multi:.2f}x |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds of timing per measurement")
    args = parser.parse_args()
    dram_bytes = 256 << 20
    dram_bandwidth = dram_bytes / memcpy_seconds(dram_bytes, args.min_time)
    print(
        f"# gail_robot core benchmark: {platform.processor() or platform.machine()}, "
        f"numpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"_core max threads {_core.get_max_threads()}"
    )
    print(
        f"memcpy bandwidth (read + write) of a 256 MiB copy (DRAM): {dram_bandwidth / 1e9:.1f} GB/s; "
        "each row's floor below is a copy of exactly the bytes that row's kernel touches\n"
    )
    print(f"## GAE, float32 (floor: {GAE_BYTES} bytes/element)\n")
    print("\n".join(bench_gae(args.min_time)))
    print(f"\n## disc_rewards(kind='gail'), float32 (floor: {REWARD_BYTES} bytes/element)\n")
    print("\n".join(bench_rewards(args.min_time)))
    print("\n## Threads at (1024, 1024)\n")
    print("\n".join(bench_threads(args.min_time)))


if __name__ == "__main__":
    main()
