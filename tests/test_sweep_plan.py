"""The sweep without Ray: arguments, run directories, commands, reports, shipping helpers, user errors."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import h5py
import numpy as np
import pytest
from cli_runner import one_line_error, run_cli

from gail_robot.cli import main as cli_main
from gail_robot.errors import UserError
from gail_robot.sweep.plan import (
    EVAL_FILE,
    FRESH,
    RESUME,
    RunCost,
    RunPlan,
    SweepArgs,
    build_group_configs,
    check_compatible,
    cpu_need,
    group_name,
    parse_grid,
    plan_runs,
    resolve_config,
    split_values,
)
from gail_robot.sweep.report import (
    Reference,
    RunResult,
    demos_mean_return,
    group_curve,
    reference_returns,
    summarize,
    write_reports,
)
from gail_robot.sweep.runner import install_shipped, record_arguments
from gail_robot.sweep.task import RunJob, _local_demos, _relabel_demos, _RunLog, job_argv, pack_dir

REPO = Path(__file__).resolve().parents[1]
REACH_DEMOS = REPO / "datasets" / "experts" / "ArmReach-v0" / "demos.hdf5"


def sweep_args(**changes: Any) -> SweepArgs:
    base: dict[str, Any] = {
        "config": "InvertedPendulum-v5",
        "config_path": resolve_config("InvertedPendulum-v5"),
        "steps": 1000,
        "seeds": 2,
        "sets": ["algo=ppo"],
        "grid": {},
    }
    return SweepArgs(**{**base, **changes})


# ------------------------------------------------------------------------------ arguments and runs


def test_grid_values_split_on_top_level_commas_only() -> None:
    assert split_values("1,2") == ["1", "2"]
    assert split_values("[64,64],[256, 256]") == ["[64,64]", "[256, 256]"]
    assert split_values("{a: 1, b: 2},x") == ["{a: 1, b: 2}", "x"]


def test_grid_parsing_sorts_keys_and_refuses_malformed_flags() -> None:
    grid = parse_grid(["ppo.lr=1e-3,3e-4", "env.num_envs=4,8"], [])
    assert list(grid) == ["env.num_envs", "ppo.lr"]
    assert grid["ppo.lr"] == ["1e-3", "3e-4"]
    for bad, message in [
        (["ppo.lr"], "--grid expects key=value1,value2"),
        (["=1,2"], "--grid expects key=value1,value2"),
        (["ppo.lr="], "--grid expects key=value1,value2"),
        (["ppo.lr=1,,2"], "empty value"),
        (["ppo.lr=1,1"], "repeated"),
        (["ppo.lr=1", "ppo.lr=2"], "given twice"),
    ]:
        with pytest.raises(UserError, match=message):
            parse_grid(bad, [])
    with pytest.raises(UserError, match="in both --set and --grid"):
        parse_grid(["ppo.lr=1,2"], ["ppo.lr=3"])


def test_run_directories_are_deterministic_safe_and_distinct() -> None:
    args = sweep_args(
        grid={"env.id": ["gail_robot/ArmReach-v0", "gail_robot_ArmReach-v0"], "ppo.lr": ["1e-3"]}
    )
    runs = plan_runs(args)
    assert [r.name for r in runs] == [
        "env.id=gail_robot%2FArmReach-v0,ppo.lr=1e-3/seed_0",
        "env.id=gail_robot_ArmReach-v0,ppo.lr=1e-3/seed_0",
        "env.id=gail_robot%2FArmReach-v0,ppo.lr=1e-3/seed_1",
        "env.id=gail_robot_ArmReach-v0,ppo.lr=1e-3/seed_1",
    ]
    assert [r.seed for r in runs] == [0, 0, 1, 1]  # seed-major: a cut-short sweep is balanced
    assert [r.name for r in plan_runs(sweep_args(seed_start=5))] == ["seed_5", "seed_6"]
    assert group_name({"a": "x,y=z", "b": "[1, 2]"}) != group_name({"a": "x", "b": "y=z,b=[1, 2]"})
    long = group_name({"policy.hidden_sizes": "[" + ",".join(["256"] * 60) + "]"})
    assert len(long) <= 120 and "/" not in long


def test_a_rerun_must_describe_the_same_sweep_but_may_add_seeds(tmp_path: Path) -> None:
    stored = sweep_args(grid={"ppo.lr": ["1e-3", "3e-4"]}).to_json()
    check_compatible(stored, sweep_args(grid={"ppo.lr": ["3e-4", "1e-3"]}).to_json(), tmp_path)
    check_compatible(stored, sweep_args(seeds=5, grid={"ppo.lr": ["1e-3", "3e-4"]}).to_json(), tmp_path)
    for changed, flag in [
        ({"steps": 2000}, "--steps 1000, not 2000"),
        ({"seeds": 1}, "--seeds 2, not 1"),
        ({"seed_start": 1}, "--seed-start"),
        ({"sets": ["algo=trpo"]}, "--set algo=ppo, not algo=trpo"),
        ({"grid": {"ppo.lr": ["1e-3"]}}, "--grid ppo.lr=1e-3,3e-4"),
        ({"config": "Hopper-v5", "config_path": resolve_config("Hopper-v5")}, "config InvertedPendulum-v5"),
    ]:
        new = sweep_args(**{"grid": {"ppo.lr": ["1e-3", "3e-4"]}, **changed}).to_json()
        with pytest.raises(UserError, match=flag):
            check_compatible(stored, new, tmp_path)


def test_a_config_whose_comments_changed_continues_its_sweep(tmp_path: Path) -> None:
    original = tmp_path / "a.yaml"
    original.write_text("algo: ppo  # the generator\nppo:\n  lr: 3.0e-4\n  epochs: 10\n")
    stored = sweep_args(config_path=original).to_json()
    edited = tmp_path / "b.yaml"
    edited.write_text("# measured: 0.99\nppo:\n  epochs: 10\n  lr: 3.0e-4   # halved once\nalgo: ppo\n")
    check_compatible(stored, sweep_args(config_path=edited).to_json(), tmp_path)
    changed = tmp_path / "c.yaml"
    changed.write_text("algo: ppo\nppo:\n  lr: 1.0e-4\n  epochs: 10\n")
    with pytest.raises(UserError, match="other contents"):
        check_compatible(stored, sweep_args(config_path=changed).to_json(), tmp_path)
    # a sweep.json from before the content hash: the file's bytes decide
    older = {k: v for k, v in stored.items() if k != "config_content_sha256"}
    check_compatible(older, sweep_args(config_path=original).to_json(), tmp_path)
    with pytest.raises(UserError, match="other contents"):
        check_compatible(older, sweep_args(config_path=edited).to_json(), tmp_path)


def test_cpus_per_run_follow_the_vectorization() -> None:
    def config(vectorization: str, num_envs: int = 8, num_workers: int = 0, algo: str = "ppo") -> Any:
        env = SimpleNamespace(
            vectorization=vectorization, num_envs=num_envs, num_workers=num_workers, cpus_per_worker=2.0
        )
        return SimpleNamespace(algo=algo, env=env)

    assert cpu_need(config("batched"), 4, 8) == RunCost(4, 0, ("env.num_workers=4",))  # a core each, pinned
    assert cpu_need(config("batched", num_envs=2), 4, 8) == RunCost(2, 0, ("env.num_workers=2",))
    assert cpu_need(config("batched", num_workers=3), 16, 32) == RunCost(3)
    assert cpu_need(config("batched", num_envs=64, num_workers=32), 16, 32) == RunCost(16)  # never infeasible
    assert cpu_need(config("async", num_envs=6), 16, 32) == RunCost(6)
    assert cpu_need(config("sync"), 16, 32) == RunCost(1)
    assert cpu_need(config("batched", algo="sac"), 16, 32) == RunCost(1)
    # ray: the learner's CPU, and actors of their own (2 CPUs each) in what the rest of the cluster holds
    assert cpu_need(config("ray"), 16, 11) == RunCost(1, 10.0, ("env.num_workers=5",))
    assert cpu_need(config("ray", num_workers=2), 16, 11) == RunCost(1, 4.0)
    assert cpu_need(config("ray"), 16, 2).total == 3.0  # one actor at least


def test_train_commands_of_a_job(tmp_path: Path) -> None:
    job = RunJob(
        sweep_dir=str(tmp_path), sweep_id="x", name="seed_3", seed=3, mode=FRESH, config_text="", steps=500,
        sets=["algo=ppo", "ppo.lr=1e-3"], ray_address="10.0.0.1:6379",
    )  # fmt: skip
    run, config, demos = tmp_path / "seed_3", tmp_path / "c.yaml", tmp_path / "d.hdf5"
    assert job_argv(job, run, config, demos) == [
        "train", str(config), "--out", str(run), "--seed", "3", "--steps", "500", "--no-progress",
        "--demos", str(demos), "--set", "algo=ppo", "--set", "ppo.lr=1e-3", "--ray-address", "10.0.0.1:6379",
    ]  # fmt: skip
    job.mode, job.ray_address = RESUME, None
    assert job_argv(job, run, config, demos) == [
        "train", "--resume", str(run), "--no-progress",
        "--set", f"gail.demos={demos}", "--set", f"bc.demos={demos}",
    ]  # fmt: skip


def test_configs_are_checked_by_the_train_commands_rules() -> None:
    args = sweep_args(grid={"ppo.lr": ["1e-3", "fast"]})
    with pytest.raises(UserError, match=r"ppo\.lr must be a number, got 'fast'"):
        build_group_configs(args, plan_runs(args))
    args = sweep_args(grid={"ppo.lr": ["1e-3", "3e-4"]}, sets=["algo=ppo", "env.num_envs=2"])
    configs = build_group_configs(args, plan_runs(args))
    assert {name: c.ppo.lr for name, c in configs.items()} == {"ppo.lr=1e-3": 1e-3, "ppo.lr=3e-4": 3e-4}
    assert all(c.env.num_envs == 2 and c.algo == "ppo" for c in configs.values())


# ------------------------------------------------------------------------------ reports


def test_expert_return_is_the_mean_demo_return() -> None:
    with h5py.File(REACH_DEMOS, "r") as f:
        returns = [float(np.sum(f["data"][n]["rewards"][()], dtype=np.float64)) for n in f["data"]]
    mean, count = demos_mean_return(REACH_DEMOS)
    assert count == len(returns) == 50
    assert mean == pytest.approx(np.mean(returns), rel=1e-12)
    reference = reference_returns(None, -20.0, REACH_DEMOS)
    assert reference.normalize(mean) == pytest.approx(1.0) and reference.normalize(-20.0) == 0.0
    assert reference_returns(1000.0, 0.0, REACH_DEMOS).expert == 1000.0  # --expert-return wins
    with pytest.raises(UserError, match="need --expert-return R or --demos FILE"):
        reference_returns(None, 0.0, None)
    with pytest.raises(UserError, match="equals the random return"):
        reference_returns(5.0, 5.0, None)


def _result(name: str, seed: int, ret: float, curve: list[tuple[float, float, float]]) -> RunResult:
    evaluation = {
        "mean_return": ret,
        "std_return": 1.0,
        "success_rate": None,
        "env_steps": 300,
        "wall_s": 9.0,
    }
    return RunResult(RunPlan(name, seed, {}), evaluation, curve)


def test_summary_of_a_hand_computed_group() -> None:
    """Normalised scores 0, 0, 3 (returns 0, 0, 300 against an expert's 100): IQM 1 (nothing trimmed
    at 3 seeds) and the enumerable 95 % interval [0, 3] (tests/test_sweep_stats.py)."""
    reference = Reference(expert=100.0, random=0.0, source="test")
    results = [
        _result("seed_0", 0, 0.0, [(100, 1.0, 0.2), (200, 2.0, 0.95), (300, 3.0, 0.5)]),
        _result("seed_1", 1, 0.0, [(100, 1.5, 0.1), (200, 3.0, 0.3), (300, 4.5, 0.92)]),
        _result("seed_2", 2, 300.0, [(100, 2.0, 0.0), (200, 4.0, 0.1), (300, 6.0, 0.2)]),
    ]
    summary = summarize(results, [{}], reference)
    assert [r["normalized"] for r in summary["runs"]] == [0.0, 0.0, 3.0]
    assert set(summary["runs"][0]) == {
        "run_dir", "seed", "overrides", "mean_return", "std_return", "normalized", "success_rate",
        "env_steps", "wall_s",
    }  # fmt: skip
    (group,) = summary["groups"]
    assert group == {
        "overrides": {}, "n": 3, "mean": 1.0, "iqm": 1.0, "ci_low": 0.0, "ci_high": 3.0, "frac_ge_0.9": 1 / 3,
        # first evaluations >= 0.9: 200 steps / 2 s, 300 steps / 4.5 s, never -> median 300 steps, 4.5 s
        "median_steps_to_0.9": 300.0, "median_wall_to_0.9": 4.5,
    }  # fmt: skip


def test_group_curve_interpolates_onto_the_common_range() -> None:
    steps, mid, low, high = group_curve(
        [[(0, None, 0.0), (100, None, 1.0)], [(50, None, 0.0), (150, None, 0.0)]]
    )
    np.testing.assert_array_equal(steps, [50, 100])  # both runs cover 50 .. 100
    np.testing.assert_allclose(mid, [0.25, 0.5])  # mean of (0.5, 0) and (1, 0)
    assert np.all(low <= mid) and np.all(mid <= high)


def test_reports_of_a_sweep_directory(tmp_path: Path) -> None:
    args = sweep_args(seeds=2, grid={"ppo.lr": ["1e-3", "3e-4"]})
    runs = plan_runs(args)
    assert runs[3].name == "ppo.lr=3e-4/seed_1"
    scale = {"ppo.lr=1e-3/seed_0": 1, "ppo.lr=1e-3/seed_1": 2, "ppo.lr=3e-4/seed_0": 3}
    for run in runs[:3]:  # the last run never finished
        index = scale[run.name] - 1
        run_dir = tmp_path / run.name
        run_dir.mkdir(parents=True)
        rows = [
            {"env_steps": s, "wall_time": s / 100, "eval_return": 10.0 * s * (index + 1)} for s in (10, 20)
        ]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        ev = {"mean_return": 100.0 * (index + 1), "std_return": 0.0, "success_rate": 0.5, "env_steps": 20}
        (run_dir / EVAL_FILE).write_text(json.dumps({**ev, "wall_s": 0.2}))
    summary_path = write_reports(tmp_path, args, runs, Reference(400.0, 0.0, "--expert-return"))
    summary = json.loads(summary_path.read_text())
    assert [r["run_dir"] for r in summary["runs"]] == [r.name for r in runs[:3]]
    assert [(g["overrides"], g["n"]) for g in summary["groups"]] == [
        ({"ppo.lr": "1e-3"}, 2),
        ({"ppo.lr": "3e-4"}, 1),
    ]
    assert summary["groups"][0]["iqm"] == pytest.approx(0.375)  # (0.25 + 0.5) / 2
    assert (
        summary["groups"][0]["median_steps_to_0.9"] is None
    )  # 200 / 400 and 400 / 400 at 20 steps: 0.5, 1.0
    markdown = (tmp_path / "summary.md").read_text()
    assert "| ppo.lr=1e-3 | 2 | 0.38 | [0.25, 0.50] | 0.38 | 0.00 | 0.50 | – |" in markdown
    assert "| ppo.lr=3e-4/seed_0 | 0 | 300.0 ± 0.0 | 0.75 | 0.50 | 20 | 0 | 20 |" in markdown
    assert "Not finished (rerun the same command to resume them): ppo.lr=3e-4/seed_1" in markdown
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")


# ------------------------------------------------------------------------------ tasks and shipping


def test_shipped_run_directories_replace_the_old_one_whole(tmp_path: Path) -> None:
    source = tmp_path / "remote"
    (source / "checkpoints").mkdir(parents=True)
    (source / "checkpoints" / "latest.pt").write_bytes(b"new checkpoint")
    (source / EVAL_FILE).write_text("{}")
    sweep = tmp_path / "sweep"
    (sweep / "g=1" / "seed_0").mkdir(parents=True)
    (sweep / "g=1" / "seed_0" / "stale.txt").write_text("old")
    install_shipped(pack_dir(source), sweep, "g=1/seed_0")
    files = sorted(p.relative_to(sweep).as_posix() for p in sweep.rglob("*") if p.is_file())
    assert files == ["g=1/seed_0/checkpoints/latest.pt", f"g=1/seed_0/{EVAL_FILE}"]
    assert (sweep / "g=1/seed_0/checkpoints/latest.pt").read_bytes() == b"new checkpoint"
    assert not any((sweep / ".incoming").iterdir())


def test_demos_are_used_in_place_or_from_the_shipped_copy(tmp_path: Path) -> None:
    demos = tmp_path / "demos.hdf5"
    demos.write_bytes(b"driver's demos")
    job = RunJob(
        sweep_dir=str(tmp_path), sweep_id="x", name="seed_0", seed=0, mode=FRESH, config_text="", steps=1
    )
    job.demos, job.demos_sha256 = str(demos), "0" * 64  # another machine's file at the same path
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    local = _local_demos(job, b"shipped demos", scratch)
    assert local == scratch / "demos.hdf5" and local.read_bytes() == b"shipped demos"
    job.demos_sha256 = None
    assert _local_demos(job, None, scratch) == demos
    (tmp_path / "config.yaml").write_text(f"algo: gail\ngail:\n  demos: {local}\nbc:\n  demos: {local}\n")
    _relabel_demos(tmp_path, local, str(demos))
    assert (
        tmp_path / "config.yaml"
    ).read_text() == f"algo: gail\ngail:\n  demos: {demos}\nbc:\n  demos: {demos}\n"


def test_train_log_waits_for_the_trainer_to_create_the_run_directory(tmp_path: Path) -> None:
    run = tmp_path / "seed_0"
    log = _RunLog(run, "# header\n")
    log.write(b"early ")
    assert not run.exists()  # `train --out` refuses a non-empty directory: nothing written yet
    run.mkdir()
    log.write(b"late\n")
    log.close()
    assert (run / "train.log").read_text() == "# header\nearly late\n"


def test_the_training_subprocess_dies_with_its_parent(tmp_path: Path) -> None:
    """A parent that starts a child with the task's preexec hook, then is SIGKILLed: the child goes too."""
    script = textwrap.dedent(
        """
        import subprocess, sys, time
        from gail_robot.sweep.task import _die_with_parent
        child = subprocess.Popen(["sleep", "60"], preexec_fn=_die_with_parent())
        print(child.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.stdout.close()
    os.kill(child, 0)  # alive
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie (reaped later by init) is dead


# ------------------------------------------------------------------------------ user errors


def sweep_cli(*argv: str) -> list[str]:
    return [
        "sweep",
        "InvertedPendulum-v5",
        "--seeds",
        "2",
        "--steps",
        "1000",
        "--expert-return",
        "1000",
        *argv,
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["sweep", "NoSuchConfig", "--seeds", "2", "--steps", "9", "--expert-return", "1"],
            "config file not found",
        ),
        (sweep_cli("--grid", "ppo.lr"), "--grid expects key=value1,value2"),
        (sweep_cli("--seeds", "0"), "--seeds must be >= 1, got 0"),
        (sweep_cli("--demos", "missing.hdf5"), "demo file not found: missing.hdf5"),
        (
            ["sweep", "InvertedPendulum-v5", "--seeds", "2", "--steps", "9"],
            "need --expert-return R or --demos",
        ),
        (sweep_cli("--set", "ppo.nope=1"), "unknown config key 'ppo.nope'"),
        (sweep_cli("--report-only"), "no finished run of this sweep to report on"),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = cli_main([*argv, "--out", str(tmp_path / "sweep")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "sweep").exists()  # checked before anything is written


def test_out_that_is_a_file_or_another_sweep_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    assert cli_main([*sweep_cli(), "--out", str(file)]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "seed_0").mkdir()  # someone else's directory: a sweep would clear seed_0
    assert cli_main([*sweep_cli(), "--out", str(sweep)]) == 2
    assert f"{sweep} is not empty and holds no sweep.json: choose another --out" in capsys.readouterr().err
    assert (sweep / "seed_0").is_dir()
    record_arguments(sweep, sweep_args(sets=[], steps=1000))
    assert cli_main([*sweep_cli("--steps", "2000"), "--out", str(sweep)]) == 2
    assert f"{sweep} holds a sweep with --steps 1000, not 2000" in capsys.readouterr().err
    with (sweep / ".sweep.lock").open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert cli_main([*sweep_cli(), "--out", str(sweep)]) == 2
    assert f"another gail-robot sweep is running on {sweep}" in capsys.readouterr().err


def test_bad_grid_from_the_command_line_has_no_traceback(tmp_path: Path) -> None:
    result = run_cli(*sweep_cli("--grid", "ppo.lr=1,1"), "--out", str(tmp_path / "s"))
    assert one_line_error(result) == "gail-robot sweep: error: --grid ppo.lr: a value is repeated in '1,1'"
