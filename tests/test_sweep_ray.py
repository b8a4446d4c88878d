"""``gail-robot sweep`` for real on the session's two-node Ray cluster (1 CPU per node): a 3-seed sweep
and its summary, an interrupted sweep that resumes, and runs shipped through the object store as on a
cluster without a shared filesystem."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gail_robot.cli import main as cli_main
from gail_robot.sweep.plan import EVAL_SEED_OFFSET, SweepArgs, build_group_configs, plan_runs, resolve_config
from gail_robot.sweep.report import Reference
from gail_robot.sweep.runner import run_sweep
from gail_robot.sweep.stats import interval_estimate

# InvertedPendulum-v5 PPO, 2 envs x 256 steps per round, in-process envs (1 CPU per run), an
# evaluation (2 episodes) and a checkpoint every round: a run takes a few seconds.
TINY = [
    "--set", "algo=ppo", "--set", "env.vectorization=sync", "--set", "env.num_envs=2",
    "--set", "run.eval_interval=512", "--set", "run.eval_episodes=2", "--set", "run.checkpoint_interval=512",
    "--set", "run.tensorboard=false",
]  # fmt: skip
NO_EVAL = ["--set", "run.eval_interval=0"]
EXPERT = 1000.0  # InvertedPendulum-v5's maximum return


def sweep_argv(out: Path, seeds: int, steps: int, *extra: str) -> list[str]:
    return [
        "sweep", "InvertedPendulum-v5", "--seeds", str(seeds), "--steps", str(steps), "--out", str(out),
        "--expert-return", str(EXPERT), "--no-progress", *TINY, *extra,
    ]  # fmt: skip


def test_three_seeds_write_the_summary(
    ray_cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"
    assert cli_main(sweep_argv(out, 3, 1024)) == 0
    printed = capsys.readouterr().out
    assert printed.strip().endswith(f"summary: {out.resolve() / 'summary.json'}")
    for seed in range(3):
        assert f"start seed_{seed} (seed {seed}) on " in printed
        assert f"done  seed_{seed} (seed {seed}): return " in printed

    summary = json.loads((out / "summary.json").read_text())
    runs = summary["runs"]
    assert [r["run_dir"] for r in runs] == ["seed_0", "seed_1", "seed_2"]
    scores = []
    for record in runs:
        run_dir = out / record["run_dir"]
        ev = json.loads((run_dir / "eval.json").read_text())
        assert (
            ev["episodes"] == 10 and ev["eval_seed"] == EVAL_SEED_OFFSET + record["seed"] and ev["in_place"]
        )
        assert record["mean_return"] == ev["mean_return"] == pytest.approx(np.mean(ev["returns"]))
        assert len(ev["lengths"]) == 10 and ev["mean_length"] == pytest.approx(np.mean(ev["lengths"]))
        assert record["normalized"] == pytest.approx(ev["mean_return"] / EXPERT)
        assert record["env_steps"] == 1024 and record["success_rate"] is None and record["wall_s"] > 0
        assert f"seed: {record['seed']}" in (run_dir / "config.yaml").read_text()
        assert "final checkpoint:" in (run_dir / "train.log").read_text()
        scores.append(record["normalized"])

    (group,) = summary["groups"]
    expected = interval_estimate(scores, "iqm")
    assert group["n"] == 3
    assert group["iqm"] == pytest.approx(np.mean(scores))  # 3 seeds: nothing trimmed
    assert (group["ci_low"], group["ci_high"]) == pytest.approx((expected.low, expected.high))
    assert min(scores) <= group["ci_low"] <= group["iqm"] <= group["ci_high"] <= max(scores)
    assert group["frac_ge_0.9"] == np.mean(np.array(scores) >= 0.9)
    markdown = (out / "summary.md").read_text()
    assert markdown.count("| seed_") == 3 and "| (no overrides) | 3 |" in markdown
    assert (out / "curves.png").read_bytes().startswith(b"\x89PNG")

    # the recorded evaluation is the documented one: rerun it here
    from gail_robot.evaluate import evaluate_policy
    from gail_robot.policy_io import load_policy

    again = evaluate_policy(load_policy(out / "seed_1" / "final.pt"), 10, seed=EVAL_SEED_OFFSET + 1)
    assert again.returns == json.loads((out / "seed_1" / "eval.json").read_text())["returns"]

    # --report-only on the small files of two finished runs (what benchmarks/quality.py archives):
    # their records are unchanged, nothing is started, the missing run is listed as not finished
    archive = tmp_path / "archive"
    for name in ("seed_0", "seed_2"):
        (archive / name).mkdir(parents=True)
        for file in ("eval.json", "metrics.jsonl", "config.yaml"):
            shutil.copyfile(out / name / file, archive / name / file)
    shutil.copyfile(out / "sweep.json", archive / "sweep.json")
    capsys.readouterr()
    assert cli_main(sweep_argv(archive, 3, 1024, "--report-only")) == 0
    assert capsys.readouterr().out.strip() == f"{archive / 'summary.json'} (2 of 3 runs finished)"
    partial = json.loads((archive / "summary.json").read_text())
    assert partial["runs"] == [runs[0], runs[2]] and partial["groups"][0]["n"] == 2
    assert "seed_1" in (archive / "summary.md").read_text().split("Not finished")[1]
    kept = sorted(p.name for p in (archive / "seed_0").iterdir())
    assert kept == ["config.yaml", "eval.json", "metrics.jsonl"]


def _tree_fingerprint(directory: Path) -> dict[str, tuple[int, str]]:
    return {
        p.relative_to(directory).as_posix(): (
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _steps_logged(run_dir: Path) -> int:
    """The env steps of the last complete metrics row of a live run (0 before the first)."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    steps = 0
    for line in lines:
        try:
            steps = json.loads(line)["env_steps"]
        except (json.JSONDecodeError, KeyError):
            break  # a row being written
    return steps


