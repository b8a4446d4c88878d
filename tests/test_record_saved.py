""" "saved" means saved (docs/DESIGN.md §3, §7): the recorder reports a demo as saved only once it is
on disk, and stops at the first failed write with one line naming what is safe and what is not."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import run_cli
from process_hooks import in_every_new_process

from gail_robot.data import DemoDataset
from gail_robot.data.validate import validate_file

ERROR = re.compile(
    r"gail-robot record: error: cannot write (?P<file>\S+): (?P<why>[^;]+); "
    r"(?P<saved>demo_0\.\.demo_\d+|demo_0) (are|is) saved, "
    r"(?P<lost>demo_\d+(, demo_\d+)*)( \(and the episode in progress\))? (were|was) not"
)


def _record(out: Path, episodes: int = 1000) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "record",
        "--env",
        "gail_robot/ArmReach-v0",
        "--device",
        "scripted",
        "--out",
        str(out),
        "--episodes",
        str(episodes),
        "--max-attempts",
        str(10 * episodes),
    )


def _check_stopped_cleanly(
    result: subprocess.CompletedProcess[str], out: Path
) -> tuple[re.Match[str], list[str]]:
    """The failure is the last line, nothing reported saved is missing, the file validates."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    error = ERROR.fullmatch(lines[-1])
    assert error is not None, lines[-1]
    reported = [line.split(":")[0][len("saved ") :] for line in lines[:-1] if line.startswith("saved demo_")]
    assert len(lines) == len(reported) + 1, result.stderr  # one line about the failure, no other
    assert reported == [f"demo_{i}" for i in range(len(reported))]
    saved_range = f"demo_0..demo_{len(reported) - 1}" if len(reported) > 1 else "demo_0"
    assert error["saved"] == saved_range
    assert error["lost"].split(", ")[0] == f"demo_{len(reported)}"
    assert validate_file(out) == []
    with DemoDataset(out) as ds:
        assert ds.demo_names == reported  # every demo reported saved, and nothing that was not
    return error, reported


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_stops_at_the_first_failed_write(small_disk: Path) -> None:
    out = small_disk / "demos.hdf5"
    result = _record(out)
    error, reported = _check_stopped_cleanly(result, out)
    assert error["why"] == "No space left on device"
    assert error["file"] == str(out)
    assert len(reported) >= 5  # the disk held several demos before it filled
    assert sorted(p.name for p in small_disk.iterdir()) == ["demos.hdf5"]  # no spare or lock left


# The third transaction fails as on a full disk, deep inside HDF5 (h5py's message buries errno 28).
FAIL_THIRD_WRITE = """
from gail_robot.data import transaction
original = transaction.Publisher._apply
calls = [0]
def apply(self, fresh, edits):
    calls[0] += 1
    if calls[0] == {n}:
        raise OSError("Unable to synchronously write data (file write failed: errno = 28, error message = "
                      "'No space left on device')")
    original(self, fresh, edits)
transaction.Publisher._apply = apply
"""


def test_failed_write_is_one_line_naming_what_is_safe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # edits applied: demo_0 (1) and the spare's catch-up (2), demo_1 (3, 4), demo_2 (5) fails
    in_every_new_process(monkeypatch, tmp_path / "hook", FAIL_THIRD_WRITE.replace("{n}", "5"))
    out = tmp_path / "demos.hdf5"
    error, reported = _check_stopped_cleanly(_record(out, episodes=10), out)
    assert error["why"] == "No space left on device"
    assert reported == ["demo_0", "demo_1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demos.hdf5", "hook"]


DIE_IN_SECOND_WRITE = """
import os
from gail_robot.data import transaction
original = transaction.Publisher.publish
calls = [0]
def publish(self, *args, **kwargs):
    calls[0] += 1
    if calls[0] == 2:
        os._exit(3)
    original(self, *args, **kwargs)
transaction.Publisher.publish = publish
"""


def test_publishing_process_dying_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    in_every_new_process(monkeypatch, tmp_path / "hook", DIE_IN_SECOND_WRITE)
    out = tmp_path / "demos.hdf5"
    error, reported = _check_stopped_cleanly(_record(out, episodes=10), out)
    assert error["why"] == "the publishing process exited with status 3"
    assert reported == ["demo_0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demos.hdf5", "hook"]
