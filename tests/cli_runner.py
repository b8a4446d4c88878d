"""Test helpers shared by the CLI tests: run `gail-robot` in a subprocess, read a one-line error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: A small, quick SAC for the CLI smoke runs (InvertedPendulum-v5): ``--set`` pairs.
SAC_TINY = [
    "--set",
    "sac.hidden_sizes=[32, 32]",
    "--set",
    "sac.batch_size=32",
    "--set",
    "sac.learning_starts=100",
]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m gail_robot.cli ARGS`` as a user would run it (exit code, stdout, stderr captured)."""
    return subprocess.run(
        [sys.executable, "-m", "gail_robot.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command (asserts non-zero exit, one line, no traceback)."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]
