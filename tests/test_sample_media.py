"""The generated test media really have the properties the tests built on them rely on.

Other tests assume that ``three_scenes.mp4`` cuts at 3 s and 6 s, that ``rotated.mp4`` carries a
display matrix, and so on; if an ffmpeg upgrade silently changed any of that, those tests would pass
or fail for the wrong reason. These checks use ffprobe and PySceneDetect directly, not project code.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
from scenedetect import AdaptiveDetector, ContentDetector, SceneManager, open_video
from scenedetect.detector import SceneDetector

from demo.sample_videos import SAMPLE_CUTS, main, make_sample_videos, run_ffmpeg
from tests import media


@dataclass(frozen=True)
class Probe:
    """What ffprobe said about one file."""

    returncode: int
    stderr: str
    info: dict[str, Any]

    def streams(self, kind: str) -> list[dict[str, Any]]:
        """The streams of ``kind`` ("video" or "audio")."""
        return [s for s in self.info.get("streams", []) if s["codec_type"] == kind]

    @property
    def video(self) -> dict[str, Any]:
        """The only video stream."""
        (stream,) = self.streams("video")
        return stream


def ffprobe(path: Path, *extra: str) -> Probe:
    """Run ffprobe on ``path`` for format and streams (plus ``extra`` options) as JSON."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", *extra, "-of", "json", str(path)],
        capture_output=True, text=True, check=False,
    )
    return Probe(result.returncode, result.stderr, json.loads(result.stdout or "{}"))


def detected_cuts(path: Path, detector: SceneDetector) -> list[float]:
    """Cut times in seconds that the PySceneDetect ``detector`` finds in ``path``."""
    video = open_video(str(path), backend="pyav")
    manager = SceneManager()
    manager.add_detector(detector)
    manager.detect_scenes(video)
    return [start.seconds for start, _ in manager.get_scene_list()[1:]]


def frames_decoded_before_error(path: Path) -> int:
    """Decode ``path`` with PyAV and return how many frames came out before it raised."""
    count = 0
    with av.open(str(path)) as container, pytest.raises(av.InvalidDataError):
        for _ in container.decode(video=0):
            count += 1
    return count


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sample videos, rendered once per session, by file name."""
    return {p.name: p for p in make_sample_videos(tmp_path_factory.mktemp("samples"))}


@pytest.fixture(scope="session")
def bad_media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every bad and awkward input of ``tests/media.py``, written once per session, by name."""
    d = tmp_path_factory.mktemp("bad_media")
    makers = {**media.ALL_BAD, "rotated": media.rotated, "anamorphic": media.anamorphic,
              "variable_frame_rate": media.variable_frame_rate}
    return {name: make(d) for name, make in makers.items()}


# --- sample videos ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "size", "duration", "audio"),
    [
        ("three_scenes.mp4", (1280, 720), 9.0, False),
        ("long_scene.mp4", (1280, 720), 24.0, False),
        ("with_audio.mkv", (1920, 1080), 5.0, True),
    ],
)
def test_sample_properties(
    samples: dict[str, Path], name: str, size: tuple[int, int], duration: float, audio: bool
) -> None:
    """Each sample has the size, frame rate, duration and audio its recipe promises."""
    probe = ffprobe(samples[name])
    assert probe.returncode == 0, probe.stderr
    assert (probe.video["width"], probe.video["height"]) == size
    assert probe.video["codec_name"] == "h264" and probe.video["pix_fmt"] == "yuv420p"
    assert Fraction(probe.video["avg_frame_rate"]) == 25
    assert float(probe.info["format"]["duration"]) == pytest.approx(duration, abs=0.05)
    assert [s["codec_name"] for s in probe.streams("audio")] == (["aac"] if audio else [])


@pytest.mark.parametrize("detector", [AdaptiveDetector, ContentDetector])
@pytest.mark.parametrize("name", sorted(SAMPLE_CUTS))
def test_sample_cuts_are_detected(samples: dict[str, Path], name: str, detector: type[SceneDetector]) -> None:
    """Both default detectors find exactly the cuts in ``SAMPLE_CUTS`` (frames 75 and 150 at 25 fps)."""
    assert detected_cuts(samples[name], detector()) == pytest.approx(SAMPLE_CUTS[name], abs=1e-6)


def test_make_sample_videos_is_idempotent(samples: dict[str, Path]) -> None:
    """A second call keeps the existing files untouched and leaves no temporary files behind."""
    before = {p: p.stat().st_mtime_ns for p in samples.values()}
    dest = next(iter(samples.values())).parent
    assert make_sample_videos(dest) == list(before)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert sorted(p.name for p in dest.iterdir()) == sorted(SAMPLE_CUTS)


