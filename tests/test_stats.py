"""Dataset statistics: numbers checked against the index, the funnel's accounting, compare mode, CLI, browser,
the widescreen definition taken from the filter's config, and a corpus in an object store.

The tests on ``curated_corpus`` need the curation pipeline; those on ``small_corpus`` (written by hand in
the layout) do not.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curation.config import FilterConfig
from curation.filtering import ClipFilter
from curation.ids import source_id
from jobs.cli import main as cli_main
from shards.layout import INDEX_DIR, MANIFEST_FILE, REJECTIONS_DIR, partition_name, partition_of
from shards.reader import iter_samples, read_index, read_manifest, read_rejections
from shards.schema import INDEX_SCHEMA, REJECTION_SCHEMA, to_table
from shards.scores import DecisionRecord
from stats.compute import compute_stats
from stats.describe import QUANTILES
from stats.report import REPORT_FILE, STATS_FILE, write_report
from stats.scores import collect_scores
from storage import Location
from tests.layout_corpus import Clip, s3_bucket_or_skip, upload_tree, write_corpus
from tests.test_filters_record import filter_config, judge, make_clips

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "test-artifacts"

#: Caption words of the derived corpus; captions repeat so that duplicates and frequent words exist.
SUBJECTS = ("a red car", "a small dog", "the old man", "a red car")
ACTIONS = ("drives along the coast", "runs on the beach", "walks in the park")


@pytest.fixture(scope="module")
def stats(curated_corpus) -> dict:
    return compute_stats(curated_corpus["root"])


def _judge_config(**changes: Any) -> FilterConfig:
    """The filter's defaults with quality and motion on, text and watermarks off (no detector: fast)."""
    cfg = FilterConfig()
    cfg.text.enabled = cfg.watermark.enabled = False
    for dotted, value in changes.items():
        group, field = dotted.split("__")
        setattr(getattr(cfg, group), field, value)
    return cfg


@pytest.fixture(scope="module")
def filtered_corpus(curated_corpus, tmp_path_factory) -> Path:
    """The curated corpus as the filter leaves it: every clip (its mp4 taken from the shards) judged by the real
    ``ClipFilter``, kept clips in the index with their decision record and a caption, the others in the
    rejections (stage ``filter``) with the filter's reason. ``filter.motion.min_motion`` is put between the
    clips' motion scores, so that some are rejected as ``static``."""
    root = tmp_path_factory.mktemp("filtered")
    clips = root / "clips"
    clips.mkdir()
    shutil.copy(curated_corpus["root"] / MANIFEST_FILE, root / MANIFEST_FILE)
    manifest = read_manifest(root)
    mp4 = {s["key"]: s["mp4"] for s in iter_samples(curated_corpus["root"])}
    rows = read_index(curated_corpus["root"]).to_pylist()
    for n, row in enumerate(rows):
        (clips / f"{row['key']}.mp4").write_bytes(mp4[row["key"]])
        row["caption"] = f"{SUBJECTS[n % len(SUBJECTS)]} {ACTIONS[n % len(ACTIONS)]}"

    def judge(cfg: FilterConfig) -> list[dict]:
        judge = ClipFilter(cfg).judge
        return [{**out, "clip_path": row.get("clip_path")} for row in rows
                for out in judge({**row, "clip_path": str(clips / f"{row['key']}.mp4")})]

    checked = [DecisionRecord.from_json(r["scores"]).checks.get("static")
               for r in judge(_judge_config(quality__enabled=False, motion__min_motion=0.0))]
    motion = sorted({c.score for c in checked if c is not None})
    assert len(motion) > 1, motion
    middle = len(motion) // 2
    cfg = _judge_config(motion__min_motion=(motion[middle - 1] + motion[middle]) / 2)
    judged = judge(cfg)
    kept = [r for r in judged if r.get("status") != "rejected"]
    dropped = [{**r, "stage": "filter"} for r in judged if r.get("status") == "rejected"]
    assert kept and any(r["reason"] == "static" for r in dropped)
    write_partitions(root / INDEX_DIR, kept, INDEX_SCHEMA, manifest["partitions"])
    write_partitions(root / REJECTIONS_DIR, read_rejections(curated_corpus["root"]).to_pylist() + dropped,
                     REJECTION_SCHEMA, manifest["partitions"])
    # Names a statistics reader could mistake for thresholds; the records' own thresholds are the ones to report.
    manifest["config"]["filter"] = {"quality": {"min_short_side": cfg.quality.min_short_side},
                                    "motion": {"min_motion": cfg.motion.min_motion, "max_motion": 99.0},
                                    "static": {"threshold": 99.0}, "static_threshold": 99.0}
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))
    return root


