"""The filter's decision record (``shards.scores``): what ``ClipFilter.judge`` writes, read back by the readers.

The records here come from the real filter on clips made with ffmpeg (no Ray, no text detector), so
the readers are tested on what the filter writes, not on a layout written by hand.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from curation.config import FilterConfig, load_config
from curation.filtering import ClipFilter
from curation.probe import probe
from shards.scores import Check, DecisionRecord, read_checks

_X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]

#: The clips judged: moving HD 16:9, a still HD 16:9 (static), moving 4:3 (rejected on its geometry, before decoding).
CLIPS = {
    "moving": ["-f", "lavfi", "-i", "testsrc2=s=1280x720:r=25:d=2.5"],
    "still": ["-f", "lavfi", "-i", "testsrc2=s=1280x720:r=25:d=0.04", "-vf", "loop=loop=-1:size=1,trim=duration=2.5"],
    "four_three": ["-f", "lavfi", "-i", "testsrc2=s=960x720:r=25:d=2.5"],
}


def make_clips(folder: Path) -> dict[str, Path]:
    """The ``CLIPS``, encoded with ffmpeg into ``folder``."""
    out = {}
    for name, source in CLIPS.items():
        out[name] = folder / f"{name}.mp4"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *source, *_X264, str(out[name])],
                       check=True, timeout=120)
    return out


def clip_row(path: Path) -> dict[str, Any]:
    """A clip row for ``path`` as the extract stage leaves it (the file itself is the clip)."""
    facts = probe(str(path), load_config().probe)
    return {**facts, "clip_path": str(path), "clip_duration": facts["duration"], "start_time": 0.0,
            "end_time": facts["duration"], "key": path.stem, "source_id": path.stem}


def filter_config(score_only: bool = False) -> FilterConfig:
    """The defaults, with text and watermark detection off (they need no model then, and run in a second)."""
    cfg = FilterConfig()
    cfg.text.enabled = cfg.watermark.enabled = False
    cfg.score_only = score_only
    return cfg


def judge(clips: dict[str, Path], cfg: FilterConfig) -> dict[str, dict[str, Any]]:
    """Each clip's row after ``ClipFilter(cfg).judge``."""
    clip_filter = ClipFilter(cfg)
    return {name: row for name, path in clips.items() for row in clip_filter.judge(clip_row(path))}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_clips(tmp_path_factory.mktemp("record-clips"))


@pytest.fixture(scope="module")
def judged(clips: dict[str, Path]) -> dict[str, dict[str, Any]]:
    return judge(clips, filter_config())


def test_the_filter_writes_the_typed_record(judged: dict[str, dict[str, Any]]) -> None:
    cfg = filter_config()
    records = {name: DecisionRecord.from_json(row["scores"]) for name, row in judged.items()}
    for name, row in judged.items():
        assert DecisionRecord.from_json(row["scores"]).to_json() == row["scores"], "the record round-trips"
        assert row["scores"].startswith('{"checks": '), "checks first: read_checks reads nothing else"
        assert records[name].rejected_by == row.get("reason")
        assert records[name].failed[:1] == ([row["reason"]] if row.get("reason") else [])
    moving, still, four_three = records["moving"], records["still"], records["four_three"]
    assert moving.rejected_by is None and all(c.passed for c in moving.checks.values())
    assert moving.checks["low_resolution"] == Check(720, cfg.quality.min_short_side, True)
    assert moving.checks["static"].threshold == pytest.approx(cfg.motion.min_motion)
    assert "shaky" not in moving.checks, "filter.motion.max_motion is None: the rule is off and has no check"
    assert set(moving.scores) == {"quality", "decode", "motion", "sharpness"}
    assert moving.scores["motion"]["motion"] == moving.checks["static"].score
    assert still.rejected_by == "static" and not still.checks["static"].passed
    assert four_three.rejected_by == "aspect_ratio" and four_three.checks["aspect_ratio"].score == pytest.approx(0.25)
    assert "static" not in four_three.checks and "motion" not in four_three.scores, "stopped before decoding"


def test_score_only_records_every_check_and_rejects_nothing(clips: dict[str, Path]) -> None:
    rows = judge(clips, filter_config(score_only=True))
    records = {name: DecisionRecord.from_json(row["scores"]) for name, row in rows.items()}
    assert all(row.get("status") is None for row in rows.values())
    assert all(r.score_only and r.rejected_by is None for r in records.values())
    assert records["still"].failed == ["static"] and records["four_three"].failed == ["aspect_ratio"]
    assert len({frozenset(r.checks) for r in records.values()}) == 1, "every rule ran on every clip"


def test_read_checks_gives_each_rules_score_and_threshold(judged: dict[str, dict[str, Any]]) -> None:
    texts = [row["scores"] for row in judged.values()]
    records = [DecisionRecord.from_json(t) for t in texts]
    # a clip no filter ran on ({}), a null, and a record whose keys are in another order (parsed one by one)
    shuffled = json.dumps(dict(reversed(list(json.loads(texts[0]).items()))))
    columns = read_checks(pa.array([*texts, "{}", None, shuffled]))
    assert set(columns) == {rule for r in records for rule in r.checks}
    for rule, (score, threshold) in columns.items():
        checks = [r.checks.get(rule) for r in [*records, records[0]]]
        assert score.to_pylist() == [c and c.score for c in checks], rule
        assert threshold.to_pylist() == [c and c.threshold for c in checks], rule
    assert read_checks(pa.array(["{}", None, ""], pa.string())) == {}


def test_records_hold_no_nan_and_refuse_reserved_filter_names() -> None:
    record = DecisionRecord(checks={"static": Check(math.nan, 0.002, False)})
    record.add_scores("motion", {"motion": math.inf, "boxes": [[1.0, math.nan]]})
    text = record.to_json()
    assert json.loads(text) == {"checks": {"static": {"score": None, "threshold": 0.002, "passed": False}},
                                "rejected_by": None, "score_only": False, "motion": {"motion": None,
                                                                                      "boxes": [[1.0, None]]}}
    [(score, threshold)] = read_checks(pa.array([text])).values()
    assert score.to_pylist() == [None] and threshold.to_pylist() == [0.002]
    with pytest.raises(ValueError, match="checks"):
        record.add_scores("checks", {"x": 1})
    with pytest.raises(ValueError, match="not a decision record"):
        DecisionRecord.from_json('{"motion": 0.5}')
    assert DecisionRecord.from_json("{}") == DecisionRecord() == DecisionRecord.from_json(None)
