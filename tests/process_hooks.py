"""Test helper: inject faults into the processes a test starts (the recorder and its publishing process)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def in_every_new_process(monkeypatch: pytest.MonkeyPatch, where: Path, code: str) -> None:
    """Run ``code`` at the start of every new Python process (through a ``sitecustomize`` on PYTHONPATH)."""
    where.mkdir()
    (where / "sitecustomize.py").write_text(code)
    paths = (str(where), os.environ.get("PYTHONPATH"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