def write_partitions(directory: Path, rows: Iterable[Mapping[str, Any]], schema: pa.Schema, partitions: int) -> None:
    """``rows`` as a dataset of one ``pNNNNN.parquet`` per partition of their sources, as the writer lays it out."""
    by_partition = defaultdict(list)
    for row in rows:
        by_partition[partition_of(row["source_id"], partitions)].append(row)
    for partition, part in by_partition.items():
        Location(str(directory / f"{partition_name(partition)}.parquet")).write_table(to_table(part, schema))


def _quantiles(values: np.ndarray) -> dict[str, float]:
    return {f"p{round(q * 100)}": float(np.quantile(values, q)) for q in QUANTILES}


def test_totals_and_distributions_match_the_index(curated_corpus, stats):
    index = read_index(curated_corpus["root"]).to_pandas()
    manifest = read_manifest(curated_corpus["root"])
    assert len(index) > 3
    totals = stats["totals"]
    assert totals["clips"] == len(index)
    assert totals["hours"] == pytest.approx(index["clip_duration"].sum() / 3600)
    assert totals["bytes"] == int(index["clip_bytes"].sum())
    assert totals["shards"] == len(manifest["shards"]) == index["shard"].nunique()
    assert totals["sources_with_clips"] == index["source_id"].nunique()

    duration = stats["distributions"]["duration_s"]
    assert duration["count"] == len(index)
    assert duration["quantiles"] == pytest.approx(_quantiles(index["clip_duration"].to_numpy()))
    assert duration["min"] == index["clip_duration"].min() and duration["max"] == index["clip_duration"].max()
    assert sum(duration["histogram"]["counts"]) == len(index)
    bitrate = (index["clip_bytes"] * 8e-6 / index["clip_duration"]).to_numpy()
    assert stats["distributions"]["bitrate_mbps"]["mean"] == pytest.approx(bitrate.mean())
    assert stats["distributions"]["bitrate_mbps"]["quantiles"] == pytest.approx(_quantiles(bitrate))
    per_source = np.array(list(Counter(index["source_id"]).values()))
    assert stats["distributions"]["clips_per_source"]["quantiles"] == pytest.approx(_quantiles(per_source))
    resolutions = Counter(f"{w}x{h}" for w, h in zip(index["clip_width"], index["clip_height"]))
    assert {v: n for v, n in stats["distributions"]["resolution"]["top"]} == resolutions
    assert stats["distributions"]["fps"]["mean"] == pytest.approx(index["clip_fps"].mean())
    assert stats["distributions"]["resolution"]["hd_share"] == pytest.approx(
        (index[["clip_width", "clip_height"]].min(axis=1) >= 720).mean())


