"""Clip extraction cuts exactly the frames of its span, upright and with square pixels.

Frame-exactness is checked on decoded pictures, not on packet counts: every clip is decoded with PyAV
and its first (and, for constant-rate sources, last) picture must be closer to the source picture at
the span's boundary than to that picture's neighbours. Spans are chosen where consecutive source
pictures really differ (fades and camera motion), and the test asserts that premise too.

Smart cut (``extract.mode: smart``) is checked the same way on every picture of the clip: each must be
close to its own source picture (a bad join or a missing parameter set would show), and each whose
source neighbours differ must be closest to it (no part shifted by a frame). Copied pictures are the
source's bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from curation.config import CurationConfig, ExtractConfig, ProbeConfig
from curation.errors import Rejection
from curation.extract import extract, extract_source, output_size, plan_passes
from curation.ffmpeg import ffprobe_json
from curation.probe import probe
from curation.smartcut import NotSmart, Packet, plan

TESTVIDEO = "pyscenedetect/testvideo.mp4"  # 1280x720, 30000/1001 fps, CFR, 720 frames
VFR = "pyscenedetect/goldeneye-vfr-drop3.mp4"  # nominal 24000/1001, every third frame dropped
ROTATED = "pyscenedetect/issue-134-rotate.mp4"
ANAMORPHIC = "pyscenedetect/issue-195-aspect-ratio.mp4"
TRAFFIC = "dvr-scan/traffic_camera.mp4"  # 1280x720, 25 fps, Main profile, one B-frame of delay; keys every 128

THUMB = (128, 64)  # width, height of the grey thumbnails compared


def thumb(frame: av.VideoFrame, size: tuple[int, int] = THUMB) -> np.ndarray:
    return frame.reformat(width=size[0], height=size[1], format="gray").to_ndarray().astype(np.float32)


def mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two grey thumbnails."""
    return float(np.abs(a - b).mean())


def decode(path: str | Path) -> list[av.VideoFrame]:
    """Every decoded picture of the first video stream."""
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def decoded_thumbs(path: str | Path) -> list[tuple[float, np.ndarray]]:
    """(presentation time, grey thumbnail) of every decoded picture."""
    with av.open(str(path)) as container:
        return [(float(f.time), thumb(f)) for f in container.decode(video=0)]


def closest(target: np.ndarray, source: list[tuple[float, np.ndarray]], around: int, radius: int = 2) -> int:
    """Index in ``source[around - radius : around + radius]`` of the picture closest to ``target``."""
    candidates = range(max(0, around - radius), min(len(source), around + radius + 1))
    return min(candidates, key=lambda i: mad(source[i][1], target))


def assert_neighbours_differ(source: list[tuple[float, np.ndarray]], index: int, margin: float) -> None:
    """Premise of a frame-exactness check: the pictures next to ``index`` are visibly different."""
    for other in (index - 1, index + 1):
        if 0 <= other < len(source):
            assert mad(source[index][1], source[other][1]) > margin, f"source pictures {index} and {other} are alike"


@pytest.fixture(scope="module")
def probed(shared_videos: Path) -> Callable[[str], dict[str, Any]]:
    cache: dict[str, dict[str, Any]] = {}

    def get(name: str) -> dict[str, Any]:
        if name not in cache:
            path = str(shared_videos / name)
            cache[name] = {"local_path": path, "source": path, **probe(path, ProbeConfig())}
        return cache[name]

    return get


@pytest.fixture(scope="module")
def source_thumbs(shared_videos: Path) -> Callable[[str], list[tuple[float, np.ndarray]]]:
    cache: dict[str, list[tuple[float, np.ndarray]]] = {}

    def get(name: str) -> list[tuple[float, np.ndarray]]:
        if name not in cache:
            cache[name] = decoded_thumbs(shared_videos / name)
        return cache[name]

    return get


def clip_row(source: dict[str, Any], start_frame: int, end_frame: int, key: str = "clip") -> dict[str, Any]:
    fps = source["fps"]
    return {**source, "source_id": "src", "key": key, "start_frame": start_frame, "end_frame": end_frame,
            "start_time": start_frame / fps, "end_time": end_frame / fps}


# --- frame exactness ----------------------------------------------------------------------------


