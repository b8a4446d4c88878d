"""The README's main job runs end to end (tiny budget): record -> train -> eval -> export --verify."""

import json
import subprocess
import sys
from pathlib import Path


def test_quickstart_tiny_budget(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gail_robot.cli",
            "quickstart",
            "--out",
            str(out),
            "--demos",
            "2",
            "--steps",
            "2048",
            "--episodes",
            "1",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    assert Path(summary["policy"]).is_file()
    assert (out / "run" / "final.pt").is_file()
    assert "verify: OK" in result.stdout + result.stderr
    evaluation = next(json.loads(line) for line in result.stdout.splitlines() if line.startswith("{"))
    assert evaluation["episodes"] == 1 and 0.0 <= evaluation["success_rate"] <= 1.0


def test_quickstart_refuses_a_non_empty_out(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = subprocess.run(
        [sys.executable, "-m", "gail_robot.cli", "quickstart", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "already exists and is not empty" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"