def test_funnel_accounts_for_every_listed_source(curated_corpus, stats):
    root = curated_corpus["root"]
    index, rejections = read_index(root).to_pylist(), read_rejections(root).to_pylist()
    listed_ids = [source_id(row["url"]) for row in curated_corpus["rows"]]
    ended = {r["source_id"] for r in index} | {r["source_id"] for r in rejections}
    # Nothing disappears, independently of the stats: each listed row (a repeat under its own id) ends somewhere.
    assert set(listed_ids) <= ended and len(ended) == len(listed_ids)

    whole = [r for r in rejections if r["key"] is None and r["start_time"] is None]
    sources = stats["funnel"]["sources"]
    assert sources["listed"] == len(listed_ids)
    assert sources["rejected_whole"] == len(whole) >= 3  # truncated, audio-only, the duplicate listing
    assert sources["with_clips"] == len({r["source_id"] for r in index})
    assert sources["unaccounted"] == 0

    steps = {s["step"]: s for s in stats["funnel"]["steps"]}
    by_stage = Counter(r["stage"] for r in whole)
    assert steps["after probe"]["count"] == (len(listed_ids) - by_stage["manifest"] - by_stage["download"]
                                              - by_stage["probe"])
    assert steps["after manifest"]["reasons"] == {"duplicate": 1}
    assert steps["after probe"]["reasons"] == dict(Counter(r["reason"] for r in whole if r["stage"] == "probe"))
    assert steps["clips cut"]["count"] == len(index) + sum(r["key"] is not None for r in rejections)
    assert steps["in shards"]["count"] == len(index)
    assert steps["captioned"]["count"] == 0 and stats["captions"]["note"] == "no captions yet"
    assert stats["scores"] == {}


def test_stage_times_from_the_manifest(curated_corpus, stats):
    recorded = read_manifest(curated_corpus["root"])["stage_times"]
    throughput = stats["throughput"]
    assert throughput["recorded"] and throughput["wall_s"] > 0
    assert throughput["stages"]["probe"]["results"] == recorded["probe"]["results"]
    # Stages fused in one task report the rows that left the pipeline at them: every clip leaves at the last.
    assert throughput["stages"]["caption"]["results"] == len(read_index(curated_corpus["root"]))
    assert throughput["clip_seconds_per_s"] == pytest.approx(stats["totals"]["hours"] * 3600 / throughput["wall_s"])


def test_scores_and_captions_match_the_index(filtered_corpus):
    stats = compute_stats(filtered_corpus)
    index = read_index(filtered_corpus).to_pylist()
    records = [DecisionRecord.from_json(r["scores"]) for r in index]
    rules = {rule for record in records for rule in record.checks}
    # One score per rule the filter checked (shaky, text_area, watermark are off): its raw scores are not read.
    assert set(stats["scores"]) == rules >= {"low_resolution", "aspect_ratio", "broken_decode", "black_frames",
                                              "static"}
    for rule in rules:
        checks = [record.checks[rule] for record in records]
        scores = np.array([c.score for c in checks], dtype=float)
        assert stats["scores"][rule]["count"] == len(index)
        assert stats["scores"][rule]["quantiles"] == pytest.approx(_quantiles(scores)), rule
        assert stats["scores"][rule]["threshold"] == checks[0].threshold, "the records' threshold, not the config's"
        assert stats["scores"][rule]["at_or_above"] == int((scores >= checks[0].threshold).sum())
    config = read_manifest(filtered_corpus)["config"]["filter"]
    assert stats["scores"]["static"]["threshold"] == pytest.approx(config["motion"]["min_motion"], abs=1e-5)
    assert stats["scores"]["static"]["at_or_above"] == len(index), "every clip kept passed the motion check"
    assert stats["scores"]["low_resolution"]["threshold"] == config["quality"]["min_short_side"] == 720

    captions = [r["caption"] for r in index]
    words = [re.findall(r"[\w']+", c.lower()) for c in captions]
    counted = Counter(w for ws in words for w in ws)
    bigrams = Counter(" ".join(p) for ws in words for p in zip(ws, ws[1:]))
    result = stats["captions"]
    assert result["captioned"] == len(index)
    assert result["vocabulary"] == len(counted)
    assert result["words"]["mean"] == pytest.approx(np.mean([len(ws) for ws in words]))
    assert all(counted[word] == n for word, n in result["top_words"])
    assert [n for _, n in result["top_words"]] == sorted(counted.values(), reverse=True)[: len(result["top_words"])]
    assert {b: n for b, n in result["top_bigrams"]} == {b: bigrams[b] for b, _ in result["top_bigrams"]}
    assert result["duplicate_share"] == pytest.approx(1 - len(set(captions)) / len(captions))

    steps = {s["step"]: s for s in stats["funnel"]["steps"]}
    rejected = [r for r in read_rejections(filtered_corpus).to_pylist() if r["stage"] == "filter"]
    assert steps["after filter"]["reasons"] == dict(Counter(r["reason"] for r in rejected))
    assert steps["after filter"]["reasons"]["static"] >= 1
    assert steps["after filter"]["count"] == steps["in shards"]["count"] == len(index)
    assert steps["captioned"]["count"] == len(index)
    assert stats["funnel"]["sources"]["unaccounted"] == 0