@pytest.mark.parametrize("start, end", [(212, 238), (331, 358), (395, 421), (664, 691)])
def test_cfr_clip_holds_exactly_the_frames_of_its_span(
    start: int, end: int, tmp_path: Path, probed, source_thumbs
) -> None:
    source = source_thumbs(TESTVIDEO)
    assert_neighbours_differ(source, start, margin=1.0)
    assert_neighbours_differ(source, end - 1, margin=1.0)

    columns = extract(clip_row(probed(TESTVIDEO), start, end), ExtractConfig(), tmp_path)
    clip = decoded_thumbs(columns["clip_path"])

    assert len(clip) == end - start
    assert columns["clip_frames"] == end - start
    assert closest(clip[0][1], source, start) == start
    assert closest(clip[-1][1], source, end - 1) == end - 1
    assert (columns["clip_width"], columns["clip_height"]) == (1280, 720)
    assert columns["clip_fps"] == pytest.approx(30000 / 1001)


def test_cfr_clip_at_a_hard_cut_starts_on_the_new_scene(tmp_path: Path, probed, source_thumbs) -> None:
    source = source_thumbs(TESTVIDEO)
    columns = extract(clip_row(probed(TESTVIDEO), 30, 180), ExtractConfig(), tmp_path)  # the whole second shot
    clip = decoded_thumbs(columns["clip_path"])
    assert len(clip) == 150
    assert mad(clip[0][1], source[30][1]) < mad(clip[0][1], source[29][1]) / 10  # not the last frame of shot 1
    assert mad(clip[-1][1], source[179][1]) < mad(clip[-1][1], source[180][1]) / 10  # not the first of shot 3


@pytest.mark.parametrize("start, end", [(90, 210), (100, 200), (150, 190)])
def test_vfr_clip_holds_the_source_frames_of_its_span(
    start: int, end: int, tmp_path: Path, probed, source_thumbs
) -> None:
    row = clip_row(probed(VFR), start, end)
    assert row["vfr"] is True
    half = 0.5 / row["fps"]
    source = source_thumbs(VFR)
    inside = [i for i, (t, _) in enumerate(source) if row["start_time"] - half <= t < row["end_time"] - half]

    columns = extract(row, ExtractConfig(), tmp_path)
    clip = decoded_thumbs(columns["clip_path"])

    assert len(clip) == len(inside)  # fewer than end - start: the dropped frames are not invented
    assert len(clip) < end - start
    frame = 1 / row["fps"]
    assert abs(columns["clip_duration"] - (row["end_time"] - row["start_time"])) <= frame + 1e-3
    assert closest(clip[0][1], source, inside[0]) == inside[0]


# --- geometry -----------------------------------------------------------------------------------


def test_rotated_source_becomes_an_upright_portrait_clip(tmp_path: Path, probed, source_thumbs) -> None:
    row = clip_row(probed(ROTATED), 0, 48)
    assert row["rotation"] == -90
    columns = extract(row, ExtractConfig(), tmp_path)

    frames = decode(columns["clip_path"])
    assert len(frames) == 48
    assert (frames[0].width, frames[0].height) == (544, 1280)
    assert (columns["clip_width"], columns["clip_height"]) == (544, 1280)

    (stream,) = ffprobe_json(columns["clip_path"])["streams"]
    assert "rotate" not in (stream.get("tags") or {})
    assert not [s for s in stream.get("side_data_list") or [] if s.get("rotation")]

    # the pixels really were turned: -90 in the display matrix means a clockwise quarter turn
    stored = source_thumbs(ROTATED)[0][1]  # as stored: landscape
    picture = thumb(frames[0], size=(THUMB[1], THUMB[0]))
    clockwise, counter = np.rot90(stored, k=-1), np.rot90(stored, k=1)
    assert mad(picture, clockwise) < mad(picture, counter) / 3


def test_anamorphic_source_becomes_square_pixels_at_display_size(tmp_path: Path, probed) -> None:
    row = clip_row(probed(ANAMORPHIC), 0, 25)
    assert row["sar"] == "16:11"
    columns = extract(row, ExtractConfig(), tmp_path)

    frames = decode(columns["clip_path"])
    assert len(frames) == 25
    assert (frames[0].width, frames[0].height) == (1024, 576)
    (stream,) = ffprobe_json(columns["clip_path"])["streams"]
    assert stream.get("sample_aspect_ratio", "1:1") == "1:1"
    assert stream.get("display_aspect_ratio") == "16:9"


