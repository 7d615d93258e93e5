"""Checkpoint directories: what an interrupted write leaves behind is removed when a run starts; the training
config written into one loads back equal."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from training.checkpoint import (
    checkpoint_dir,
    checkpoints_root,
    list_checkpoints,
    load_checkpoint_config,
    remove_partial_checkpoints,
    save_checkpoint,
)
from training.config import load_config

ROOT = Path(__file__).resolve().parent.parent


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


def test_the_config_saved_in_a_checkpoint_loads_back_equal(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs" / "train_tiny.yaml",
                      ["data.corpora=[{path: /c1, weight: 2}, {path: s3://b/c2}]", "model.unet.window=[1, 2, 2]",
                       "model.unet.attention_levels=[true, false]", "optim.betas=[0.8, 0.95]", "data.fps=7.5"])
    path = checkpoint_dir(tmp_path, 3)
    save_checkpoint(path, torch.nn.Linear(2, 2).state_dict(), None, {"step": 3}, cfg)
    again = load_checkpoint_config(path)
    assert again == cfg and again.to_dict() == cfg.to_dict()
    assert again.model.unet.window == (1, 2, 2) and again.data.corpora[1].path == "s3://b/c2"
    moved = load_checkpoint_config(path, ["model.vae=/elsewhere/vae"])  # what `videofactory sample --set` does
    assert moved.model.vae == "/elsewhere/vae" and moved.model.unet == cfg.model.unet
