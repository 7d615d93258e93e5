"""The whole curation pipeline on a local Ray: every input ends as a clip or a rejection."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pyarrow.compute as pc
import pytest

from curation.config import load_config
from curation.ids import source_id
from curation.pipeline import run_curation
from curation.runner import OperatorWorker
from curation.stages import stage_class
from curation.workarea import WorkArea
from shards.reader import iter_samples, read_index, read_manifest, read_rejections
from shards.schema import to_table
from shards.validate import validate
from tests import media
from tests.http_server import VideoServer

#: Every bad local input and the reason it must be rejected with.
BAD_INPUT_REASONS = {
    "zero_length": "empty_file",
    "truncated": "unreadable",
    "truncated_faststart": "decode_error",
    "not_a_video_image": "not_a_video",
    "not_a_video_text": "unreadable",
    "audio_only": "no_video_stream",
    "corrupt_frames": "decode_error",
    "absurd_dimensions": "absurd_dimensions",
    "tiny_dimensions": "absurd_dimensions",
}

#: Served routes and the reason each must end with (None: it must make clips).
URL_OUTCOMES = {
    "/videos/clip.mp4": None,
    "/flaky/clip.mp4": None,
    "/ratelimited/clip.mp4": None,
    "/page/clip.mp4": None,
    "/missing/clip.mp4": "http_404",
    "/forbidden/clip.mp4": "http_403",
    "/truncated/clip.mp4": "truncated",
    "/text/clip.mp4": "not_a_video",
}


def _config(input_path: Path, output: Path, **overrides):
    cfg = load_config(None, input=str(input_path), output=str(output))
    cfg.split.min_duration = 1.0
    cfg.download.backoff_s = 0.01
    cfg.download.max_backoff_s = 1.5
    cfg.download.retries = 2
    cfg.download.timeout_s = 5.0
    cfg.download.allow_private_networks = True  # the test server is on loopback
    cfg.caption.enabled = False  # no weights here; tests/test_caption.py runs the stage on a tiny model
    cfg.filter.enabled = False  # the served clips are 320x180: tests/test_filters.py runs the filters
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


@pytest.fixture(scope="module")
def mixed_corpus(local_ray, sample_videos: Path, served_video_dir: Path, tmp_path_factory) -> dict:
    """A corpus built from a CSV manifest mixing good videos, bad files and good and bad URLs."""
    root = tmp_path_factory.mktemp("mixed")
    bad_dir = root / "bad"
    bad_dir.mkdir()
    bad = {name: getattr(media, name)(bad_dir) for name in BAD_INPUT_REASONS}
    manifest = root / "manifest.csv"
    with VideoServer(served_video_dir) as server:
        rows = [{"url": str(p), "license": "cc-by", "title": p.stem} for p in sorted(sample_videos.glob("*.*"))]
        rows += [{"url": str(path), "license": "test", "title": name} for name, path in bad.items()]
        rows += [{"url": server.url(route), "license": "served", "title": route} for route in URL_OUTCOMES]
        rows.append({"url": "http://127.0.0.1:9/unreachable.mp4", "license": "none", "title": "unreachable"})
        rows.append(dict(rows[0]))  # listed twice
        with open(manifest, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["url", "license", "title"])
            writer.writeheader()
            writer.writerows(rows)
        cfg = _config(manifest, root / "corpus")
        cfg.download.local_roots = [str(sample_videos), str(root)]  # the sample videos live elsewhere
        summary = run_curation(cfg)
        urls = {route: server.url(route) for route in URL_OUTCOMES}
    return {"root": root / "corpus", "rows": rows, "bad": bad, "urls": urls, "summary": summary}


def _reasons_by_source(corpus: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for row in read_rejections(corpus).to_pylist():
        out.setdefault(row["source"], set()).add(row["reason"])
    return out


def test_every_manifest_row_ends_as_clips_or_a_rejection(mixed_corpus):
    corpus = mixed_corpus["root"]
    clipped = set(read_index(corpus)["source"].to_pylist())
    rejected = set(_reasons_by_source(corpus))
    for row in mixed_corpus["rows"]:
        assert row["url"] in clipped | rejected, f"{row['url']} vanished"
    counts = read_manifest(corpus)["counts"]
    assert counts["sources"] == len(mixed_corpus["rows"])


def test_bad_files_are_rejected_with_readable_reasons(mixed_corpus):
    reasons = _reasons_by_source(mixed_corpus["root"])
    for name, path in mixed_corpus["bad"].items():
        assert BAD_INPUT_REASONS[name] in reasons.get(str(path), set()), (name, reasons.get(str(path)))
    details = read_rejections(mixed_corpus["root"]).column("detail").to_pylist()
    assert all(d and len(d) > 15 for d in details), "every rejection explains itself"


def test_urls_download_retry_or_are_rejected(mixed_corpus):
    clipped = set(read_index(mixed_corpus["root"])["source"].to_pylist())
    reasons = _reasons_by_source(mixed_corpus["root"])
    served = []  # the routes that deliver the same file: exact copies of one another
    for route, url in mixed_corpus["urls"].items():
        expected = URL_OUTCOMES[route]
        if expected is None:
            assert url in clipped or reasons.get(url) == {"exact_copy"}, (route, reasons.get(url))
            served.append(url)
        else:
            assert expected in reasons.get(url, set()), (route, reasons.get(url))
    assert "unreachable" in reasons["http://127.0.0.1:9/unreachable.mp4"]
    kept = [url for url in served if url in clipped]
    assert kept == [min(served, key=source_id)], "of byte-identical downloads, the lowest source id keeps its clips"


def test_duplicate_manifest_rows_are_recorded(mixed_corpus):
    first = mixed_corpus["rows"][0]["url"]
    assert "duplicate" in _reasons_by_source(mixed_corpus["root"])[first]
    keys = read_index(mixed_corpus["root"])["key"].to_pylist()
    assert len(keys) == len(set(keys))


def test_clip_metadata_carries_manifest_columns_and_probe_fields(mixed_corpus):
    samples = {s["key"]: s for s in iter_samples(mixed_corpus["root"])}
    index = read_index(mixed_corpus["root"]).to_pylist()
    assert samples and set(samples) == {row["key"] for row in index}
    for row in index:
        meta = samples[row["key"]]["json"]
        assert json.loads(meta["extra"])["license"] in {"cc-by", "served"}
        assert meta["key"].startswith(source_id(meta["source"]))
        assert meta["display_width"] > 0 and meta["fps"] > 0 and meta["end_time"] > meta["start_time"]
        assert samples[row["key"]]["txt"] == "" == meta["caption"]  # captioning is off in these tests
        assert meta["caption_model"] == "none" and meta["captions"] == "[]"


def test_corpus_validates_and_manifest_lists_shards(mixed_corpus):
    report = validate(mixed_corpus["root"])
    assert report.ok, report.summary()
    manifest = read_manifest(mixed_corpus["root"])
    on_disk = sorted(p.name for p in (mixed_corpus["root"] / "shards").glob("*.tar"))
    assert [s["name"] for s in manifest["shards"]] == on_disk
    assert manifest["versions"]["ray"] and manifest["config"]["split"]["detector"] == "adaptive"


def test_rerun_resumes_without_redoing_or_duplicating(mixed_corpus):
    corpus = mixed_corpus["root"]
    before = read_index(corpus)
    written = {p: p.stat().st_mtime_ns for p in corpus.rglob("*") if p.is_file() and "scratch" not in p.parts
               and p.name != "manifest.json"}
    cfg = load_config(None, **read_manifest(corpus)["config"])
    summary = run_curation(cfg)
    assert summary.partitions == 0  # every partition was written: nothing to process
    assert read_index(corpus).equals(before)
    after = {p: p.stat().st_mtime_ns for p in corpus.rglob("*") if p.is_file() and "scratch" not in p.parts
             and p.name != "manifest.json"}
    changed = {p for p in set(written) | set(after) if written.get(p) != after.get(p)}
    assert {p.relative_to(corpus).parts[:2] for p in changed} <= {("work", "sources")}  # only the re-read input


def test_state_is_one_object_per_source_and_clips_leave_the_work_area(mixed_corpus):
    corpus = mixed_corpus["root"]
    state = [p for p in (corpus / "work" / "state").rglob("*.parquet")]
    sources = read_manifest(corpus)["counts"]["sources"]
    duplicates = read_manifest(corpus)["counts"]["rejections_by_reason"]["manifest/duplicate"]
    assert len(state) == sources - duplicates  # one task per source, whatever its clip count
    copies = read_rejections(corpus).filter(pc.equal(read_rejections(corpus)["reason"], "exact_copy"))
    assert read_index(corpus).num_rows + copies.num_rows > len(state) / 2
    left = {p.parent.name for p in (corpus / "work" / "clips").rglob("*.mp4")}
    assert left == set(copies["source_id"].to_pylist()), "clips are kept once, in their shards (copies' wait)"
    assert not list((corpus / "work").rglob("*.part")) and not list((corpus / "work" / "scratch").rglob("*"))


def test_changed_settings_are_refused_on_the_same_output(mixed_corpus):
    cfg = load_config(None, **read_manifest(mixed_corpus["root"])["config"])
    cfg.split.max_duration = 5.0
    with pytest.raises(ValueError, match="different configuration"):
        run_curation(cfg)


def test_stages_in_separate_jobs_equal_one_job(local_ray, sample_videos: Path, tmp_path: Path):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(sample_videos / "three_scenes.mp4", videos / "three_scenes.mp4")
    run_curation(_config(videos, tmp_path / "one"))
    run_curation(_config(videos, tmp_path / "two", stages=["download", "probe", "split"]))
    assert not (tmp_path / "two" / "index").exists() and not (tmp_path / "two" / "shards").exists()
    run_curation(_config(videos, tmp_path / "two", stages=["extract", "filter", "caption", "write"]))
    assert read_index(tmp_path / "two").equals(read_index(tmp_path / "one"))
    assert validate(tmp_path / "two").ok


def test_a_stage_without_its_input_says_what_to_run(local_ray, sample_videos: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="starts with the download stage"):
        run_curation(_config(sample_videos, tmp_path / "c", stages=["extract"]))


def test_a_job_that_probes_screens_and_what_it_rejects_is_never_split(local_ray, tmp_path: Path):
    """``--stages download,probe`` runs the screen too; a later split job finds nothing of a rejected source."""
    videos = tmp_path / "videos"
    videos.mkdir()
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=s=640x360:r=25:d=3",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(videos / "small.mp4")],
                   check=True, timeout=120)

    def config(stages: list[str]):
        cfg = _config(videos, tmp_path / "c", stages=stages)
        cfg.filter.enabled = True  # the defaults: the quality filter's source rules screen the source
        cfg.filter.text.enabled = False  # no OCR weights needed (the stage is not reached anyway)
        return cfg

    run_curation(config(["download", "probe"]))
    work = WorkArea.of(str(tmp_path / "c"))
    [partition] = work.read_partition_table()["partition"].to_pylist()
    [row] = work.read_state("screen", partition).to_pylist()
    assert (row["stage"], row["status"], row["reason"]) == ("screen", "rejected", "low_resolution")
    assert json.loads(row["scores"])["checks"]["low_resolution"] == {"score": 360, "threshold": 720, "passed": False}
    run_curation(config(["split", "extract"]))
    assert not list((tmp_path / "c" / "work" / "state").glob("split/**/*.parquet"))
    assert not list((tmp_path / "c" / "work" / "state").glob("extract/**/*.parquet")), "nothing split or cut"
    assert not list((tmp_path / "c" / "work").rglob("*/clips/**/*.mp4"))


def test_a_stage_is_set_up_when_its_first_row_reaches_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A worker whose sources the screen rejects never sets up the stages after it (the filter's torch, its text
    detector, a captioner: the fixed cost of a job whose sources are all rejected); the first source that gets
    through sets each up, once."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for name, size in (("small", "640x360"), ("hd", "1280x720")):
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc2=s={size}:r=25:d=3",
                        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(videos / f"{name}.mp4")],
                       check=True, timeout=120)
    cfg = _config(videos, tmp_path / "c")
    cfg.filter.enabled = True  # the defaults: the screen rejects the small source
    cfg.filter.text.enabled = False  # no OCR weights needed
    stages = ("download", "probe", "screen", "split", "extract", "filter")
    set_up: list[str] = []
    for name in stages:
        cls = stage_class(name)
        monkeypatch.setattr(cls, "setup", lambda self, setup=cls.setup: (set_up.append(self.name), setup(self))[1])
    worker = OperatorWorker(cfg.to_dict(), stages, per_clip=False)

    def source(name: str) -> list[dict]:
        row = {"source_id": name, "source": str(videos / f"{name}.mp4"), "extra": "{}", "partition": 0,
               "stage": "manifest", "status": "ok"}
        return worker(to_table([row])).to_pylist()

    [small] = source("small")
    assert (small["stage"], small["status"], small["reason"]) == ("screen", "rejected", "low_resolution")
    assert set_up == ["download", "probe", "screen"]
    assert [(r["stage"], r["status"]) for r in source("hd")] == [("filter", "ok")]
    assert set_up == list(stages)
    source("hd")
    assert set_up == list(stages), "each stage is set up once per worker"
