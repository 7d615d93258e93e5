"""The commands a user types: help that explains, errors that say what to do, exit codes that mean something."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from demo import curate as demo
from jobs import curate as curate_job
from jobs import train as train_job
from jobs.cli import build_parser
from jobs.cli import main as cli_main

VIDEOFACTORY = str(Path(sys.executable).parent / "videofactory")
TRAIN_TINY = str(Path(__file__).resolve().parent.parent / "configs" / "train_tiny.yaml")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, check=False)


#: Each command and the options its help must name (what the README and the docs tell users to type).
OPTIONS = {
    "curate": ("--config", "--input", "--output", "--stages", "resume", "--set KEY=VALUE",
               "--set filter.text.max_area=0.01", "repeatable", "unknown key", "--dashboard", "Off by default"),
    "validate": ("corpus", "Exit status 0", "1 with a list of problems"),
    "stats": ("corpus", "--compare", "--out", "stats.json", "report.html", "--no-gallery"),
    "verify-sources": ("corpus", "--out", "--hash", "--concurrency", "--rate", "--set KEY=VALUE", "summary.json",
                       "download.timeout_s=10"),
    "train": ("--config", "--output", "--steps", "--no-resume", "--ray", "--num-workers", "--max-failures",
              "--set KEY=VALUE", "--set optim.lr=1e-4"),
    "encode": ("--config", "--corpus", "--out", "--actors", "--set KEY=VALUE", "ray job submit", "resumes",
               "GPU actors"),
    "sample": ("--checkpoint", "--prompt", "--out", "--steps", "--guidance", "--seed", "--frames", "--fps", "--no-ema",
               "--set KEY=VALUE", "for this sample only", "--set model.vae="),
    "evaluate": ("--checkpoint", "--corpus", "--out", "--clip-model", "--i3d-weights", "--no-ema", "--no-samples",
                 "--set KEY=VALUE", "heldout_loss", "fvd", "clipsim"),
    "ablate": ("--config", "--variants", "--steps", "--seeds", "--out", "--last", "--no-eval", "--set KEY=VALUE",
               "every arm's config", "skips finished arms"),
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
    assert "{curate,validate,stats,verify-sources,train,encode,sample,evaluate,ablate}" in text
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
    assert "invalid choice: 'dance'" in said
    assert "'curate', 'validate', 'stats', 'verify-sources', 'train', 'encode', 'sample'" in said
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


# --- --set: dotted overrides of any config key -----------------------------------------------------------------


def test_curate_set_overrides_reach_the_config(tmp_path: Path):
    args = build_parser().parse_args([
        "curate", "--input", str(tmp_path), "--set", "output=" + str(tmp_path / "from-set"),
        "--set", "filter.text.max_area=0.01", "--set", "caption.enabled=false",
        "--set", "split.adaptive={adaptive_threshold: 5}", "--set", "stages=[download, probe, split]",
    ])
    cfg = curate_job.config_from_args(args)
    assert cfg.filter.text.max_area == 0.01 and cfg.filter.text.width == 640
    assert cfg.caption.enabled is False
    assert cfg.split.adaptive == {"adaptive_threshold": 5}
    assert cfg.stages == ["download", "probe", "split"]
    assert (cfg.input, cfg.output) == (str(tmp_path), str(tmp_path / "from-set"))
    # an explicit option is an override too, and wins over --set of the same key
    args = build_parser().parse_args(["curate", "--input", str(tmp_path), "--output", str(tmp_path / "explicit"),
                                      "--set", f"output={tmp_path / 'from-set'}", "--stages", "download"])
    cfg = curate_job.config_from_args(args)
    assert cfg.output == str(tmp_path / "explicit") and cfg.stages == ["download"]


def test_curate_set_applies_on_top_of_the_config_file(tmp_path: Path):
    config = tmp_path / "job.yaml"
    config.write_text("caption:\n  enabled: true\n  prompt: a video of\nfilter:\n  text:\n    max_area: 0.02\n")
    args = build_parser().parse_args(["curate", "--config", str(config), "--input", str(tmp_path), "--output",
                                      str(tmp_path / "o"), "--set", "caption.enabled=false"])
    cfg = curate_job.config_from_args(args)
    assert cfg.caption.enabled is False and cfg.caption.prompt == "a video of" and cfg.filter.text.max_area == 0.02


def test_train_set_overrides_reach_the_config(tmp_path: Path):
    args = build_parser().parse_args([
        "train", "--config", TRAIN_TINY, "--steps", "7", "--output", str(tmp_path / "run"),
        "--set", "optim.lr=0.001", "--set", f"data.corpora=[{{path: {tmp_path / 'c'}, weight: 2}}]",
        "--set", "model.unet.attention=factorized", "--set", "steps=99",
    ])
    cfg = train_job.config_from_args(args)
    assert cfg.optim.lr == 0.001 and cfg.model.unet.attention == "factorized"
    assert [(c.path, c.weight) for c in cfg.data.corpora] == [(str(tmp_path / "c"), 2.0)]
    assert cfg.steps == 7, "--steps is explicit: it wins over --set steps"
    assert cfg.output == str(tmp_path / "run")


@pytest.mark.parametrize(("argv", "said"), [
    (["--set", "filter.text.max_aera=0.01"], ["filter.text.max_aera: unknown config key", "max_area"]),
    (["--set", "caption.enabled=maybe"], ["caption.enabled: Input should be a valid boolean", "'maybe'"]),
    (["--set", "split.detector=histogram"],
     ["split.detector: Input should be 'adaptive', 'content' or 'transnetv2'", "'histogram'"]),
])
def test_a_bad_set_on_curate_is_exit_2_naming_it(tmp_path: Path, caplog, argv: list[str], said: list[str]):
    assert cli_main(["curate", "--input", str(tmp_path), "--output", str(tmp_path / "o"), *argv]) == 2
    assert all(s in caplog.text for s in said), caplog.text
    assert not (tmp_path / "o").exists(), "nothing started"


def test_a_bad_set_on_train_is_exit_2_naming_it(tmp_path: Path, caplog):
    assert cli_main(["train", "--config", TRAIN_TINY, "--output", str(tmp_path / "run"),
                     "--set", "optim.learning_rate=1"]) == 2
    assert "optim.learning_rate: unknown config key" in caplog.text and "lr" in caplog.text
    assert cli_main(["train", "--config", TRAIN_TINY, "--output", str(tmp_path / "run"),
                     "--set", "data.batch_size=0"]) == 2
    assert "data.batch_size: Input should be greater than or equal to 1" in caplog.text
    assert not (tmp_path / "run").exists(), "nothing started"


@pytest.mark.parametrize("command", [["curate"], ["train", "--config", TRAIN_TINY], ["sample", "--checkpoint", "x",
                                                                                     "--prompt", "p"]])
def test_a_set_without_equals_is_a_usage_error(command: list[str], capsys):
    said = misuse([*command, "--set", "caption.enabled"], capsys)
    assert "argument --set: --set 'caption.enabled': expected KEY=VALUE" in said


def test_set_works_on_the_ray_job_entry_point(tmp_path: Path):
    """``python -m jobs.curate`` (what ``ray job submit`` runs) takes --set too, and refuses a typo with exit 2."""
    result = run(sys.executable, "-m", "jobs.curate", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                 "--set", "filter.motion.min_motoin=0.1")
    assert result.returncode == 2
    assert "filter.motion.min_motoin: unknown config key" in result.stderr and "min_motion" in result.stderr
