"""The quality tables' archive (benchmarks/quality_tables.py): what a finished run keeps, and restoring it."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark_modules import load_benchmark

quality_tables = load_benchmark("quality_tables")


def _row(table: str, method: str):
    """The first row of ``table`` with ``method`` (rows are looked up by what they are, not position)."""
    return next(r for r in quality_tables.TABLES[table] if r.method == method)


def _finished_run(run_dir: Path) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "eval.json").write_text(json.dumps({"mean_return": 3000.0}))
    (run_dir / "config.yaml").write_text("algo: gail\n")
    rows = [
        {"env_steps": 4096, "disc_loss": 0.6},
        {"env_steps": 50176, "eval_return": 500.0, "wall_time": 30.0},
        {"env_steps": 54272, "disc_loss": 0.5, "eval_return": None},
        {"env_steps": 100352, "eval_return": 3000.0, "wall_time": 60.0},
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run_dir / "final.pt").write_bytes(b"weights")  # large in a real run: never archived


def test_archive_keeps_the_evaluation_rows_and_restore_puts_them_back(tmp_path):
    sweep = tmp_path / "sweep"
    _finished_run(sweep / "gail.generator=ppo" / "seed_0")
    (sweep / "gail.generator=ppo" / "seed_1").mkdir(parents=True)  # unfinished: no eval.json
    (sweep / "sweep.json").write_text("{}")
    (sweep / "summary.json").write_text('{"groups": []}')  # the sweep's fresh report
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "summary.json").write_text("stale")  # an older report of the same row
    assert quality_tables.archive_runs(sweep, archive) == 1
    assert (archive / "summary.json").read_text() == '{"groups": []}'  # never left stale beside new runs
    kept = archive / "gail.generator=ppo" / "seed_0"
    assert sorted(p.name for p in kept.iterdir()) == ["config.yaml", "eval.json", "metrics.jsonl"]
    rows = [json.loads(r) for r in (kept / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows] == [50176, 100352]
    assert not (archive / "gail.generator=ppo" / "seed_1").exists()

    fresh = tmp_path / "fresh"
    assert quality_tables.restore_runs(archive, fresh) == 1
    restored = fresh / "gail.generator=ppo" / "seed_0"
    assert sorted(p.name for p in restored.iterdir()) == ["config.yaml", "eval.json", "metrics.jsonl"]
    assert (restored / "metrics.jsonl").read_text() == (kept / "metrics.jsonl").read_text()
    assert (fresh / "sweep.json").is_file()
    assert quality_tables.restore_runs(archive, fresh) == 0  # present runs are left as they are


def test_an_airl_row_sweeps_its_airl_config_over_its_generators(tmp_path):
    row = quality_tables.TABLES["airl"][0]
    cmd = quality_tables.sweep_command(row, tmp_path / "sweep", 5, 17.9)
    assert cmd[cmd.index("sweep") + 1] == "airl/Hopper-v5"
    assert cmd[cmd.index("--demos") + 1].endswith("datasets/experts/Hopper-v5/demos.hdf5")
    assert "gail.generator=ppo" in cmd
    assert quality_tables.method_name(row, {"gail.generator": "trpo"}) == "AIRL-TRPO"
    bc = _row("hopper", "bc")
    assert quality_tables.method_name(bc, {}) == "BC"


def test_rows_left_out_by_method_still_show_their_kept_summary(tmp_path, monkeypatch):
    bc = _row("hopper", "bc")
    monkeypatch.setattr(quality_tables, "RESULTS", tmp_path / "results")
    kept = tmp_path / "results" / "hopper"
    kept.mkdir(parents=True)
    group = {
        "overrides": {},
        "n": 5,
        "iqm": 0.63,
        "ci_low": 0.22,
        "ci_high": 0.98,
        "mean": 0.62,
        "frac_ge_0.9": 0.4,
    }
    (kept / f"{bc.task}-bc.json").write_text(json.dumps({"runs": [], "groups": [group]}))
    # only the GAIL row is selected, and it is skipped too (no task matches): nothing runs
    assert quality_tables.main_table("hopper", tmp_path / "out", 5, ["Walker2d-v5"], methods=["gail"]) == 0
    table = (kept / "table.md").read_text()
    assert "| Hopper-v5 | BC | 5 | 0.63 | [0.22, 0.98] |" in table and "GAIL" not in table
    assert not (tmp_path / "out").exists()


def test_a_labelled_row_sweeps_into_its_own_directory(tmp_path):
    ppo, trpo, gp10, *_ = quality_tables.TABLES["airl"]
    assert (ppo.directory, trpo.directory, gp10.directory) == ("airl", "airl-trpo", "airl-gp10")
    cmd = quality_tables.sweep_command(trpo, tmp_path / "sweep", 5, 17.9)
    assert "gail.generator=trpo" in cmd and cmd[cmd.index("sweep") + 1] == "airl/Hopper-v5"


def test_a_variant_row_sets_its_override_and_names_it():
    """A row that differs from the shipped config by a ``--set`` says so in the table's method column."""
    gp10 = quality_tables.TABLES["airl"][2]
    cmd = quality_tables.sweep_command(gp10, Path("sweep"), 5, 17.9)
    assert cmd[cmd.index("gail.grad_penalty=10") - 1] == "--set" and "gail.generator=ppo" in cmd
    assert gp10.family == "airl"
    assert quality_tables.method_name(gp10, {"gail.generator": "ppo"}) == "AIRL-PPO, gradient penalty 10"
    classic = quality_tables.Row("CartPole-v1", "CartPole-v1", "gail", 1, variant="v")
    overrides = {"gail.generator": "ppo", "gail.max_demos": "4"}
    assert quality_tables.method_name(classic, overrides) == "GAIL-PPO, 4 demos, v"