def test_compare_writes_both_corpora_side_by_side(curated_corpus, filtered_corpus, tmp_path):
    out = write_report(curated_corpus["root"], compare=filtered_corpus, out=tmp_path / "report")
    document = json.loads((out / STATS_FILE).read_text())
    page = (out / REPORT_FILE).read_text()
    assert document["totals"]["clips"] == len(read_index(curated_corpus["root"]))
    assert document["compare"]["totals"]["clips"] == len(read_index(filtered_corpus))
    assert document["compare"]["totals"]["clips"] < document["totals"]["clips"]
    assert document["label"] != document["compare"]["label"]
    assert {"HD-VG-130M", "Panda-70M"} <= set(document["reference"])
    assert document["label"] in page and document["compare"]["label"] in page
    assert "data-figure=\"score-static\"" in page and "data-figure=\"words\"" in page


def test_empty_corpus_is_summarised(curated_corpus, tmp_path):
    shutil.copytree(curated_corpus["root"], tmp_path / "empty",
                    ignore=shutil.ignore_patterns("work", "shards", INDEX_DIR))  # no index files: no clips
    out = write_report(tmp_path / "empty")
    document = json.loads((out / STATS_FILE).read_text())
    assert document["totals"]["clips"] == 0 and document["distributions"]["duration_s"] == {"count": 0}
    assert out == Location(str(tmp_path / "empty" / "stats"))


