"""The probe stage reports what a viewer sees (display size, rotation, aspect, timing) and rejects
anything that is not a usable video with a specific, machine-readable reason.

Real files from ``../shared/testvideos`` pin the geometry and timing against their recorded ffprobe
properties; the damaged inputs of ``tests/media.py`` pin the rejection reasons.
"""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from curation.config import ProbeConfig, SplitConfig
from curation.errors import Rejection
from curation.ffmpeg import ffprobe_json
from curation.probe import probe
from curation.split import split
from tests import media

CFG = ProbeConfig()


def probe_shared(shared_videos: Path, name: str) -> dict:
    return probe(str(shared_videos / name), CFG)


# --- geometry and timing of real files ----------------------------------------------------------


def test_rotated_phone_video_probes_as_upright_portrait(shared_videos: Path) -> None:
    info = probe_shared(shared_videos, "pyscenedetect/issue-134-rotate.mp4")
    assert (info["width"], info["height"]) == (1280, 544)  # as stored
    assert info["rotation"] == -90
    assert (info["display_width"], info["display_height"]) == (544, 1280)
    assert info["display_aspect"] < 1


def test_anamorphic_video_probes_at_its_16_9_display_size(shared_videos: Path) -> None:
    info = probe_shared(shared_videos, "pyscenedetect/issue-195-aspect-ratio.mp4")
    assert (info["width"], info["height"]) == (704, 576)
    assert info["sar"] == "16:11"
    assert info["rotation"] == 0
    assert (info["display_width"], info["display_height"]) == (1024, 576)
    assert info["display_aspect"] == pytest.approx(16 / 9, abs=1e-3)


def test_variable_frame_rate_file_is_flagged_vfr(shared_videos: Path) -> None:
    info = probe_shared(shared_videos, "pyscenedetect/goldeneye-vfr-drop3.mp4")
    assert info["vfr"] is True
    assert info["fps"] == pytest.approx(24000 / 1001)  # nominal rate
    assert info["avg_fps"] == pytest.approx(16.0509, abs=1e-3)  # every third frame dropped
    assert info["nb_frames"] == 160


def test_constant_frame_rate_file_is_not_vfr_and_has_ntsc_rate(shared_videos: Path) -> None:
    info = probe_shared(shared_videos, "pyscenedetect/testvideo.mp4")
    assert info["vfr"] is False
    assert info["fps"] == pytest.approx(29.97, abs=1e-3)
    assert (info["display_width"], info["display_height"]) == (1280, 720)
    assert info["nb_frames"] == 720
    assert info["duration"] == pytest.approx(24.023333, abs=1e-3)
    assert info["has_audio"] is False


def test_matroska_duration_comes_from_the_container(shared_videos: Path) -> None:
    path = shared_videos / "pyscenedetect/issue-236-split-copy.mkv"
    raw = ffprobe_json(str(path))
    (video,) = [s for s in raw["streams"] if s["codec_type"] == "video"]
    assert "duration" not in video, "premise: Matroska streams carry no duration of their own"

    info = probe(str(path), CFG)
    assert info["container"].startswith("matroska")
    assert info["duration"] == pytest.approx(float(raw["format"]["duration"]))
    assert info["duration"] == pytest.approx(2.017, abs=1e-3)
    assert info["nb_frames"] is None  # Matroska has no frame count either
    assert info["has_audio"] is True and info["audio_codec"] == "aac"


# --- generated awkward-but-valid inputs ---------------------------------------------------------


def test_generated_rotated_video_probes_as_portrait(tmp_path: Path) -> None:
    info = probe(str(media.rotated(tmp_path)), CFG)
    assert (info["width"], info["height"]) == (1280, 720)
    assert info["rotation"] == -90
    assert (info["display_width"], info["display_height"]) == (720, 1280)


def test_generated_anamorphic_video_probes_at_display_size(tmp_path: Path) -> None:
    info = probe(str(media.anamorphic(tmp_path)), CFG)
    assert (info["width"], info["height"]) == (720, 576)
    assert info["sar"] == "64:45"
    assert (info["display_width"], info["display_height"]) == (1024, 576)
    assert info["display_aspect"] == pytest.approx(16 / 9, abs=1e-3)