def test_an_arm_gail_row_starts_every_run_from_its_own_bc(tmp_path):
    """The arm table's GAIL rows are BC + GAIL-PPO: ``init_from=bc`` on every run of the sweep."""
    rows = [r for r in quality_tables.TABLES["arm"] if r.method == "gail"]
    assert [r.task for r in rows] == ["ArmReach-v0", "ArmPush-v0", "ArmPickPlace-v0"]
    for row in rows:
        assert row.family == "bc+gail" and row.directory == "bc+gail"
        cmd = quality_tables.sweep_command(row, tmp_path, 5, -30.0)
        assert cmd[cmd.index("init_from=bc") - 1] == "--set" and "gail.generator=ppo" in cmd
        assert quality_tables.method_name(row, {"gail.generator": "ppo"}) == "BC + GAIL-PPO"
    bc = quality_tables.TABLES["arm"][0]
    assert bc.family == "bc" and quality_tables.method_name(bc, {}) == "BC"


def test_a_row_on_another_shipped_config_sweeps_it():
    """The Ant BC + GAIL row trains the shipped ``bc+gail/Ant-v5`` config, whose runs start from BC."""
    from gail_robot.algos.config import config_from_dict, load_yaml, shipped_config_path

    (row,) = [r for r in quality_tables.TABLES["walkers"] if r.task == "Ant-v5" and r.directory == "bc+gail"]
    cmd = quality_tables.sweep_command(row, Path("sweep"), 5, -38.4)
    assert cmd[cmd.index("sweep") + 1] == "bc+gail/Ant-v5"
    assert cmd[cmd.index("--demos") + 1].endswith("datasets/experts/Ant-v5/demos.hdf5")
    assert quality_tables.method_name(row, {"gail.generator": "ppo"}) == "BC + GAIL-PPO"
    path = shipped_config_path(row.config)
    assert path is not None and config_from_dict(load_yaml(path)).init_from == "bc"


def test_the_humanoid_from_scratch_row_starts_from_a_random_policy():
    """The stretch row trains ``scratch/Humanoid-v5``: no BC start, the from-scratch PPO step."""
    from gail_robot.algos.config import config_from_dict, load_yaml, shipped_config_path

    (row,) = [r for r in quality_tables.TABLES["humanoid"] if r.directory == "gail-scratch"]
    assert row.family == "gail"  # --methods gail-ppo runs it; bc+gail-* the BC-started rows
    cmd = quality_tables.sweep_command(row, Path("sweep"), 5, 111.4)
    assert cmd[cmd.index("sweep") + 1] == "scratch/Humanoid-v5"
    assert "init_from=bc" not in cmd and "run.eval_interval=100000" in cmd
    assert quality_tables.method_name(row, {"gail.generator": "ppo"}) == "GAIL-PPO, from scratch"
    path = shipped_config_path(row.config)
    assert path is not None
    config = config_from_dict(load_yaml(path))
    assert config.init_from is None and config.ppo.lr == 3e-4 and config.env.id == "Humanoid-v5"


def test_demos_the_repository_does_not_ship_are_recorded_once_from_its_expert(tmp_path, monkeypatch):
    import dataclasses
    import shutil

    import h5py

    quality = load_benchmark("quality")
    monkeypatch.setitem(quality.TASKS, "Hopper-v5", dataclasses.replace(quality.TASKS["Hopper-v5"], demos=2))
    monkeypatch.setattr(quality_tables, "REPO", tmp_path)
    expert = tmp_path / "datasets" / "experts" / "Hopper-v5"
    expert.mkdir(parents=True)
    shipped = quality_tables.RESULTS.parents[1] / "datasets" / "experts" / "Hopper-v5" / "policy.pt"
    shutil.copyfile(shipped, expert / "policy.pt")
    (expert / "demos.partial.hdf5").write_bytes(b"an interrupted recording")  # must not be appended to
    row = _row("hopper", "bc")

    quality_tables.ensure_demos(row)
    demos = expert / "demos.hdf5"
    with h5py.File(demos, "r") as f:
        assert len(f["data"]) == 2 and all(f["data"][k].attrs["success"] for k in f["data"])
    assert not (expert / "demos.partial.hdf5").exists()
    stamp = demos.stat().st_mtime_ns
    quality_tables.ensure_demos(row)  # present: left as it is
    assert demos.stat().st_mtime_ns == stamp
    cmd = quality_tables.sweep_command(row, tmp_path / "sweep", 5, 0.0)
    assert cmd[cmd.index("--demos") + 1] == str(demos)


