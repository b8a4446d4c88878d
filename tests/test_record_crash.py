"""Crash safety: SIGKILL the recorder at random instants, also in the middle of writing an episode.

Each round starts ``gail-robot record`` (the real CLI code, in a child process) appending to the same
file and kills it with SIGKILL: the recorder alone (its publishing process then finishes the
episodes it was handed and exits), or the recorder with its publishing process (the whole process
group, as a crash of the session would), aimed inside a write. A ``sitecustomize`` hook makes every
process announce ``BEGIN``/``END`` around each publish, so the test knows which episodes were saved
and whether the kill landed inside a write. After every kill the file must open and validate
without repair, keep every demo saved before (bit for bit), and hold every episode reported saved.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gail_robot.data import DemoDataset
from gail_robot.data.validate import validate_file

# Loaded by every Python process of the round (the CLI and its publishing process): the
# publisher announces its transactions on stdout, which both processes share with the test.
HOOK = r"""
import sys
from gail_robot.data import transaction
original = transaction.Publisher.publish
def announced(self, edit, create=None, replayable=True):
    print("BEGIN", flush=True)
    original(self, edit, create, replayable)
    print("END", flush=True)
transaction.Publisher.publish = announced
"""

KILLS = 24


def _fingerprints(path: Path) -> dict[str, str]:
    ds = DemoDataset(path)
    out = {}
    for demo in ds:
        h = hashlib.sha256()
        for arr in (demo.actions, demo.states, demo.final_state, demo.obs["state"], demo.next_obs["state"]):
            h.update(np.ascontiguousarray(arr).tobytes())
        out[demo.name] = h.hexdigest()
    ds.close()
    return out


def _start(path: Path, hook: Path, seed: int, fsync: bool) -> subprocess.Popen[str]:
    args = ["record", "--env", "InvertedPendulum-v5", "--device", "random", "--out", str(path)]
    args += ["--episodes", "1000000", "--seed", str(seed), "--max-steps", "40"]
    args += [] if fsync else ["--no-fsync"]
    pythonpath = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.Popen(
        [sys.executable, "-u", "-m", "gail_robot.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": pythonpath},
        start_new_session=True,  # its own process group, killed as one in the group rounds
    )


def test_sigkill_at_random_moments_loses_at_most_the_episode_in_progress(tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    data = tmp_path / "data"
    data.mkdir()
    path = data / "demos.hdf5"
    rng = np.random.default_rng(1234)
    known: dict[str, str] = {}
    mid_write = outside = 0
    for round_ in range(KILLS):
        # odd rounds kill the process group inside writes (with fsync: long ones); even rounds
        # kill the recorder alone at any time
        group = bool(round_ % 2)
        proc = _start(path, hook, seed=1000 * round_, fsync=group)
        assert proc.stdout is not None
        # wait for the first transaction so the kill lands while recording, not while importing
        markers = [proc.stdout.readline().strip()]
        assert markers[0] == "BEGIN", f"recorder did not start: {markers[0]!r}"
        if group:
            # aim inside a transaction: right after a BEGIN, within a typical write's duration
            for _ in range(int(rng.integers(0, 5))):
                markers.append(proc.stdout.readline().strip())
                while markers[-1] != "BEGIN":
                    markers.append(proc.stdout.readline().strip())
            time.sleep(float(rng.uniform(0.0, 0.004)))
        else:
            time.sleep(float(rng.uniform(0.0, 0.25)))
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.send_signal(signal.SIGKILL)
        markers += proc.stdout.read().split()  # until every process of the round has exited
        proc.stdout.close()
        proc.wait()
        completed = markers.count("END")
        if markers[-1] == "BEGIN":
            mid_write += 1
        else:
            outside += 1

        assert validate_file(path) == [], f"round {round_}: file invalid after SIGKILL"
        now = _fingerprints(path)
        for name, digest in known.items():
            assert now.get(name) == digest, f"round {round_}: {name} changed or vanished"
        new = set(now) - set(known)
        # every reported save is on disk; at most the transaction cut by the kill may also be there
        assert completed <= len(new) <= completed + 1, (round_, completed, len(new))
        if not group:  # the publishing process outlived the recorder and finished its writes
            assert markers[-1] == "END" and len(new) == completed, (round_, markers[-3:], len(new))
        known = now
    assert mid_write >= KILLS // 4, f"only {mid_write} of {KILLS} kills landed inside a write"
    # a clean run afterwards appends and leaves nothing hidden behind
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gail_robot.cli",
            "record",
            "--env",
            "InvertedPendulum-v5",
            "--device",
            "random",
            "--out",
            str(path),
            "--episodes",
            "2",
            "--seed",
            "7",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert len(_fingerprints(path)) >= len(known) + 2
    assert validate_file(path) == []
    assert [p.name for p in data.iterdir()] == ["demos.hdf5"]
    print(f"{KILLS} kills: {mid_write} inside a write, {outside} between writes; {len(known)} demos kept")
