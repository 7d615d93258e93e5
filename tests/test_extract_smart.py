"""Smart cut (``extract.mode: smart``) shows exactly the frames of the span, copying what it can.

Each clip is decoded and compared frame by frame with the source: every clip picture whose source
neighbours really differ must be closest to its own source picture (so no part is shifted by a frame),
and every picture must be close to it (so no part is garbage: a bad join or a missing parameter set
would show). Copied pictures are the source's bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curation.config import CurationConfig, ExtractConfig
from curation.extract import extract
from curation.ffmpeg import ffprobe_json
from curation.smartcut import NotSmart, Packet, plan
from tests.test_extract import (  # noqa: F401 (probed, source_thumbs: the fixtures, shared)
    ANAMORPHIC, ROTATED, TESTVIDEO, VFR, clip_row, closest, decoded_thumbs, mad, probed, source_thumbs)

TRAFFIC = "dvr-scan/traffic_camera.mp4"  # 1280x720, 25 fps, Main profile, one B-frame of delay; keys every 128


def assert_same_frames(clip: list[tuple[float, np.ndarray]], source: list[tuple[float, np.ndarray]],
                       start: int, end: int) -> None:
    assert len(clip) == end - start
    distinct = 0
    for i, (_, picture) in enumerate(clip):
        at = start + i
        assert mad(picture, source[at][1]) < 2.0, f"clip frame {i} is not source frame {at}"
        neighbours = [source[j][1] for j in (at - 1, at + 1) if 0 <= j < len(source)]
        if all(mad(source[at][1], n) > 1.0 for n in neighbours):
            distinct += 1
            assert closest(picture, source, at) == at, f"clip frame {i} is shifted off source frame {at}"
    assert distinct >= 3  # premise: the span has pictures a one-frame shift would betray


def source_stream(path: str) -> dict:
    return ffprobe_json(path, ["-select_streams", "v:0", "-show_entries",
                               "stream=codec_name,profile,level,pix_fmt,sample_aspect_ratio,time_base,width,height"]
                        )["streams"][0]


@pytest.mark.parametrize("name, start, end, mode", [
    (TESTVIDEO, 100, 250, "smart"),  # head 100-179, body from the keyframe at 180, tail after its last clean end
    (TESTVIDEO, 400, 540, "smart"),  # head 400-479, body 480-538, a one-frame tail
    (TESTVIDEO, 400, 533, "smart"),  # head, and a body ending on a clean end: no tail
    (TRAFFIC, 100, 300, "smart"),  # another profile (Main), level, time base and reorder delay
    (TESTVIDEO, 480, 545, "smart_copy"),  # starts on a keyframe, ends on a clean end: nothing re-encoded
    (TESTVIDEO, 200, 260, "reencode (fallback: no keyframe inside the clip)"),  # ends before the next keyframe
])
def test_smart_clip_shows_exactly_the_frames_of_its_span(
    name: str, start: int, end: int, mode: str, tmp_path: Path, probed, source_thumbs
) -> None:
    row = clip_row(probed(name), start, end)
    smart = extract(row, ExtractConfig(mode="smart"), tmp_path / "smart")
    reencoded = extract(row, ExtractConfig(), tmp_path / "reencode")

    assert smart["extract_mode"] == mode
    assert smart["keyframe_snapped"] is False
    assert smart["clip_frames"] == reencoded["clip_frames"] == end - start
    clip = decoded_thumbs(smart["clip_path"])
    assert_same_frames(clip, source_thumbs(name), start, end)
    assert_same_frames(decoded_thumbs(reencoded["clip_path"]), source_thumbs(name), start, end)
    frame = 1 / row["fps"]
    assert clip[0][0] == pytest.approx(0, abs=frame / 4)  # first and last frames where the span puts them
    assert clip[-1][0] == pytest.approx((end - start - 1) * frame, abs=frame / 4)
    if mode == "smart_copy":
        assert all(mad(picture, source_thumbs(name)[start + i][1]) == 0 for i, (_, picture) in enumerate(clip))


def test_smart_clip_keeps_the_source_stream_parameters(tmp_path: Path, probed) -> None:
    row = clip_row(probed(TRAFFIC), 100, 300)
    columns = extract(row, ExtractConfig(mode="smart"), tmp_path)
    assert columns["extract_mode"] == "smart"
    assert source_stream(columns["clip_path"]) == source_stream(row["local_path"])


@pytest.mark.parametrize("name, cfg, why", [
    (ROTATED, ExtractConfig(mode="smart"), "rotation"),
    (ANAMORPHIC, ExtractConfig(mode="smart"), "scaling"),
    (TESTVIDEO, ExtractConfig(mode="smart", short_side=360), "scaling"),
    (VFR, ExtractConfig(mode="smart"), "variable frame rate"),
    (TESTVIDEO, ExtractConfig(mode="smart", keep_audio=True), "audio kept"),
])
def test_a_source_that_cannot_be_smart_cut_is_reencoded_and_says_why(
    name: str, cfg: ExtractConfig, why: str, tmp_path: Path, probed
) -> None:
    row = clip_row(probed(name), 0, 48)
    columns = extract(row, cfg, tmp_path / "smart")
    assert columns["extract_mode"] == f"reencode (fallback: {why})"
    plain = extract(row, cfg.model_copy(update={"mode": "reencode"}), tmp_path / "plain")
    assert columns["clip_sha256"] == plain["clip_sha256"]  # the very clip the re-encode mode cuts


def packets(order: list[int], keys: tuple[int, ...] = (0,)) -> list[Packet]:
    return [Packet(frame, frame / 25, 0, frame in keys) for frame in order]


def test_the_body_ends_where_the_packets_decoded_are_the_frames_shown() -> None:
    # I0 P3 B1 B2 P6 B4 B5 I9 B7 B8: the frames shown before 4 are the first four decoded; before 5 they are
    # not (B4 is decoded after P6), nor before 6
    order = packets([0, 3, 1, 2, 6, 4, 5, 9, 7, 8], keys=(0, 9))
    assert [plan(order, 0, end).clean_end for end in (4, 5, 6, 7, 9, 10)] == [4, 4, 4, 7, 7, 10]
    late = plan(order, 2, 10)  # the head is 2-8; frames 7 and 8 decode after the keyframe: the body is it alone
    assert (late.start, late.keyframe, late.clean_end, late.end) == (2, 9, 10, 10)


def test_a_clip_without_a_keyframe_after_its_start_is_not_smart() -> None:
    with pytest.raises(NotSmart, match="no keyframe inside"):
        plan(packets([0, 3, 1, 2, 6, 4, 5]), 1, 7)
    with pytest.raises(NotSmart, match="no keyframe inside"):
        plan(packets([0, 3, 1, 2, 6, 4, 5, 9, 7, 8], keys=(0, 9)), 1, 9)


def test_smart_mode_changes_the_fingerprint_from_extraction_on() -> None:
    base, smart = CurationConfig(), CurationConfig()
    smart.extract.mode = "smart"
    assert base.fingerprint("split") == smart.fingerprint("split")
    assert base.fingerprint("extract") != smart.fingerprint("extract")