def test_cli_writes_into_the_corpus_and_explains_errors(curated_corpus, tmp_path, capsys, caplog):
    copy = tmp_path / "corpus"
    shutil.copytree(curated_corpus["root"], copy, ignore=shutil.ignore_patterns("work", "shards"))
    assert cli_main(["stats", str(copy)]) == 0
    assert (copy / "stats" / STATS_FILE).is_file() and (copy / "stats" / REPORT_FILE).is_file()
    assert str(copy / "stats" / REPORT_FILE) in capsys.readouterr().out

    assert cli_main(["stats", str(tmp_path / "missing")]) == 2
    assert "does not exist" in caplog.text
    assert cli_main(["stats", str(copy), "--compare", str(tmp_path)]) == 2
    assert "not a finished corpus" in caplog.text
    assert cli_main(["stats", str(copy), "--out", str(copy / MANIFEST_FILE)]) == 2
    assert "give --out a directory" in caplog.text

    job = subprocess.run([sys.executable, "-m", "jobs.stats", str(tmp_path / "missing")], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert job.returncode == 2 and "does not exist" in job.stderr and "Traceback" not in job.stderr


#: Display aspects of the small corpus: exactly 16:9, 3 % off (1.83, inside the filter's default 5 %), 4:3.
ASPECTS = (16 / 9, 16 / 9 * 1.03, 4 / 3)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six clips of three sources in three partitions, written by hand (no pipeline); the videos are stand-ins."""
    root = tmp_path_factory.mktemp("small") / "corpus"
    clips = [Clip({"source_id": f"source{s}", "key": f"source{s}_{n:04d}", "caption": f"clip {n} of source {s}",
                   "clip_duration": 2.0 + n, "clip_width": 1280, "clip_height": 720, "clip_fps": 25.0,
                   "display_aspect": ASPECTS[s]}, b"not really an mp4 %d %d" % (s, n))
             for s in range(3) for n in range(2)]
    write_corpus(root, clips, partitions=3, shard_samples=1,
                 rejections=[{"source_id": "source9", "stage": "probe", "reason": "no_video_stream"}])
    return root


def test_widescreen_is_the_quality_filters_definition(small_corpus: Path, tmp_path: Path) -> None:
    """The share uses filter.quality.aspect and aspect_tolerance of the corpus's config (else the filter's defaults)."""
    default = compute_stats(small_corpus)["distributions"]["display_aspect"]
    assert default["widescreen"] == {"aspect": pytest.approx(16 / 9), "tolerance": 0.05}
    assert default["widescreen_share"] == pytest.approx(4 / 6)
    strict = tmp_path / "strict"
    shutil.copytree(small_corpus, strict)
    manifest = read_manifest(strict)
    manifest["config"] = {"filter": {"quality": {"aspect": 16 / 9, "aspect_tolerance": 0.02}}}
    (strict / MANIFEST_FILE).write_text(json.dumps(manifest))
    out = write_report(strict)
    assert json.loads((out / STATS_FILE).read_text())["distributions"]["display_aspect"]["widescreen_share"] == (
        pytest.approx(2 / 6))
    assert "widescreen (16:9 ± 2 %)" in (out / REPORT_FILE).read_text()


def test_statistics_of_every_partition(small_corpus: Path) -> None:
    stats = compute_stats(small_corpus)
    assert stats["totals"]["clips"] == 6 and stats["totals"]["shards"] == 6
    assert stats["totals"]["sources_with_clips"] == 3
    assert stats["distributions"]["duration_s"]["sum"] == pytest.approx(3 * (2.0 + 3.0))
    assert stats["funnel"]["rejections"] == 1 and stats["captions"]["captioned"] == 6
    assert stats["corpus"] == Location(str(small_corpus)).uri


def test_statistics_of_a_corpus_in_an_object_store(small_corpus: Path, tmp_path: Path,
                                                   request: pytest.FixtureRequest) -> None:
    """``videofactory stats s3://...``: the local copy's numbers; --out DIR local, by default CORPUS/stats remote."""
    remote = upload_tree(small_corpus, f"{s3_bucket_or_skip(request)}/corpus")
    assert cli_main(["stats", remote.uri, "--out", str(tmp_path / "out")]) == 0
    document = json.loads((tmp_path / "out" / STATS_FILE).read_text())
    local = json.loads(json.dumps(compute_stats(small_corpus)))
    same = [k for k in local if k not in ("corpus", "computed", "seconds")]
    assert {k: document[k] for k in same} == {k: local[k] for k in same}
    assert document["corpus"] == remote.uri and document["label"] == "corpus"
    assert cli_main(["stats", remote.uri]) == 0
    assert json.loads((remote / "stats" / STATS_FILE).read_text())["totals"] == local["totals"]
    assert (remote / "stats" / REPORT_FILE).read_text().startswith("<!DOCTYPE html>")


