"""Checkpoint directories: what an interrupted write leaves behind is removed when a run starts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from training.checkpoint import checkpoints_root, list_checkpoints, remove_partial_checkpoints


@pytest.fixture
def live_pid() -> Iterator[int]:
    """A process that runs for the test (not this one)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: its pid names no process now
    return proc.pid


def test_orphaned_temporary_directories_are_removed(tmp_path: Path, live_pid: int) -> None:
    root = checkpoints_root(tmp_path)
    complete = root / "step-00000003"
    orphans = [root / f".step-00000006.{dead_pid()}.tmp", root / ".step-00000009.tmp"]
    ours = root / f".step-00000012.{os.getpid()}.tmp"  # ours: we are not writing it now
    busy = root / f".step-00000006.{live_pid}.tmp"  # another live process may be writing this one
    for path in (complete, *orphans, ours, busy):
        path.mkdir(parents=True)
        (path / "model.safetensors").write_bytes(b"partial")
    (root / "notes.tmp").write_text("not ours")
    removed = remove_partial_checkpoints(tmp_path)
    assert sorted(removed) == sorted([*orphans, ours])
    assert not any(p.exists() for p in removed)
    assert complete.is_dir() and busy.is_dir() and (root / "notes.tmp").exists()
    assert list_checkpoints(tmp_path) == [complete]
    assert remove_partial_checkpoints(tmp_path / "nowhere") == []
