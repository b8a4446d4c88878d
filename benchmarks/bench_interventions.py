"""Success rate vs expert-labelled steps: BC on full demos, HG-DAgger and IWR on the arm tasks.

Usage::

    python benchmarks/bench_interventions.py [--out benchmarks/results/interventions_noise0]
        [--tasks ArmPush-v0 ArmPickPlace-v0] [--seeds 0 1 2] [--demo-counts 5 10 20 40]
        [--initial-demos 5] [--rounds 8] [--episodes-per-round 5] [--eval-episodes 30] [--noise 0]
        [--takeover-threshold 0.5] [--handback-steps 10]

For each task and seed:

* **BC on full demos**: scripted-expert demos (``--noise``: 0 by default, noise-free like the shipped
  files; 0.1 gave the noisy demos of ``benchmarks/results/interventions/``) recorded once; BC on the
  first N of them for each N in ``--demo-counts``. Expert-labelled steps: every step of the N demos.
* **HG-DAgger** and **IWR**: ``gail-robot dagger`` from the first ``--initial-demos`` of the same
  demos, ``--rounds`` rounds of ``--episodes-per-round`` episodes with the simulated person
  (``--device scripted``: the expert's gate, ``--takeover-threshold`` / ``--handback-steps`` as in
  ``gail-robot dagger``, default stall). Expert-labelled
  steps: the initial demos' steps plus the intervention steps so far (policy-driven steps are not
  labelled by anyone).

Success is BC's final evaluation (``run.eval_episodes`` deterministic episodes on the run's fixed
evaluation seeds). Everything goes through the real commands (``gail-robot record``, ``train``,
``dagger``) in subprocesses. Resumable: finished cells (``cells/*.json``) are skipped on a rerun and
an interrupted dagger run continues at its next round. Output: ``results.json`` (every cell, the
per-task means and the target check) and ``interventions.png`` (mean over seeds, min-max band).

Target: >= 0.95 success with at most one third of the expert-labelled steps that BC on full demos
needs for its best success (the smallest N reaching BC's best mean success).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TASKS = {"ArmPush-v0": "gail_robot/ArmPush-v0", "ArmPickPlace-v0": "gail_robot/ArmPickPlace-v0"}
TARGET_SUCCESS = 0.95
TARGET_FRACTION = 1 / 3


def cli(*argv: str) -> None:
    """Run ``gail-robot ARGV`` (this interpreter); a failure stops the benchmark with its output."""
    cmd = [sys.executable, "-m", "gail_robot.cli", *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")


def last_eval(run_dir: Path) -> dict[str, Any]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    evals = [r for r in rows if "eval_success_rate" in r]
    return evals[-1] if evals else {}


def demo_steps(path: Path, n: int) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        return sum(int(f["data"][f"demo_{i}"].attrs["num_samples"]) for i in range(n))


def common_sets(args: argparse.Namespace) -> list[str]:
    return [
        "--set", f"run.eval_episodes={args.eval_episodes}",
        "--set", "run.torch_threads=1",
        "--set", "run.tensorboard=false",
    ]  # fmt: skip


def run_cell(
    args: argparse.Namespace, task: str, seed: int, method: str, n: int | None
) -> list[dict[str, Any]]:
    """One cell: BC on n demos, or one dagger run (one row per round)."""
    work = Path(args.out) / "work" / f"noise_{args.noise:g}" / task / f"seed_{seed}"
    work.mkdir(parents=True, exist_ok=True)
    demos = work / "demos.hdf5"
    initial = work / f"initial_{args.initial_demos}.hdf5"
    if not (work / "demos.done").exists():
        demos.unlink(missing_ok=True)
        cli(
            "record", "--env", TASKS[task], "--device", "scripted", "--noise", f"{args.noise:g}",
            "--episodes", str(max(args.demo_counts)), "--seed", str(1000 * seed), "--out", str(demos),
            "--no-fsync",
        )  # fmt: skip
        (work / "demos.done").write_text("")
    if not (work / f"{initial.name}.done").exists():
        initial.unlink(missing_ok=True)
        # the same seeds and noise stream: the first demos of demos.hdf5
        cli(
            "record", "--env", TASKS[task], "--device", "scripted", "--noise", f"{args.noise:g}",
            "--episodes", str(args.initial_demos), "--seed", str(1000 * seed), "--out", str(initial),
            "--no-fsync",
        )  # fmt: skip
        (work / f"{initial.name}.done").write_text("")
    if method == "bc":
        assert n is not None
        run_dir = work / f"bc_{n}"
        if not (run_dir / "final.pt").exists():
            if run_dir.exists():
                import shutil

                shutil.rmtree(run_dir)
            cli(
                "train", task, "--algo", "bc", "--demos", str(demos), "--out", str(run_dir),
                "--seed", str(seed), "--no-progress", "--set", f"bc.max_demos={n}", *common_sets(args),
            )  # fmt: skip
        ev = last_eval(run_dir)
        return [
            {
                "task": task, "seed": seed, "method": "bc", "demos": n,
                "expert_labelled_steps": demo_steps(demos, n),
                "success": ev.get("eval_success_rate"), "return": ev.get("eval_return"),
            }
        ]  # fmt: skip
    out = work / method
    cli(
        "dagger", task, "--demos", str(initial), "--rounds", str(args.rounds),
        "--episodes-per-round", str(args.episodes_per_round), "--method", method,
        "--seed", str(seed), "--out", str(out), "--no-progress", *common_sets(args),
        "--takeover-threshold", str(args.takeover_threshold), "--handback-steps", str(args.handback_steps),
    )  # fmt: skip
    rows = json.loads((out / "summary.json").read_text())
    return [
        {
            "task": task, "seed": seed, "method": method, "round": row["round"],
            "expert_labelled_steps": row["expert_labelled_steps"],
            "intervention_steps": row["intervention_steps"], "policy_steps": row["policy_steps"],
            "success": row["eval_success_rate"], "return": row["eval_return"],
        }
        for row in rows
    ]  # fmt: skip


def aggregate(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Per task and method: mean / min / max success and mean labelled steps per demo count or round;
    the target check."""
    out: dict[str, Any] = {}
    for task in [t for t in TASKS if any(r["task"] == t for r in rows)]:
        per: dict[str, list[dict[str, Any]]] = {}
        for method, key in (("bc", "demos"), ("hg-dagger", "round"), ("iwr", "round")):
            points = []
            values = sorted({r[key] for r in rows if r["task"] == task and r["method"] == method})
            for v in values:
                cell = [r for r in rows if r["task"] == task and r["method"] == method and r[key] == v]
                succ = [r["success"] for r in cell if r["success"] is not None]
                if not succ:
                    continue
                points.append(
                    {
                        key: v,
                        "seeds": len(succ),
                        "expert_labelled_steps": float(np.mean([r["expert_labelled_steps"] for r in cell])),
                        "success_mean": float(np.mean(succ)),
                        "success_min": float(np.min(succ)),
                        "success_max": float(np.max(succ)),
                    }
                )
            per[method] = points
        check: dict[str, Any] = {}
        if per["bc"]:
            best = max(p["success_mean"] for p in per["bc"])
            first = min(
                (p for p in per["bc"] if p["success_mean"] >= best), key=lambda p: p["expert_labelled_steps"]
            )
            check["bc_best_success"] = best
            check["bc_steps_for_best"] = first["expert_labelled_steps"]
            budget = TARGET_FRACTION * first["expert_labelled_steps"]
            for method in ("hg-dagger", "iwr"):
                hits = [p for p in per[method] if p["success_mean"] >= TARGET_SUCCESS]
                steps = min((p["expert_labelled_steps"] for p in hits), default=None)
                check[method] = {
                    "steps_to_0.95": steps,
                    "fraction_of_bc": None if steps is None else steps / first["expert_labelled_steps"],
                    "target_met": steps is not None and steps <= budget,
                }
        out[task] = {"curves": per, "target": check}
    return out


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary)
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
    styles = {
        "bc": ("BC on full demos", "C0", "o"),
        "hg-dagger": ("HG-DAgger", "C1", "s"),
        "iwr": ("IWR", "C2", "^"),
    }
    for ax, task in zip(axes[0], tasks, strict=True):
        for method, (label, color, marker) in styles.items():
            pts = summary[task]["curves"].get(method, [])
            if not pts:
                continue
            x = [p["expert_labelled_steps"] for p in pts]
            ax.plot(x, [p["success_mean"] for p in pts], marker=marker, color=color, label=label)
            ax.fill_between(
                x, [p["success_min"] for p in pts], [p["success_max"] for p in pts], color=color, alpha=0.15
            )
        ax.axhline(TARGET_SUCCESS, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("expert-labelled steps")
        ax.set_ylabel("success rate")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(task)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)  # plot() runs after every cell: open figures would pile up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/interventions_noise0")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--demo-counts", nargs="+", type=int, default=[5, 10, 20, 40])
    parser.add_argument("--initial-demos", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--episodes-per-round", type=int, default=5)
    parser.add_argument("--eval-episodes", type=int, default=30)
    parser.add_argument(
        "--noise", type=float, default=0.0, help="demo action noise (use one --out per noise level)"
    )
    parser.add_argument("--methods", nargs="+", default=["bc", "hg-dagger", "iwr"])
    # the simulated person's gate (gail-robot dagger's options; use one --out per setting)
    parser.add_argument("--takeover-threshold", type=float, default=0.5)
    parser.add_argument("--handback-steps", type=int, default=10)
    args = parser.parse_args()
    out = Path(args.out)
    cells = out / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:  # seed-major: a partial run covers every task and method
        for task in args.tasks:
            jobs: list[tuple[str, int | None]] = []
            if "bc" in args.methods:
                jobs += [("bc", n) for n in args.demo_counts]
            jobs += [(m, None) for m in ("hg-dagger", "iwr") if m in args.methods]
            for method, n in jobs:
                name = f"{task}_seed{seed}_{method}{'' if n is None else f'_{n}'}.json"
                cell = cells / name
                if not cell.exists():
                    start = time.monotonic()
                    result = run_cell(args, task, seed, method, n)
                    tmp = cell.with_suffix(".tmp")
                    tmp.write_text(json.dumps(result, indent=1))
                    os.replace(tmp, cell)
                    points = [(r["expert_labelled_steps"], r["success"]) for r in result]
                    print(f"{name}: {time.monotonic() - start:.0f} s {points}", flush=True)
                # every finished cell in the directory (also those of earlier invocations, e.g. per task)
                rows = [r for f in sorted(cells.glob("*.json")) for r in json.loads(f.read_text())]
                summary = aggregate(rows, args)
                (out / "results.json").write_text(
                    json.dumps({"args": vars(args), "summary": summary, "cells": rows}, indent=1)
                )
                plot(summary, out / "interventions.png")
    print(json.dumps({t: s["target"] for t, s in aggregate(rows, args).items()}, indent=1))


if __name__ == "__main__":
    main()
