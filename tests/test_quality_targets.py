"""The status board of the quality tables (benchmarks/quality_targets.py): each row against its target."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark_modules import load_benchmark

quality_tables = load_benchmark("quality_tables")
quality_targets = load_benchmark("quality_targets")


def _group(overrides: dict[str, str], n: int, iqm: float, ci_low: float) -> dict[str, object]:
    return {"overrides": overrides, "n": n, "iqm": iqm, "ci_low": ci_low, "ci_high": iqm + 0.01}


def _write(results: Path, table: str, name: str, summary: dict[str, object]) -> None:
    (results / table).mkdir(parents=True, exist_ok=True)
    (results / table / name).write_text(json.dumps(summary))


def test_each_row_is_judged_by_its_own_target_and_unrun_rows_are_listed(tmp_path):
    ppo, trpo = {"gail.generator": "ppo"}, {"gail.generator": "trpo"}
    # Hopper GAIL: PPO meets IQM >= 0.95 with CI low >= 0.90; TRPO's IQM passes but its CI low does not.
    _write(
        tmp_path,
        "hopper",
        "Hopper-v5-gail.json",
        {"groups": [_group(ppo, 5, 1.0, 0.99), _group(trpo, 5, 0.97, 0.85)]},
    )
    # ArmPush BC is judged by the success rate's IQM, not the normalised score; 3 of 5 seeds so far.
    runs = [{"overrides": {}, "success_rate": rate} for rate in (1.0, 0.9, 1.0)]
    _write(tmp_path, "arm", "ArmPush-v0-bc.json", {"groups": [_group({}, 3, 0.5, 0.4)], "runs": runs})
    entries = {(e["table"], e["task"], e["method"]): e for e in quality_targets.overview_rows(tmp_path)}

    assert entries["hopper", "Hopper-v5", "GAIL-PPO"]["status"] == "**met**"
    assert entries["hopper", "Hopper-v5", "GAIL-TRPO"]["status"] == "not met"
    assert entries["hopper", "Hopper-v5", "BC"]["status"] == "to run"
    push = entries["arm", "ArmPush-v0", "BC"]
    assert push["target"] == "success IQM ≥ 0.90" and push["status"] == "on track, 3 of 5 seeds"
    # each row belongs to one table: Hopper's rows are the hopper table's only
    assert not [key for key in entries if key[0] != "hopper" and key[1:] == ("Hopper-v5", "GAIL-PPO")]
    # every grid point of a row that never ran, with the classic targets only where the issue sets them
    cartpole = [e for (table, task, _), e in entries.items() if task == "CartPole-v1" and table == "classic"]
    assert len(cartpole) == 4 + 2 * 4 and all(e["status"] == "to run" for e in cartpole)
    targeted = {e["method"] for e in cartpole if e["target"]}
    assert targeted == {"GAIL-PPO, 1 demo", "GAIL-TRPO, 1 demo"}
    humanoid = entries["humanoid", "Humanoid-v5", "GAIL-PPO, from scratch"]
    assert humanoid["target"] == "IQM ≥ 0.80"


def test_the_board_counts_what_is_met_and_what_is_left(tmp_path):
    _write(
        tmp_path,
        "hopper",
        "Hopper-v5-gail.json",
        {
            "groups": [
                _group({"gail.generator": "ppo"}, 5, 1.0, 0.99),
                _group({"gail.generator": "trpo"}, 5, 0.5, 0.2),
            ]
        },
    )
    assert quality_targets.main_overview(tmp_path) == 0
    text = (tmp_path / "overview.md").read_text()
    assert (
        "| hopper | Hopper-v5 | GAIL-TRPO | 5 of 5 | 0.50 [0.20, 0.51] | — "
        "| IQM ≥ 0.95, CI low ≥ 0.90 | not met |" in text
    )
    rows = len(quality_targets.overview_rows(tmp_path))
    assert f"{rows} rows;" in text and "1 met, 1 not met over 5 seeds" in text
