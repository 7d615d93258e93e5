"""Curation at corpus scale: partitions written as they finish, incremental runs, object storage end to end.

The object store is a real S3 API server on loopback (``moto_server``, started by the fixtures in
``tests/conftest.py``); the job talks to it through the same pyarrow S3 client that serves AWS.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from curation.config import load_config
from curation.pipeline import run_curation
from shards.layout import partition_of
from shards.reader import read_index, read_rejections
from shards.validate import validate
from storage import Location
from tests.layout_corpus import comparable
from tests.media import one_shot_videos

VIDEOFACTORY = str(Path(sys.executable).parent / "videofactory")


def config(input_path: str, output: str, partitions: int | None = None):
    cfg = load_config(None, input=input_path, output=output)
    cfg.split.min_duration = 1.0
    cfg.caption.enabled = False  # no weights here; tests/test_caption.py runs the stage on a tiny model
    cfg.filter.enabled = False  # the clips are tiny: tests/test_filters.py runs the filters
    cfg.write.partitions = partitions
    return cfg


def shard_files(corpus: Path) -> dict[str, tuple[str, int]]:
    """Shard name -> (sha256, mtime in ns)."""
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted((corpus / "shards").glob("*.tar"))}


def test_an_incremental_run_rewrites_only_the_partitions_of_new_sources(local_ray, tmp_path: Path):
    videos = tmp_path / "videos"
    one_shot_videos(videos, [f"first{i}" for i in range(6)])
    corpus = tmp_path / "corpus"
    run_curation(config(str(videos), str(corpus), partitions=4))
    before = shard_files(corpus)
    assert len(before) >= 2, "the sources should spread over several partitions"

    added = one_shot_videos(videos, ["added0"])
    summary = run_curation(config(str(videos), str(corpus), partitions=4))
    new_partition = partition_of(read_index(corpus).filter(
        pa.compute.equal(read_index(corpus)["source"], str(added[0])))["source_id"][0].as_py(), 4)
    assert summary.partitions == 1
    after = shard_files(corpus)
    for name, (sha, mtime) in before.items():
        if f"-p{new_partition:05d}-" not in name:
            assert after[name] == (sha, mtime), f"{name} was rewritten though no source of it changed"
    assert any(f"-p{new_partition:05d}-" in name for name in after)

    fresh = tmp_path / "fresh"
    run_curation(config(str(videos), str(fresh), partitions=4))
    assert read_index(corpus).sort_by("key").equals(read_index(fresh).sort_by("key"))
    assert {n: s for n, (s, _) in shard_files(corpus).items()} == {n: s for n, (s, _) in shard_files(fresh).items()}
    assert validate(corpus).ok, validate(corpus).summary()


def test_partitions_are_fixed_at_a_corpus_first_run(local_ray, tmp_path: Path):
    videos = tmp_path / "videos"
    one_shot_videos(videos, ["one", "two"])
    run_curation(config(str(videos), str(tmp_path / "corpus"), partitions=2))
    with pytest.raises(ValueError, match="keeps its partition count"):
        run_curation(config(str(videos), str(tmp_path / "corpus"), partitions=8))


def test_keep_clips_keeps_the_work_area_clips(local_ray, tmp_path: Path):
    videos = tmp_path / "videos"
    one_shot_videos(videos, ["one"])
    cfg = config(str(videos), str(tmp_path / "corpus"))
    cfg.write.keep_clips = True
    run_curation(cfg)
    kept = list((tmp_path / "corpus" / "work" / "clips").rglob("*.mp4"))
    assert len(kept) == read_index(tmp_path / "corpus").num_rows == 1


# -- object storage --------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VIDEOFACTORY, *args], capture_output=True, text=True, timeout=timeout, check=False,
                          env=env or dict(os.environ))


def test_curate_validate_and_stats_on_an_object_store(local_ray, s3_bucket: str, tmp_path: Path):
    videos = one_shot_videos(tmp_path / "videos", ["alpha", "beta", "gamma"])
    inputs = Location(s3_bucket) / "in"
    for video in videos:
        (inputs / video.name).upload_from(_copy(video, tmp_path))
    settings = tmp_path / "job.yaml"
    settings.write_text(yaml.safe_dump({"split": {"min_duration": 1.0}, "filter": {"enabled": False},
                                        "caption": {"enabled": False}}))
    output = f"{s3_bucket}/out"
    result = run_cli("curate", "--config", str(settings), "--input", f"{s3_bucket}/in/", "--output", output)
    assert result.returncode == 0, result.stderr[-3000:]

    index = read_index(output)
    assert index.num_rows == 3 and set(index["source"].to_pylist()) == {str(inputs / v.name) for v in videos}
    assert read_rejections(output).num_rows == 0
    assert json.loads((Location(output) / "manifest.json").read_text())["counts"]["clips"] == 3
    checked = run_cli("validate", output)
    assert checked.returncode == 0 and "OK" in checked.stdout, checked.stdout + checked.stderr
    assert not (Location(output) / "work" / "clips").files(recursive=True), "clips live once, in the shards"

    local = tmp_path / "local"
    run_curation(config(str(tmp_path / "videos"), str(local)))
    assert comparable(index) == comparable(read_index(local))  # the same clips, cut the same way, as on a disk

    stats_dir = tmp_path / "stats"
    reported = run_cli("stats", output, "--out", str(stats_dir))
    assert reported.returncode == 0, reported.stderr[-3000:]
    assert json.loads((stats_dir / "stats.json").read_text())["totals"]["clips"] == 3
    assert (stats_dir / "report.html").stat().st_size > 1000


def _copy(video: Path, tmp_path: Path) -> Path:
    """A copy to upload (``upload_from`` moves a local file when it can)."""
    copy = tmp_path / "upload" / video.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(video.read_bytes())
    return copy


def test_a_missing_bucket_is_a_clear_error_at_start(s3_server, tmp_path: Path):
    one_shot_videos(tmp_path / "videos", ["one"])
    result = run_cli("curate", "--input", str(tmp_path / "videos"), "--output", "s3://no-such-bucket-here/out",
                     timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "does not exist" in result.stderr and "no-such-bucket-here" in result.stderr
    assert "Traceback" not in result.stderr


def test_refused_credentials_are_a_clear_error_at_start(tmp_path: Path):
    from tests.s3_server import S3Server

    one_shot_videos(tmp_path / "videos", ["one"])
    with S3Server() as server:
        bucket = server.create_bucket()
        server.enforce_auth()
        result = run_cli("curate", "--input", str(tmp_path / "videos"), "--output", f"s3://{bucket}/out",
                         env={**os.environ, **server.env()}, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "refused access" in result.stderr and "AWS_ACCESS_KEY_ID" in result.stderr
    assert "Traceback" not in result.stderr