def test_main_prints_paths(samples: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m demo.sample_videos DEST`` prints one path per sample."""
    main([str(next(iter(samples.values())).parent)])
    assert capsys.readouterr().out.split() == [str(p) for p in samples.values()]


def test_run_ffmpeg_raises_with_stderr(tmp_path: Path) -> None:
    """A failing ffmpeg surfaces as RuntimeError carrying ffmpeg's own message."""
    with pytest.raises(RuntimeError, match="No such file or directory"):
        run_ffmpeg(["-i", str(tmp_path / "missing.mp4"), str(tmp_path / "out.mp4")])


# --- bad inputs --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["zero_length", "truncated", "not_a_video_text"])
def test_unreadable_inputs_fail_to_probe(bad_media: dict[str, Path], name: str) -> None:
    """Empty, index-less and non-media files make ffprobe fail outright."""
    probe = ffprobe(bad_media[name])
    assert probe.returncode != 0
    assert "Invalid data found when processing input" in probe.stderr


def test_image_probes_as_png(bad_media: dict[str, Path]) -> None:
    """A PNG named .mp4 is found by content: one png "video" stream, no duration."""
    probe = ffprobe(bad_media["not_a_video_image"])
    assert probe.returncode == 0
    assert probe.info["format"]["format_name"] == "png_pipe"
    assert probe.video["codec_name"] == "png"
    assert "duration" not in probe.info["format"]


def test_audio_only_has_no_video(bad_media: dict[str, Path]) -> None:
    """The audio-only file has one AAC stream and no video stream."""
    probe = ffprobe(bad_media["audio_only"])
    assert probe.returncode == 0
    assert probe.streams("video") == []
    assert [s["codec_name"] for s in probe.streams("audio")] == ["aac"]


@pytest.mark.parametrize("name", ["truncated_faststart", "corrupt_frames"])
def test_damage_shows_only_when_decoding(bad_media: dict[str, Path], name: str) -> None:
    """These probe as healthy h264 videos, yet PyAV raises part-way through decoding them."""
    probe = ffprobe(bad_media[name])
    assert probe.returncode == 0 and probe.stderr == ""
    assert probe.video["codec_name"] == "h264"
    assert 0 < frames_decoded_before_error(bad_media[name]) < int(probe.video["nb_frames"])


@pytest.mark.parametrize(("name", "size"), [("absurd_dimensions", (16, 16384)), ("tiny_dimensions", (8, 8))])
def test_dimensions(bad_media: dict[str, Path], name: str, size: tuple[int, int]) -> None:
    """The absurd and tiny videos are valid h264 with exactly the declared sizes."""
    probe = ffprobe(bad_media[name])
    assert probe.returncode == 0
    assert (probe.video["width"], probe.video["height"]) == size


def test_every_bad_input_is_written(bad_media: dict[str, Path]) -> None:
    """Each ``ALL_BAD`` function writes the file it returns, with the ``.mp4`` name the pipeline sees."""
    for name in media.ALL_BAD:
        assert bad_media[name].is_file() and bad_media[name].suffix == ".mp4"


# --- awkward but valid inputs ---------------------------------------------------------------------------

def test_rotated_has_display_matrix(bad_media: dict[str, Path]) -> None:
    """The rotated video is coded 1280x720 with a -90 degree display matrix (shown as portrait)."""
    video = ffprobe(bad_media["rotated"]).video
    assert (video["width"], video["height"]) == (1280, 720)
    assert [sd.get("rotation") for sd in video["side_data_list"]] == [-90]


def test_anamorphic_displays_at_16_9(bad_media: dict[str, Path]) -> None:
    """The PAL video is 720x576 with square-pixel-breaking SAR 64:45, i.e. 16:9 on screen."""
    video = ffprobe(bad_media["anamorphic"]).video
    assert (video["width"], video["height"]) == (720, 576)
    assert (video["sample_aspect_ratio"], video["display_aspect_ratio"]) == ("64:45", "16:9")


def test_variable_frame_rate_changes_frame_durations(bad_media: dict[str, Path]) -> None:
    """Frame durations really switch from 1/30 s to 1/10 s, so r_frame_rate and avg_frame_rate differ."""
    probe = ffprobe(bad_media["variable_frame_rate"], "-show_entries", "packet=duration_time")
    assert Fraction(probe.video["r_frame_rate"]) == 30
    assert Fraction(probe.video["avg_frame_rate"]) < 20
    durations = {round(float(p["duration_time"]), 4) for p in probe.info["packets"]}
    assert durations == {round(1 / 30, 4), 0.1}
