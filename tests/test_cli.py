"""The commands a user types: help that explains, errors that say what to do, exit codes that mean something."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from demo import curate as demo
from jobs.cli import main as cli_main

VIDEOFACTORY = str(Path(sys.executable).parent / "videofactory")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, check=False)


#: Each command and the options its help must name (what the README and the docs tell users to type).
OPTIONS = {
    "curate": ("--config", "--input", "--output", "--stages", "resume"),
    "validate": ("corpus", "Exit status 0", "1 with a list of problems"),
    "stats": ("corpus", "--compare", "--out", "stats.json", "report.html"),
    "train": ("--config", "--output", "--steps", "--no-resume", "--ray", "--num-workers", "--max-failures"),
    "sample": ("--checkpoint", "--prompt", "--out", "--steps", "--guidance", "--seed", "--frames", "--fps", "--no-ema"),
}


def help_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        cli_main(argv)
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare words


def misuse(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """What argparse says about ``argv`` (it must exit 2, the usage error status)."""
    with pytest.raises(SystemExit) as exited:
        cli_main(argv)
    assert exited.value.code == 2
    return " ".join(capsys.readouterr().err.split())


def test_help_lists_every_command(capsys):
    text = help_text(["--help"], capsys)
    assert "{curate,validate,stats,train,sample}" in text
    for command in OPTIONS:
        assert f"{command} " in text


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_help_names_each_commands_options(command, capsys):
    text = help_text([command, "--help"], capsys)
    assert text.startswith(f"usage: videofactory {command}")
    for option in OPTIONS[command]:
        assert option in text, (command, option)


@pytest.mark.parametrize("command", [
    [VIDEOFACTORY, "curate", "--help"],
    [sys.executable, "-m", "jobs.curate", "--help"],
    [sys.executable, "-m", "demo.curate", "--help"],
])
def test_installed_entry_points_answer_help(command):
    result = run(*command)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and "--output" in result.stdout


def test_misuse_is_exit_2_with_what_is_wrong(capsys):
    assert "the following arguments are required: command" in misuse([], capsys)
    said = misuse(["dance"], capsys)
    assert "invalid choice: 'dance'" in said and "'curate', 'validate', 'stats', 'train', 'sample'" in said
    assert "videofactory train: error: the following arguments are required: --config" in misuse(["train"], capsys)
    said = misuse(["sample", "--prompt", "a dog"], capsys)
    assert "videofactory sample: error: the following arguments are required: --checkpoint" in said
    said = misuse(["sample", "--checkpoint", "x", "--prompt", "p", "--steps", "abc"], capsys)
    assert "argument --steps: invalid int value: 'abc'" in said
    assert "unrecognized arguments: --inptu" in misuse(["curate", "--inptu", "x"], capsys)


def test_a_config_with_a_typo_is_exit_2_naming_it(tmp_path: Path, caplog):
    config = tmp_path / "job.yaml"
    config.write_text("split:\n  max_duraton: 5\n")
    assert cli_main(["curate", "--config", str(config), "--input", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    assert "max_duraton" in caplog.text and "max_duration" in caplog.text
    assert not (tmp_path / "o").exists(), "nothing started"
    assert cli_main(["curate", "--config", str(tmp_path / "absent.yaml"), "--input", str(tmp_path),
                     "--output", str(tmp_path / "o")]) == 2
    assert "absent.yaml" in caplog.text


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