def test_short_side_scales_hd_down(tmp_path: Path, probed) -> None:
    columns = extract(clip_row(probed(TESTVIDEO), 212, 238), ExtractConfig(short_side=360), tmp_path)
    frames = decode(columns["clip_path"])
    assert len(frames) == 26
    assert (frames[0].width, frames[0].height) == (640, 360)
    assert (columns["clip_width"], columns["clip_height"]) == (640, 360)


# --- stream copy --------------------------------------------------------------------------------


def keyframe_times(path: str) -> list[float]:
    info = ffprobe_json(path, ["-select_streams", "v:0", "-show_entries", "packet=pts_time,flags"])
    return [float(p["pts_time"]) for p in info["packets"] if "K" in p["flags"]]


def test_copy_mode_starts_at_the_keyframe_before_the_span(tmp_path: Path, probed, source_thumbs) -> None:
    row = clip_row(probed(TESTVIDEO), 200, 260)
    keyframes = keyframe_times(row["local_path"])
    assert row["start_time"] not in keyframes

    columns = extract(row, ExtractConfig(mode="copy"), tmp_path)
    assert columns["extract_mode"] == "copy"
    assert columns["keyframe_snapped"] is True
    assert columns["start_time"] in keyframes
    assert columns["start_time"] <= row["start_time"]
    assert columns["start_time"] == max(k for k in keyframes if k <= row["start_time"])  # the nearest one
    assert columns["start_frame"] == round(columns["start_time"] * row["fps"])

    clip = decoded_thumbs(columns["clip_path"])
    source = source_thumbs(TESTVIDEO)
    assert mad(clip[0][1], source[columns["start_frame"]][1]) < 0.5  # the very keyframe, bit for bit


def test_copy_mode_at_a_keyframe_is_not_snapped(tmp_path: Path, probed) -> None:
    row = clip_row(probed(TESTVIDEO), 180, 240)  # 6.006 s is a keyframe
    assert row["start_time"] in keyframe_times(row["local_path"])
    columns = extract(row, ExtractConfig(mode="copy"), tmp_path)
    assert columns["keyframe_snapped"] is False
    assert columns["start_frame"] == 180


# --- files on disk ------------------------------------------------------------------------------


def test_clip_appears_only_under_its_final_name(tmp_path: Path, probed) -> None:
    row = clip_row(probed(TESTVIDEO), 212, 238, key="src_0007")
    columns = extract(row, ExtractConfig(), tmp_path)
    final = tmp_path / "src" / "src_0007.mp4"
    assert columns["clip_path"] == str(final)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["src", "src/src_0007.mp4"]
    assert columns["clip_bytes"] == final.stat().st_size > 0
    assert len(columns["clip_sha256"]) == 64


def test_failed_extraction_raises_and_leaves_no_file(tmp_path: Path, probed) -> None:
    row = clip_row(probed(TESTVIDEO), 212, 238)
    row["local_path"] = str(tmp_path / "gone.mp4")
    clips = tmp_path / "clips"
    with pytest.raises(Rejection) as caught:
        extract(row, ExtractConfig(), clips)
    assert caught.value.reason == "extract_failed"
    assert [p for p in clips.rglob("*") if p.is_file()] == []


# --- a source's clips cut together -----------------------------------------------------------------


@pytest.mark.parametrize("name, spans, short_side", [
    (TESTVIDEO, [(30, 90), (90, 180), (180, 300), (300, 420)], None),  # keyframes at 30, 180: seeks differ
    (ROTATED, [(10, 50), (50, 90), (95, 200)], None),  # rotation applied inside the shared graph too
    (ANAMORPHIC, [(0, 40), (40, 100)], 240),  # resampled and scaled in every branch
])
def test_clips_cut_in_one_pass_are_byte_identical_to_clips_cut_alone(
    name: str, spans: list[tuple[int, int]], short_side: int | None, tmp_path: Path, probed
) -> None:
    source = probed(name)
    rows = [clip_row(source, a, b, key=f"src_{i:04d}") for i, (a, b) in enumerate(spans)]
    alone = [extract(row, ExtractConfig(short_side=short_side), tmp_path / "alone") for row in rows]
    cfg = ExtractConfig(short_side=short_side)
    assert [len(g) for g in plan_passes(rows, cfg)] == [len(rows)]  # premise: one ffmpeg for all of them

    together = extract_source(rows, cfg, tmp_path / "together")

    assert [c["clip_sha256"] for c in together] == [c["clip_sha256"] for c in alone]
    assert [c["clip_frames"] for c in together] == [b - a for a, b in spans]
    assert sorted(p.name for p in (tmp_path / "together" / "src").iterdir()) == [r["key"] + ".mp4" for r in rows]


