"""``rt_ablation`` (csrc/policy/tests/rt_ablation.cpp): the measured ablation of the policy library's
real-time measures, built with the library (the session fixture ``controller_build``), run with few calls.

Only what must hold on any machine is checked: allocation counts and actions, never timings (the timings
are ``benchmarks/bench_export.py --ablation``'s, printed as ratios).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from policy_factory import make_checkpoint

from gail_robot import controller, export
from gail_robot.policy_io import load_policy

ATOL = 1e-6  # every configuration's actions vs its full setup's (issue 18)
CALLS = 200
LIBTORCH = [
    "libtorch full",
    "no preallocation",
    "NoGradGuard",
    "no guard",
    "unfrozen",
    "optimize_for_inference",
    "static runtime",
    "default threads",
    "library libtorch backend",
]
NATIVE = [
    "native full",
    "denormals not flushed",
    "denormal weights: native full",
    "denormal weights: not flushed",
]


def rt_ablation(build: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(controller.rt_ablation_path(build)), *args], capture_output=True, text=True, check=False
    )


def test_ablation_counts_and_actions(controller_build: Path, tmp_path: Path) -> None:
    bundle = load_policy(make_checkpoint(tmp_path / "Hopper-v5.pt", "Hopper-v5", hidden=(64, 64)))
    policy = tmp_path / "policy.pt"
    export.export_policy(bundle, policy)
    obs = np.ascontiguousarray(export.collect_env_observations(bundle, 50, seed=0), dtype=np.float32)
    obs.tofile(tmp_path / "obs.f32")
    proc = rt_ablation(
        controller_build,
        "--policy",
        str(policy),
        "--obs",
        str(tmp_path / "obs.f32"),
        "--calls",
        str(CALLS),
        "--warmup",
        "20",
        "--rounds",
        "2",
        "--tmp-dir",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    rows = {r["config"]: r for r in report["configs"]}
    skipped = " ".join(report["skipped"])
    # The static runtime is the one configuration allowed to be missing (with its reason).
    assert [c for c in LIBTORCH + NATIVE if c not in rows] in ([], ["static runtime"]), skipped
    assert report["rows"] == 50 and all(r["calls"] == CALLS for r in rows.values())
    # The denormal copy: the 64x64 hidden layer's weights all denormal (none of them is exactly zero).
    assert report["denormal_layer"] == "actor.mean_net.2" and report["denormal_weights"] == 64 * 64
    assert not list(tmp_path.glob("rt_ablation_denormal_*"))  # the copy is removed after loading

    for name in NATIVE:  # the library's native kernels allocate nothing, flushed or not
        assert rows[name]["backend"] == "native-mlp" and rows[name]["allocations"] == 0, rows[name]
    full, per_call = rows["libtorch full"]["allocations"], rows["no preallocation"]["allocations"]
    assert 0 < full < per_call  # libtorch allocates on every call, more with a new input per call
    assert rows["library libtorch backend"]["backend"] == "libtorch-jit"
    # The direct full setup is what the library runs: the same allocations.
    assert rows["library libtorch backend"]["allocations"] == full

    for row in rows.values():  # every configuration computes the same actions as its full setup
        assert row["max_diff_vs_baseline"] <= ATOL, row
    assert report["native_vs_libtorch_max_diff"] <= ATOL


def test_bad_policy_is_one_line(controller_build: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pt"
    proc = rt_ablation(controller_build, "--policy", str(missing))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"rt_ablation: error: cannot open policy {missing}: no such file"
    ]
