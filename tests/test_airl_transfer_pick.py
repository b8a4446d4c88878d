"""benchmarks/airl_transfer.py --pick best-eval: the kept checkpoint with the best in-training evaluation."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark_modules import load_benchmark

airl_transfer = load_benchmark("airl_transfer")


def test_best_evaluated_checkpoint_among_the_kept_ones(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert airl_transfer.best_evaluated_checkpoint(run) is None  # no metrics yet
    rows = [
        {"env_steps": 1000, "episode_return": 5.0},  # no evaluation in this row
        {"env_steps": 25000, "eval_return": 900.0},  # the best, but its checkpoint was not kept
        {"env_steps": 50000, "eval_return": 300.0},
        {"env_steps": 60000, "eval_return": None},  # a row that logged no evaluation
        {"env_steps": 75000, "eval_return": 700.0},
        {"env_steps": 100000, "eval_return": 200.0},
    ]
    text = "\n".join(json.dumps(r) for r in rows) + '\n{"env_steps": 1250'  # a row cut by a kill
    (run / "metrics.jsonl").write_text(text)
    for steps in (50000, 75000, 100000):
        (run / "checkpoints" / f"step_{steps:010d}.pt").write_bytes(b"")
    (run / "checkpoints" / "latest.pt").write_bytes(b"")
    assert airl_transfer.best_evaluated_checkpoint(run) == run / "checkpoints" / "step_0000075000.pt"