def test_a_clip_that_fails_its_check_in_a_shared_pass_is_rejected_alone(tmp_path: Path, probed) -> None:
    source = probed(TESTVIDEO)  # 720 frames: the last span claims 40 frames past the end
    rows = [clip_row(source, 600, 650, key="src_0000"), clip_row(source, 650, 760, key="src_0001")]
    assert len(plan_passes(rows, ExtractConfig())) == 1

    first, second = extract_source(rows, ExtractConfig(), tmp_path)

    assert first["clip_frames"] == 50
    assert isinstance(second, Rejection) and second.reason == "extract_mismatch"
    assert [p.name for p in (tmp_path / "src").iterdir()] == ["src_0000.mp4"]  # no partial file left


def test_passes_group_consecutive_clips_and_leave_the_rest_alone(probed) -> None:
    cfr, vfr = probed(TESTVIDEO), probed(VFR)
    rows = [clip_row(cfr, a, b, key=f"k{a}") for a, b in [(0, 60), (60, 120), (120, 180), (180, 240), (600, 700)]]

    def sizes(cfg: ExtractConfig, clips: list[dict[str, Any]]) -> list[int]:
        return [len(g) for g in plan_passes(clips, cfg)]

    assert sizes(ExtractConfig(clips_per_pass=3), rows) == [3, 1, 1]  # bounded; 240 -> 600 is a 12 s gap
    assert sizes(ExtractConfig(), rows[::-1]) == [4, 1]  # in time order whatever the row order
    assert sizes(ExtractConfig(clips_per_pass=1), rows) == [1] * 5
    assert sizes(ExtractConfig(mode="copy"), rows) == [1] * 5
    assert sizes(ExtractConfig(keep_audio=True), rows) == [1] * 5
    assert sizes(ExtractConfig(), [clip_row(vfr, a, b, key=f"v{a}") for a, b in [(0, 40), (40, 80)]]) == [1, 1]


# --- smart cut --------------------------------------------------------------------------------------


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


def test_a_source_read_once_for_all_its_clips_cuts_them_as_each_read_alone(tmp_path: Path, probed) -> None:
    rows = [clip_row(probed(TESTVIDEO), a, b, key=f"src_{a}") for a, b in [(100, 250), (400, 540), (480, 545)]]
    cfg = ExtractConfig(mode="smart")
    together = extract_source(rows, cfg, tmp_path / "together")  # one ffprobe of the whole source's packets
    alone = [extract(row, cfg, tmp_path / "alone") for row in rows]  # each reads the packets around its clip
    assert [c["extract_mode"] for c in together] == ["smart", "smart", "smart_copy"]
    assert [c["clip_sha256"] for c in together] == [c["clip_sha256"] for c in alone]


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
    (together,) = extract_source([row], cfg, tmp_path / "source")  # the source's clips: re-encoded, same label
    assert (together["extract_mode"], together["clip_sha256"]) == (columns["extract_mode"], plain["clip_sha256"])


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


# --- output_size ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "display, sar, short_side, expected",
    [
        ((1280, 720), "1:1", None, None),  # square, even, no scaling asked: keep the pixels
        ((1280, 720), "1:1", 720, None),  # already at the short side
        ((640, 360), "1:1", 720, None),  # never upscale
        ((1280, 720), "1:1", 360, (640, 360)),
        ((1920, 1080), "1:1", 720, (1280, 720)),
        ((544, 1280), "1:1", 360, (360, 848)),  # portrait: the short side is the width; sides stay even
        ((1024, 576), "16:11", None, (1024, 576)),  # anamorphic: resample to the display size
        ((1024, 576), "64:45", 288, (512, 288)),
        ((641, 361), "1:1", None, (640, 360)),  # odd sides are made even for yuv420p
    ],
)
def test_output_size(display: tuple[int, int], sar: str, short_side: int | None, expected) -> None:
    assert output_size(*display, sar, short_side) == expected


def test_output_size_sides_are_always_even() -> None:
    for w in range(100, 140):
        for h in (99, 100, 101):
            for short_side in (None, 50, 75):
                size = output_size(w, h, "1:1", short_side)
                if size is not None:
                    assert size[0] % 2 == 0 and size[1] % 2 == 0, (w, h, short_side, size)
                    assert min(size) <= (short_side or min(w, h)) + 1
