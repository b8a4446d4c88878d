"""The run scaffold (gail_robot.algos.run.Run): schedules, checkpoints and retention, logs, resume state."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gail_robot.algos import run as run_module
from gail_robot.algos.config import config_from_dict
from gail_robot.algos.run import Run, reset_seed
from gail_robot.errors import UserError
from gail_robot.nets import GaussianActor, NetConfig
from gail_robot.policy_io import load_checkpoint, load_policy

ENV = "InvertedPendulum-v5"


def config(**run: object):
    return config_from_dict(
        {
            "algo": "ppo",
            "env": {"id": ENV},
            "run": {"progress": False, "tensorboard": False, "eval_episodes": 0, **run},
        }
    )


def payload(run: Run) -> dict:
    actor = GaussianActor(4, 1, NetConfig([8]))
    return run.payload(
        actor=actor,
        obs_norm={"mean": np.zeros(4), "var": np.ones(4), "clip": 10.0},
        action_low=np.full(1, -3.0, np.float32),
        action_high=np.full(1, 3.0, np.float32),
        meta={"algo": "test"},
        progress={"updates": 7},
        extra_state={"x": torch.arange(3)},
    )


def test_schedules_fire_once_per_interval_and_never_at_the_end(tmp_path: Path, monkeypatch) -> None:
    run = Run(config(total_steps=400, eval_interval=100, checkpoint_interval=150, eval_episodes=1), tmp_path)
    monkeypatch.setattr(
        run_module, "evaluation_row", lambda bundle, episodes, seed, evaluator=None: {"eval_return": bundle}
    )
    evaluated, checkpointed = [], []
    while run.env_steps < 400:
        run.env_steps += 64
        row = run.scheduled_evaluation(lambda: float(run.env_steps))
        if row:
            assert run.last_eval == row
            evaluated.append(row["eval_return"])
        if run.checkpoint_due():
            checkpointed.append(run.env_steps)
    # Due at the first step count past each interval; the one past the end is left to finish().
    assert evaluated == [128, 256, 320]
    assert checkpointed == [192, 320]
    assert (run.next_eval, run.next_checkpoint) == (500, 450)


def test_no_scheduled_evaluation_without_an_interval(tmp_path: Path) -> None:
    run = Run(config(total_steps=400, eval_interval=0), tmp_path)
    run.env_steps = 200
    assert run.scheduled_evaluation(lambda: pytest.fail("no evaluation is due")) == {}


def test_checkpoints_are_retained_newest_first_and_latest_follows(tmp_path: Path) -> None:
    run = Run(config(total_steps=1000, keep_checkpoints=2), tmp_path)
    for steps in (100, 200, 300):
        run.env_steps = steps
        run.save(payload(run))
    ckpts = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step_*.pt")) == ["step_0000000200.pt", "step_0000000300.pt"]
    assert load_checkpoint(ckpts / "latest.pt")["progress"]["env_steps"] == 300
    run.env_steps = 350
    final = run.save(payload(run), final=True)
    assert final == tmp_path / "final.pt"
    assert load_checkpoint(ckpts / "latest.pt")["progress"]["env_steps"] == 350  # final is also latest
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_run_that_cannot_resume_writes_final_only(tmp_path: Path) -> None:
    run = Run(config(), tmp_path)
    with run.session("test"):
        final = run.finish(
            lambda: pytest.fail("no evaluation episodes"), lambda: payload(run), resumable=False
        )
    assert final == tmp_path / "final.pt" and not (tmp_path / "checkpoints").exists()
    assert load_policy(tmp_path).meta["algo"] == "test"


def test_session_writes_config_and_metrics(tmp_path: Path) -> None:
    cfg = config(total_steps=300)
    run = Run(cfg, tmp_path / "run")
    with run.session("test"):
        for steps in (100, 200, 300):
            run.env_steps = steps
            run.progress(steps, {"x": "1"})
            run.write({"env_steps": steps, "loss": float("nan"), "wall_time": run.wall_time()})
    assert (tmp_path / "run" / "config.yaml").read_text() == cfg.to_yaml()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows] == [100, 200, 300]
    assert rows[0]["loss"] is None  # NaN is not JSON
    assert run.wall_time() >= rows[-1]["wall_time"] >= 0.0
    with pytest.raises(RuntimeError, match=r"outside Run\.session"):
        run.write({"env_steps": 1})


def test_resume_restores_counters_rngs_and_drops_later_metrics(tmp_path: Path) -> None:
    cfg = config(total_steps=1000, eval_interval=250, checkpoint_interval=300)
    run = Run(cfg, tmp_path)
    with run.session("test"):
        run.env_steps = 300
        assert run.checkpoint_due()
        run.last_eval = {"eval_return": 5.0}
        run.torch_rng.manual_seed(123)  # RNGs in some state that is not the seed's
        run.np_rng.random(5)
        torch.rand(3)
        run.write({"env_steps": 300})
        run.save(payload(run))
        expected = (torch.rand(2, generator=run.torch_rng), run.np_rng.random(2), torch.rand(2))
        run.env_steps = 400
        run.write({"env_steps": 400})  # after the checkpoint: redone by the resumed run

    torch.manual_seed(999)
    resumed = Run(cfg, tmp_path)
    data = resumed.resume()
    assert data["progress"]["updates"] == 7 and torch.equal(data["extra_state"]["x"], torch.arange(3))
    assert (resumed.env_steps, resumed.next_eval, resumed.next_checkpoint) == (300, 250, 600)
    assert resumed.last_eval == {"eval_return": 5.0}
    assert resumed.wall_time() > 0.0
    got = (torch.rand(2, generator=resumed.torch_rng), resumed.np_rng.random(2), torch.rand(2))
    torch.testing.assert_close(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    torch.testing.assert_close(got[2], expected[2])
    with resumed.session("test"):
        pass
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows] == [300]


def test_resume_refuses_another_env(tmp_path: Path) -> None:
    run = Run(config(), tmp_path)
    run.save(payload(run))
    other = config_from_dict({"algo": "ppo", "env": {"id": "Hopper-v5"}})
    with pytest.raises(UserError, match="cannot resume: checkpoint env 'InvertedPendulum-v5' differs"):
        Run(other, tmp_path).resume()


def test_resume_reads_on_policy_checkpoints_without_a_numpy_rng(tmp_path: Path) -> None:
    run = Run(config(), tmp_path)
    data = payload(run)
    del data["rng"]["numpy"]  # what the on-policy trainer wrote before the shared scaffold
    run.save(data)
    resumed = Run(config(), tmp_path)
    resumed.resume()
    np.testing.assert_array_equal(resumed.np_rng.random(3), np.random.default_rng(0).random(3))


def test_reset_seed_is_distinct_per_step_and_reproducible() -> None:
    seeds = [reset_seed(0, steps) for steps in range(0, 10_000, 500)]
    assert len(set(seeds)) == len(seeds)
    assert reset_seed(0, 500) == reset_seed(0, 500) != reset_seed(1, 500)
