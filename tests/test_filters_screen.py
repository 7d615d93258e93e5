"""The screen stage: the checks of the source alone run right after the probe, and what they reject is never cut.

The stages run as the runner runs them in one fused task (``OperatorWorker``, without Ray), on
sources made with ffmpeg; the split stage is replaced by a spy, so a test sees exactly which
sources reach it. The whole pipeline through Ray is in ``tests/test_filters.py``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from curation.config import STAGES, CurationConfig, FilterConfig, load_config
from curation.filtering import ClipFilter, screen_source
from curation.probe import probe
from curation.runner import OperatorWorker
from curation.workarea import WorkArea
from shards.schema import to_table
from shards.scores import Check, DecisionRecord

_X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]

#: The sources: display size and seconds.
SOURCES = {"small": ("640x360", 3), "four_three": ("960x720", 3), "hd": ("1280x720", 3), "short": ("1280x720", 1)}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("screen-sources")
    for name, (size, seconds) in SOURCES.items():
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=s={size}:r=25:d={seconds}", *_X264, str(folder / f"{name}.mp4")],
                       check=True, timeout=120)
    return folder


def _run(sources: Path, out: Path, monkeypatch: pytest.MonkeyPatch, **filter_settings: Any
         ) -> tuple[dict[str, dict[str, Any]], list[str], CurationConfig]:
    """Download, probe, screen and split of every source in one fused task: (rows by source, sources split, config)."""
    cfg = load_config(None, input=str(sources), output=str(out))
    cfg.download.local_roots = [str(sources)]
    for key, value in filter_settings.items():
        target = cfg.filter.quality if key == "quality_enabled" else cfg.filter
        setattr(target, "enabled" if key == "quality_enabled" else key, value)
    split: list[str] = []

    def spy(row: dict[str, Any], _cfg: Any) -> list[dict[str, Any]]:
        split.append(row["source_id"])
        return [{**row, "key": f"{row['source_id']}-0", "status": "ok"}]

    monkeypatch.setattr("curation.stages.split.split", spy)
    rows = [{"source_id": name, "source": str(sources / f"{name}.mp4"), "extra": "{}", "partition": 0,
             "stage": "manifest", "status": "ok"} for name in SOURCES]
    worker = OperatorWorker(cfg.to_dict(), ("download", "probe", "screen", "split"), per_clip=False)
    out_rows = [worker(to_table([row])).to_pylist()[0] for row in rows]
    return {r["source_id"]: r for r in out_rows}, split, cfg


def _clip_row(path: Path) -> dict[str, Any]:
    """The row the filter stage would get for a clip that is the whole of ``path``."""
    facts = probe(str(path), load_config().probe)
    return {**facts, "clip_path": str(path), "clip_duration": facts["duration"], "start_time": 0.0,
            "end_time": facts["duration"], "key": path.stem, "source_id": path.stem}


def test_screen_runs_with_the_probe() -> None:
    assert STAGES.index("screen") == STAGES.index("probe") + 1 < STAGES.index("split")
    assert CurationConfig(stages=["download", "probe", "split"]).ordered_stages() == [
        "download", "probe", "screen", "split"]
    assert CurationConfig(stages=["extract", "filter"]).ordered_stages() == ["extract", "filter"]


def test_low_resolution_and_four_three_sources_are_rejected_before_the_split(
        sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows, split, cfg = _run(sources, tmp_path / "corpus", monkeypatch)
    assert split == ["hd"], "only the HD 16:9 source of at least split.min_duration is split"
    outcome = {name: (r["stage"], r["status"], r.get("reason")) for name, r in rows.items()}
    assert outcome == {"small": ("screen", "rejected", "low_resolution"),
                       "four_three": ("screen", "rejected", "aspect_ratio"),
                       "short": ("screen", "rejected", "no_clips"), "hd": ("split", "ok", None)}
    assert "split.min_duration (2 s)" in rows["short"]["detail"]
    # the rejection is the filter's, word for word: the reason, the detail and the decision record it gives a
    # clip of the source (judged whole, as before the screen existed)
    for name in ("small", "four_three"):
        [judged] = ClipFilter(cfg.filter).judge(_clip_row(sources / f"{name}.mp4"))
        assert (rows[name]["reason"], rows[name]["detail"]) == (judged["reason"], judged["detail"])
        assert rows[name]["scores"] == judged["scores"]
        record = DecisionRecord.from_json(rows[name]["scores"])
        assert record.rejected_by == rows[name]["reason"] and not record.score_only
    small = DecisionRecord.from_json(rows["small"]["scores"])
    assert small.checks["low_resolution"] == Check(360, 720, False)
    assert rows["small"]["detail"] == ("quality.short_side 360 < 720 (filter.quality.min_short_side): "
                                       "the source is not high-definition")
    four_three = DecisionRecord.from_json(rows["four_three"]["scores"])
    assert four_three.checks["aspect_ratio"] == Check(0.25, 0.05, False) and four_three.checks["low_resolution"].passed
    # the HD source goes on with its checks passed, and the split gets them in its row
    hd = DecisionRecord.from_json(rows["hd"]["scores"])
    assert set(hd.checks) == {"low_resolution", "aspect_ratio"} and all(c.passed for c in hd.checks.values())
    # the task's persisted state: the rejected sources end at the screen, with their records; no split row
    state = WorkArea.of(cfg.output).read_state("split", 0).to_pylist()
    by_source = {r["source_id"]: r for r in state}
    assert {(r["source_id"], r["stage"]) for r in state} == {("small", "screen"), ("four_three", "screen"),
                                                            ("short", "screen"), ("hd", "split")}
    assert json.loads(by_source["small"]["scores"])["rejected_by"] == "low_resolution"


def test_score_only_records_the_failed_checks_and_rejects_nothing(
        sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows, split, _ = _run(sources, tmp_path / "corpus", monkeypatch, score_only=True)
    assert split == ["small", "four_three", "hd"], "short is the split's rule (no scene long enough), not a filter's"
    for name, failed in (("small", ["low_resolution"]), ("four_three", ["aspect_ratio"]), ("hd", [])):
        record = DecisionRecord.from_json(rows[name]["scores"])
        assert rows[name]["status"] == "ok" and record.score_only and record.rejected_by is None
        assert record.failed == failed


@pytest.mark.parametrize("switch", [{"enabled": False}, {"quality_enabled": False}])
def test_no_screen_when_the_filter_or_its_quality_filter_is_off(
        sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, switch: dict[str, bool]) -> None:
    rows, split, _ = _run(sources, tmp_path / "corpus", monkeypatch, **switch)
    assert split == ["small", "four_three", "hd"]
    assert all(rows[name]["status"] == "ok" and not rows[name].get("scores") for name in split)
    assert rows["short"]["reason"] == "no_clips", "no scene of a source this short can make a clip, filters or not"


def test_the_filter_continues_the_screens_record_without_judging_the_source_again(
        sources: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clip of a screened source gets the record it would get judged whole, and the source rules run once."""
    cfg = FilterConfig()
    cfg.text.enabled = cfg.watermark.enabled = False
    for score_only in (False, True):
        cfg.score_only = score_only
        whole = {name: ClipFilter(cfg).judge(_clip_row(sources / f"{name}.mp4"))[0] for name in ("hd", "small")}
        screened = {name: screen_source(_clip_row(sources / f"{name}.mp4"), cfg) for name in ("hd", "small")}
        with monkeypatch.context() as patched:
            patched.setattr("curation.filtering.source_scores", lambda *_: pytest.fail("the source judged twice"))
            for name in ("hd", "small") if score_only else ("hd",):
                [continued] = ClipFilter(cfg).judge(screened[name])
                assert continued["scores"] == whole[name]["scores"], (name, score_only)
                assert continued.get("reason") == whole[name].get("reason")
    assert DecisionRecord.from_json(whole["small"]["scores"]).failed == ["low_resolution"]