def test_a_table_runs_any_of_its_own_tasks_and_names_them_for_another():
    """``--tasks`` takes the table's tasks (the classic ones too), and a task it lacks is one usage line."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)

    listed = run("--table", "classic", "--tasks", "MountainCar-v0", "--list")
    assert listed.returncode == 0, listed.stderr
    assert "MountainCar-v0 gail:" in listed.stdout and "CartPole-v1" not in listed.stdout
    only_gail = run("--table", "classic", "--tasks", "MountainCar-v0", "--methods", "gail-ppo", "--list")
    assert "MountainCar-v0 gail:" in only_gail.stdout and "MountainCar-v0 bc:" not in only_gail.stdout
    wrong = run("--table", "classic", "--tasks", "Hopper-v5", "--list")
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert "the classic table has no task Hopper-v5: Acrobot-v1, CartPole-v1, MountainCar-v0" in wrong.stderr
    assert run("--tasks", "CartPole-v1", "--list").returncode == 2  # the single-seed runner's tasks only


def test_the_interval_figure_marks_rows_that_have_not_finished_every_seed(tmp_path):
    row = _row("hopper", "gail")  # the GAIL row: one group per generator
    group = {"iqm": 1.0, "ci_low": 0.98, "ci_high": 1.02}
    summary = {
        "groups": [
            {**group, "overrides": {"gail.generator": "ppo"}, "n": 5},
            {**group, "overrides": {"gail.generator": "trpo"}, "n": 2},
            {**group, "overrides": {"gail.generator": "trpo"}, "n": 0},  # nothing finished: no bar
        ]
    }
    rows = quality_tables.interval_rows([(row, summary)], seeds=5)
    assert [(label, partial) for label, *_, partial in rows] == [
        ("Hopper-v5 GAIL-PPO", False),
        ("Hopper-v5 GAIL-TRPO (2 of 5 seeds)", True),
    ]
    quality_tables.plot_intervals([(row, summary)], tmp_path / "t.png", seeds=5)
    assert (tmp_path / "t.png").stat().st_size > 0


def test_the_expert_row_runs_the_shipped_policy_on_the_learners_evaluation_starts():
    """The reference row trains nothing: seed s is the shipped expert's 10 deterministic episodes from reset
    seed 20000 + s (a learner's final evaluation), normalised against the demos and the random return."""
    from gail_robot.evaluate import evaluate_policy
    from gail_robot.policy_io import load_policy
    from gail_robot.sweep.report import demos_mean_return

    row = _row("hopper", "expert")
    assert row.family == "expert" and quality_tables.method_name(row, {}) == "expert policy, as is"
    summary = quality_tables.expert_summary(row, seeds=2, random_ret=-20.0)
    (group,) = summary["groups"]
    assert group["overrides"] == {} and group["n"] == 2
    assert [r["seed"] for r in summary["runs"]] == [0, 1]
    demos, _ = demos_mean_return(quality_tables.demos_path(row))
    policy = load_policy(quality_tables.demos_path(row).parent / "policy.pt")
    direct = evaluate_policy(policy, 10, seed=20_001)
    run = summary["runs"][1]
    assert run["mean_return"] == direct.mean_return
    assert abs(run["normalized"] - (direct.mean_return + 20.0) / (demos + 20.0)) < 1e-12
    assert group["median_steps_to_0.9"] is None  # no training: nothing to reach
    table = quality_tables.table_markdown([(row, summary)])
    assert "| Hopper-v5 | expert policy, as is | 2 |" in table and "| – | — |" in table


def test_the_table_listing_names_the_expert_row_without_a_sweep(capsys, tmp_path):
    assert quality_tables.list_table("hopper", tmp_path, 5, methods=["expert"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    policy = quality_tables.demos_path(_row("hopper", "expert")).parent / "policy.pt"
    assert out == [f"Hopper-v5 expert: evaluate {policy} (nothing trained)"]


def test_no_two_tables_sweep_the_same_row():
    """A row trained by two tables would be run twice and summarised in two places that can disagree."""
    seen: dict[tuple, str] = {}
    for table, rows in quality_tables.TABLES.items():
        for row in rows:
            what = (row.config, row.env_id, row.steps, row.sets, row.grid, row.generators, row.method)
            assert what not in seen, f"{table} repeats a row of {seen.get(what)}: {row}"
            seen[what] = table
    assert {r.task for r in quality_tables.TABLES["walkers"]} == {"Walker2d-v5", "HalfCheetah-v5", "Ant-v5"}