def test_generated_variable_frame_rate_video_is_vfr(tmp_path: Path) -> None:
    info = probe(str(media.variable_frame_rate(tmp_path)), CFG)
    assert info["vfr"] is True
    assert info["fps"] == pytest.approx(30.0)
    assert info["avg_fps"] == pytest.approx(float(Fraction(900, 59)), rel=1e-3)
    assert info["duration"] == pytest.approx(3.933, abs=0.01)
    assert info["nb_frames"] == 60


# --- bad inputs: each is rejected, with a specific reason, at the first stage able to tell ------

#: name in media.ALL_BAD -> (stage that catches it, rejection reason)
EXPECTED_REJECTION: dict[str, tuple[str, str]] = {
    "zero_length": ("probe", "unreadable"),
    "truncated": ("probe", "unreadable"),
    "not_a_video_text": ("probe", "unreadable"),
    "not_a_video_image": ("probe", "not_a_video"),
    "audio_only": ("probe", "no_video_stream"),
    "absurd_dimensions": ("probe", "absurd_dimensions"),
    "tiny_dimensions": ("probe", "absurd_dimensions"),
    # these probe as healthy (ffprobe reads only the index) and fail only while decoding
    "truncated_faststart": ("split", "decode_error"),
    "corrupt_frames": ("split", "decode_error"),
}


def test_every_bad_input_has_an_expected_rejection() -> None:
    assert set(EXPECTED_REJECTION) == set(media.ALL_BAD)


@pytest.mark.parametrize("name", sorted(EXPECTED_REJECTION))
def test_bad_input_is_rejected_with_its_reason(name: str, tmp_path: Path) -> None:
    stage, reason = EXPECTED_REJECTION[name]
    path = media.ALL_BAD[name](tmp_path)
    if stage == "probe":
        with pytest.raises(Rejection) as caught:
            probe(str(path), CFG)
    else:
        info = probe(str(path), CFG)  # passes probe: nothing wrong is visible without decoding
        row = {"source_id": name, "source": str(path), "local_path": str(path), **info}
        with pytest.raises(Rejection) as caught:
            split(row, SplitConfig())
    assert caught.value.reason == reason, caught.value.detail
    assert caught.value.detail  # a sentence a person can act on


# --- Motion JPEG and other still-picture codecs ---------------------------------------------------


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def _still_jpeg(d: Path) -> Path:
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x240", "-frames:v", "1", str(d / "still.jpg"))
    return d / "still.jpg"


@pytest.mark.parametrize("container", ["avi", "mov", "mkv"])
def test_motion_jpeg_is_a_video(tmp_path: Path, container: str) -> None:
    """Cameras write MJPEG in AVI or MOV: 20 JPEG frames with a duration are a video, not a still image."""
    path = tmp_path / f"mjpeg.{container}"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x240:r=10", "-t", "2", "-c:v", "mjpeg", str(path))
    info = probe(str(path), CFG)
    assert info["video_codec"] == "mjpeg"
    assert (info["width"], info["height"]) == (320, 240)
    assert info["duration"] == pytest.approx(2.0, abs=0.05)
    assert info["fps"] == pytest.approx(10.0)


def test_single_jpeg_is_not_a_video(tmp_path: Path) -> None:
    with pytest.raises(Rejection) as caught:
        probe(str(_still_jpeg(tmp_path)), CFG)
    assert caught.value.reason == "not_a_video"
    assert "still image" in caught.value.detail


def test_one_mjpeg_frame_in_a_video_container_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "one.avi"
    _ffmpeg("-i", str(_still_jpeg(tmp_path)), "-c:v", "mjpeg", str(path))
    with pytest.raises(Rejection) as caught:
        probe(str(path), CFG)
    assert caught.value.reason == "no_video_stream"
    assert "video (mjpeg: one frame)" in caught.value.detail  # names the stream and says why it does not count


@pytest.mark.parametrize(("name", "codec"), [("cover.mp3", "libmp3lame"), ("cover.m4a", "aac")])
def test_audio_with_cover_art_has_no_video_stream(tmp_path: Path, name: str, codec: str) -> None:
    path = tmp_path / name
    _ffmpeg("-f", "lavfi", "-i", "sine=duration=2", "-i", str(_still_jpeg(tmp_path)), "-map", "0", "-map", "1",
            "-c:a", codec, "-c:v", "mjpeg", "-disposition:v", "attached_pic", str(path))
    with pytest.raises(Rejection) as caught:
        probe(str(path), CFG)
    assert caught.value.reason == "no_video_stream"
    assert "video (mjpeg: cover art)" in caught.value.detail
    assert "audio (" in caught.value.detail
