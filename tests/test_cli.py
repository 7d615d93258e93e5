"""The commands a user types: help that explains, errors that say what to do, exit codes that mean something."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobs import demo

VIDEOFACTORY = str(Path(sys.executable).parent / "videofactory")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("command", [
    [VIDEOFACTORY, "--help"],
    [VIDEOFACTORY, "curate", "--help"],
    [VIDEOFACTORY, "validate", "--help"],
    [sys.executable, "-m", "jobs.curate", "--help"],
    [sys.executable, "-m", "jobs.demo", "--help"],
])
def test_help_explains_the_command(command):
    result = run(*command)
    assert result.returncode == 0
    assert len(result.stdout) > 200 and "usage:" in result.stdout


def test_curate_help_names_every_option():
    text = run(VIDEOFACTORY, "curate", "--help").stdout
    for option in ("--config", "--input", "--output", "--stages", "resume"):
        assert option in text


def test_curate_without_input_says_what_to_give(tmp_path: Path):
    result = run(VIDEOFACTORY, "curate", "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "no input" in result.stderr and "--input" in result.stderr


def test_curate_with_an_unknown_stage_lists_the_stages(tmp_path: Path):
    result = run(VIDEOFACTORY, "curate", "--input", str(tmp_path), "--output", str(tmp_path / "o"), "--stages", "dance")
    assert result.returncode == 2
    assert "unknown stage" in result.stderr and "download" in result.stderr


def test_validate_fails_on_a_directory_that_is_no_corpus(tmp_path: Path):
    result = run(VIDEOFACTORY, "validate", str(tmp_path))
    assert result.returncode == 1
    assert "manifest.json" in result.stdout and "index/" in result.stdout


def test_demo_makes_its_own_videos_when_the_shared_ones_are_absent(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(demo, "SHARED_VIDEOS", tmp_path / "absent")
    videos = demo.demo_input(tmp_path)
    assert sorted(p.name for p in videos.iterdir()) == ["long_scene.mp4", "three_scenes.mp4", "with_audio.mkv"]
    config = demo.write_job_config(tmp_path, videos, tmp_path / "corpus", tmp_path / "model")
    text = config.read_text()
    assert str(videos.resolve()) in text and str((tmp_path / "corpus").resolve()) in text
    assert str(tmp_path / "model") in text