def _states(sweep_dir: Path) -> dict[str, str]:
    """What each run of a live sweep has written (for failure messages)."""
    return {
        run.name: ", ".join(sorted(p.name for p in run.iterdir())) + f"; {_steps_logged(run)} steps logged"
        for run in sorted(sweep_dir.glob("seed_*"))
    }


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{proc.name}: {cmdline}")
    return found


def test_interrupted_sweep_resumes(ray_cluster: Any, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    # 4096 steps: a run seen at <= 1024 logged steps has >= 5 rounds left when the signal lands, even
    # if its metrics.jsonl lags a round on a loaded machine (with 2048 the sweep could end first);
    # no periodic evaluation, whose episodes lengthen as the policy learns
    argv = [*sweep_argv(out, 3, 4096, *NO_EVAL), "--ray-address", ray_cluster.address]
    driver = subprocess.Popen(
        [sys.executable, "-m", "gail_robot.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as a terminal delivers it: pytest started in the background of a non-interactive shell
        # inherits SIGINT ignored, and so would the driver
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # interrupt once one run is finished and another is early on (a checkpoint, at most half-way)
    deadline = time.monotonic() + 240
    finished: list[Path] = []
    partial: list[Path] = []
    while time.monotonic() < deadline and driver.poll() is None and not (finished and partial):
        runs = [out / f"seed_{s}" for s in range(3)]
        finished = [r for r in runs if (r / "eval.json").is_file()]
        partial = [
            r for r in runs if (r / "checkpoints" / "latest.pt").is_file() and _steps_logged(r) <= 1024
        ]
        time.sleep(0.05)
    assert driver.poll() is None, driver.communicate()
    assert finished and partial, f"no moment with one run finished and another part-way: {_states(out)}"
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=60)
    assert driver.returncode == 130 and stderr.strip().endswith("gail-robot sweep: interrupted"), stderr
    kept = {r: _tree_fingerprint(r) for r in finished}
    first_attempt = {r: (r / "train.log").read_text().splitlines()[0] for r in partial}
    assert all("fresh run" in line for line in first_attempt.values())

    # nothing of the interrupted sweep is left writing into its directory
    deadline = time.monotonic() + 15
    while _processes_mentioning(str(out)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_mentioning(str(out))

    assert cli_main(sweep_argv(out, 3, 4096, *NO_EVAL)) == 0  # the same command again (on the same cluster)
    for run, fingerprint in kept.items():
        assert _tree_fingerprint(run) == fingerprint, f"{run.name} was touched"
    for run, first_line in first_attempt.items():  # continued in its directory, not cleared and restarted
        log = (run / "train.log").read_text()
        assert log.splitlines()[0] == first_line and f"resume run {run.name}" in log
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(r["run_dir"] for r in summary["runs"]) == ["seed_0", "seed_1", "seed_2"]
    assert all(r["env_steps"] == 4096 for r in summary["runs"])
    assert summary["groups"][0]["n"] == 3


def test_runs_shipped_without_a_shared_filesystem(ray_cluster: Any, tmp_path: Path) -> None:
    """Forced shipping: each task trains in its own temporary directory and the driver unpacks the
    result; one grid point rolls out on Ray actors of the sweep's own cluster (``--ray-address`` passed
    on); then a run left with only a checkpoint is shipped out, resumed there and shipped back."""
    args = SweepArgs(
        config="InvertedPendulum-v5",
        config_path=resolve_config("InvertedPendulum-v5"),
        steps=512,
        seeds=1,
        sets=[a for a in TINY if a not in ("--set", "env.vectorization=sync")],
        grid={"env.vectorization": ["sync", "ray"]},
    )
    runs = plan_runs(args)
    configs = build_group_configs(args, runs)
    reference = Reference(EXPERT, 0.0, "--expert-return")
    out = tmp_path / "sweep"
    run_sweep(out, args, configs, reference, progress=False, force_ship=True)
    assert [r.name for r in runs] == ["env.vectorization=sync/seed_0", "env.vectorization=ray/seed_0"]
    for run in runs:
        ev = json.loads((out / run.name / "eval.json").read_text())
        assert not ev["in_place"] and ev["env_steps"] == 512
        assert (out / run.name / "final.pt").is_file()
    ray_run = out / runs[1].name
    config = (ray_run / "config.yaml").read_text()
    assert "  vectorization: ray\n" in config and "  num_workers: 1\n" in config  # the 2nd CPU: 1 actor
    assert "--ray-address " in (ray_run / "train.log").read_text()
    assert "ray_collect_s" in (ray_run / "metrics.jsonl").read_text()

    resumed = out / runs[0].name
    before = json.loads((resumed / "eval.json").read_text())
    (resumed / "eval.json").unlink()
    (resumed / "final.pt").unlink()  # left with checkpoints/latest.pt: resumable
    run_sweep(out, args, configs, reference, progress=False, force_ship=True)
    after = json.loads((resumed / "eval.json").read_text())
    assert f"resume run {runs[0].name}" in (resumed / "train.log").read_text()
    assert after["mean_return"] == before["mean_return"]  # resumed at the end: the same policy
    assert not any((out / ".incoming").iterdir())


def test_a_failing_run_is_one_line_and_the_summary_is_still_written(
    ray_cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"
    # valid as a config, refused when the trainer makes the env
    assert cli_main(sweep_argv(out, 1, 512, "--set", "env.kwargs={no_such_kwarg: 1}")) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        "gail-robot sweep: error: 1 of 1 runs failed "
        "(seed_0: train exited with code 2 (see seed_0/train.log)); rerun the same command to retry"
    )
    assert "failed seed_0 (seed 0): train exited with code 2" in captured.out
    assert "no_such_kwarg" in (out / "seed_0" / "train.log").read_text()
    assert json.loads((out / "summary.json").read_text())["groups"][0]["n"] == 0