def test_report_renders_in_headless_chromium(curated_corpus, filtered_corpus, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium not installed: run `bash scripts/setup.sh` (it installs Debian's chromium)")
    out = write_report(filtered_corpus, compare=curated_corpus["root"], out=tmp_path / "report")
    url = (out / REPORT_FILE).local_path().as_uri()
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="[^"]*" data-figure="([^"]+)"', dom)
    figures = {name for _, name in images}
    assert {"funnel", "duration_s", "fps", "resolution", "score-static", "caption-words", "bigrams"} <= figures
    for data, name in images:
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            image.load()
            assert image.width > 100 and image.height > 100, name
    assert "<h2>Funnel</h2>" in dom and "Panda-70M" in dom
    # the gallery: real frames of kept clips read from the shards (the filtered copy has none), and of its clips
    # rejected as static, from their local sources (their clip files are gone)
    strips = re.findall(r'<img src="data:image/jpeg;base64,([^"]+)" alt="[^"]*" data-gallery="([^"]+)"', dom)
    kept = [data for data, group in strips if group == "kept"]
    assert len(kept) == min(12, len(read_manifest(curated_corpus["root"])["shards"])) > 0  # the compared corpus
    assert any(group == "filter/static" for _, group in strips) and "frames from the source" in dom
    assert all(np.asarray(Image.open(io.BytesIO(base64.b64decode(s))).convert("L")).std() > 10 for s, _ in strips)

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "stats-report.png"
    subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"))
    assert pixels.shape == (2000, 1280)
    assert pixels.std() > 20 and len(np.unique(pixels)) > 50  # text and figures, not a blank page


# --- filter scores from the records the filter writes (no Ray) --------------------------------------------


@pytest.fixture(scope="module")
def record_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_clips(tmp_path_factory.mktemp("stats-clips"))


def test_score_statistics_are_the_filters_checks(record_clips: dict[str, Path]) -> None:
    """Per rule: the scores of the clips that reached it, and the threshold the filter recorded (config values)."""
    cfg = filter_config()
    texts = [row["scores"] for row in judge(record_clips, cfg).values()]
    scores, thresholds = collect_scores([pa.array(texts[:2]), pa.array([texts[2], "{}", None])])
    records = [DecisionRecord.from_json(t) for t in texts]
    expected: dict[str, list[float]] = defaultdict(list)
    for record in records:
        for rule, check in record.checks.items():
            expected[rule].append(check.score)
    assert {rule: values.to_pylist() for rule, values in scores.items()} == expected
    # the 4:3 clip was rejected on its geometry: it never reached the motion check
    assert len(scores["low_resolution"]) == 3 and len(scores["static"]) == 2
    assert "shaky" not in scores, "a rule switched off has no check, hence no statistics"
    assert thresholds["low_resolution"] == cfg.quality.min_short_side
    assert thresholds["aspect_ratio"] == cfg.quality.aspect_tolerance
    assert thresholds["static"] == pytest.approx(cfg.motion.min_motion)
    assert thresholds["broken_decode"] == records[0].scores["decode"]["frames_wanted"]


def test_score_statistics_of_a_score_only_corpus(record_clips: dict[str, Path], tmp_path: Path) -> None:
    """Every clip is in the index with every check; thresholds come from the records, never from config key names."""
    rows = judge(record_clips, filter_config(score_only=True))
    clips = [Clip({**row, "caption": name, "clip_width": 1280, "clip_height": 720, "clip_fps": 25.0},
                  Path(row["clip_path"]).read_bytes()) for name, row in rows.items()]
    write_corpus(tmp_path, clips, partitions=2, shard_samples=2)
    manifest = read_manifest(tmp_path)
    manifest["config"] = {"filter": {"motion": {"min_motion": 5.0, "threshold": 5.0}, "static_threshold": 5.0,
                                     "static": {"threshold": 5.0}, "min_static": 5.0}}
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
    result = compute_stats(tmp_path)["scores"]
    records = {name: DecisionRecord.from_json(row["scores"]) for name, row in rows.items()}
    assert set(result) == set(records["moving"].checks)
    assert all(summary["count"] == 3 for summary in result.values())
    static = result["static"]
    assert static["threshold"] == pytest.approx(filter_config().motion.min_motion)
    assert static["at_or_above"] == 2, "the still is the one clip under the motion threshold"
    assert static["min"] == records["still"].checks["static"].score
    assert result["aspect_ratio"]["max"] == pytest.approx(0.25)
