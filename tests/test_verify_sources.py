"""``videofactory verify-sources``: every source of a corpus re-checked against the loopback HTTP server and the local
disk, without downloading (HEAD, a GET of byte 0 where HEAD is refused) or with --hash, within a rate limit.

The corpus is written by hand in the layout (no pipeline, no Ray).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest
import yt_dlp

from curation.verify import TokenBucket, verify_config, verify_sources, ytdlp_status
from jobs.cli import main as cli_main
from shards.layout import AVAILABILITY_DIR
from shards.schema import AVAILABILITY_SCHEMA
from tests.http_server import VideoServer
from tests.layout_corpus import Clip, s3_bucket_or_skip, upload_tree, write_corpus

LOOPBACK = ["download.allow_private_networks=true", "download.backoff_s=0.05"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def served(tmp_path: Path):
    files = tmp_path / "files"
    files.mkdir()
    with VideoServer(files, retry_after=1) as server:
        yield server, files


def _corpus(root: Path, server: VideoServer, files: Path) -> dict[str, str]:
    """Sources of every kind, recorded as the download saw them; then some change. Returns source -> source_id."""
    content = {name: name.encode() * 500 for name in "abcdefg"}
    for name, data in content.items():
        (files / f"{name}.mp4").write_bytes(data)
    local = root.parent / "local.mp4"
    local.write_bytes(b"local video" * 100)
    sources = {
        "unchanged": server.url("/videos/a.mp4"), "gone": server.url("/missing/b.mp4"),
        "forbidden": server.url("/forbidden/c.mp4"), "busy": server.url("/busy/d.mp4"),
        "same_size": server.url("/videos/e.mp4"), "resized": server.url("/videos/f.mp4"),
        "nohead": server.url("/nohead/g.mp4"), "local": str(local), "local_gone": str(root.parent / "gone.mp4"),
    }
    recorded = {**{k: content[Path(v).stem] for k, v in sources.items() if v.startswith("http")},
                "local": local.read_bytes(), "local_gone": b"was here"}
    clips = [Clip({"source_id": f"s{n:02d}", "key": f"s{n:02d}_{k:04d}", "source": sources[kind],
                   "source_sha256": _sha(recorded[kind]), "source_bytes": len(recorded[kind])}, b"mp4")
             for n, kind in enumerate(sources) for k in range(2)]  # two clips a source: one status row
    rejected = {"source_id": "s99", "source": server.url("/videos/a.mp4"), "stage": "screen",
                "reason": "low_resolution"}
    write_corpus(root, clips, partitions=3, shard_samples=4, rejections=[rejected])
    (files / "e.mp4").write_bytes(b"E" * len(content["e"]))  # same size, other bytes: only a hash sees it
    (files / "f.mp4").write_bytes(content["f"] + b"more")
    return {kind: f"s{n:02d}" for n, kind in enumerate(sources)} | {"rejected": "s99"}


def _rows(out: Path) -> dict[str, dict]:
    files = sorted(out.glob("p*.parquet"))
    assert files and all(pq.read_schema(f).equals(AVAILABILITY_SCHEMA, check_metadata=False) for f in files)
    rows = [row for f in files for row in pq.read_table(f).to_pylist()]
    assert len({r["source_id"] for r in rows}) == len(rows), "one row per source"
    return {r["source_id"]: r for r in rows}


def test_statuses_without_downloading(served, tmp_path: Path) -> None:
    server, files = served
    root = tmp_path / "corpus"
    ids = _corpus(root, server, files)
    summary = verify_sources(root, verify_config(root, LOOPBACK))
    rows = _rows(root / AVAILABILITY_DIR)
    status = {kind: rows[sid]["status"] for kind, sid in ids.items()}
    assert status == {"unchanged": "available", "gone": "gone", "forbidden": "forbidden", "busy": "available",
                      "same_size": "available", "resized": "changed", "nohead": "available", "local": "available",
                      "local_gone": "gone", "rejected": "available"}
    assert rows[ids["gone"]]["http_status"] == 404 and rows[ids["forbidden"]]["http_status"] == 403
    assert rows[ids["resized"]]["size"] == rows[ids["resized"]]["recorded_bytes"] + 4
    assert rows[ids["resized"]]["reason"] == "size"
    assert rows[ids["unchanged"]]["content_type"] == "video/mp4" and rows[ids["unchanged"]]["method"] == "head"
    assert rows[ids["rejected"]]["recorded_sha256"] is None and rows[ids["rejected"]]["size"] == 500
    assert rows[ids["local"]]["method"] == "file" and rows[ids["local"]]["size"] == 1100
    assert all(r["checked_at"] is not None for r in rows.values())

    # nothing was downloaded: HEAD everywhere, except one byte where HEAD was refused
    assert {r.method for r in server.requests} == {"HEAD", "GET"}
    gets = [r for r in server.requests if r.method == "GET"]
    assert {r.path for r in gets} == {"/nohead/g.mp4", "/forbidden/c.mp4"}
    assert all(r.headers.get("Range") == "bytes=0-0" for r in gets)
    assert rows[ids["nohead"]]["method"] == "range" and rows[ids["nohead"]]["size"] == 500
    assert rows[ids["nohead"]]["http_status"] == 206

    # 503 with Retry-After: 1, then 200: retried once, after the server's wait
    busy = server.requests_for("/busy/d.mp4")
    assert [r.method for r in busy] == ["HEAD", "HEAD"] and rows[ids["busy"]]["attempts"] == 2
    assert busy[1].time - busy[0].time >= 0.95

    assert summary["sources"] == len(ids) and summary["by_status"]["available"] == 6
    assert summary["by_status"]["gone"] == 2 and summary["by_status"]["changed"] == 1
    assert summary["by_reason"]["gone/http_404"] == 1 and summary["by_reason"]["gone/not_found"] == 1
    assert json.loads((root / AVAILABILITY_DIR / "summary.json").read_text()) == summary


def test_hash_finds_changed_bytes_of_the_same_size(served, tmp_path: Path) -> None:
    server, files = served
    root = tmp_path / "corpus"
    ids = _corpus(root, server, files)
    verify_sources(root, verify_config(root, LOOPBACK, hash=True), out=tmp_path / "out")
    rows = _rows(tmp_path / "out")
    status = {kind: rows[sid]["status"] for kind, sid in ids.items()}
    assert status == {"unchanged": "unchanged", "gone": "gone", "forbidden": "forbidden", "busy": "unchanged",
                      "same_size": "changed", "resized": "changed", "nohead": "unchanged", "local": "unchanged",
                      "local_gone": "gone", "rejected": "available"}
    assert rows[ids["same_size"]]["reason"] == "sha256"
    assert rows[ids["gone"]]["http_status"] == 404 and rows[ids["gone"]]["method"] == "download"
    assert all(r["attempts"] == 1 for r in rows.values()), "one download each (fetch retries within it)"
    assert rows[ids["same_size"]]["sha256"] == _sha((files / "e.mp4").read_bytes())
    assert rows[ids["rejected"]]["sha256"] == _sha((files / "a.mp4").read_bytes()), "hashed, nothing to compare with"
    assert not list(tmp_path.glob("**/s0*.mp4")), "downloads go to a scratch directory that is removed"


def test_resume_keeps_the_partitions_checked_before(served, tmp_path: Path) -> None:
    server, files = served
    root = tmp_path / "corpus"
    _corpus(root, server, files)
    out = root / AVAILABILITY_DIR
    first = verify_sources(root, verify_config(root, LOOPBACK))
    kept = sorted(out.glob("p*.parquet"))[0]
    checked_before = pq.read_table(kept)["source_id"].to_pylist()
    for other in sorted(out.glob("p*.parquet"))[1:]:
        other.unlink()  # as if the run had stopped after its first partition
    (out / "p99999.parquet").write_bytes(kept.read_bytes())  # a partition the corpus no longer has
    seen = len(server.requests)
    again = verify_sources(root, verify_config(root, LOOPBACK, resume=True))
    assert again["resumed_partitions"] == 1 and again["by_status"] == first["by_status"]
    assert not (out / "p99999.parquet").exists()
    rows = _rows(out)
    rechecked = {urlsplit(r["source"]).path for sid, r in rows.items()
                 if sid not in checked_before and r["source"].startswith("http")}
    assert "/busy/d.mp4" not in rechecked, "the kept partition holds a URL no other partition has"
    assert {r.path for r in server.requests[seen:]} == rechecked, "only the partitions not checked before"


def test_private_addresses_are_refused_as_the_download_refuses_them(served, tmp_path: Path) -> None:
    server, files = served
    root = tmp_path / "corpus"
    ids = _corpus(root, server, files)
    verify_sources(root, verify_config(root))
    row = _rows(root / AVAILABILITY_DIR)[ids["unchanged"]]
    assert row["status"] == "error" and row["reason"] == "private_network"
    assert not server.requests


def test_requests_keep_to_the_rate(served, tmp_path: Path) -> None:
    """Whatever the concurrency, n requests span at least (n - burst) / rate seconds, and no window holds more."""
    server, files = served
    (files / "v.mp4").write_bytes(b"v" * 100)
    root = tmp_path / "corpus"
    clips = [Clip({"source_id": f"r{n:02d}", "key": f"r{n:02d}_0000", "source": server.url(f"/videos/v.mp4?n={n}")},
                  b"mp4") for n in range(12)]
    write_corpus(root, clips, partitions=2, shard_samples=12)
    rate, burst = 10.0, 2
    summary = verify_sources(root, verify_config(root, LOOPBACK, rate=rate, concurrency=8, burst=burst))
    assert summary["by_status"]["available"] == 12 and summary["requests"] == 12
    times = sorted(r.time for r in server.requests)
    assert len(times) == 12
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            assert j - i <= burst + rate * (times[j] - times[i]) + 1, (i, j, times[j] - times[i])
    assert times[-1] - times[0] >= (len(times) - burst - 1) / rate


def test_no_more_sources_in_flight_than_the_concurrency(tmp_path: Path) -> None:
    """Each answer takes slow_s: with two threads, a third request can only start once a first one has ended."""
    files = tmp_path / "files"
    files.mkdir()
    (files / "v.mp4").write_bytes(b"v" * 100)
    with VideoServer(files, slow_s=0.4) as server:
        root = tmp_path / "corpus"
        write_corpus(root, [Clip({"source_id": f"c{n}", "key": f"c{n}_0000", "source": server.url(f"/slow/v.mp4?{n}")},
                                 b"mp4") for n in range(6)], partitions=1, shard_samples=6)
        summary = verify_sources(root, verify_config(root, LOOPBACK, rate=1000, burst=6, concurrency=2))
        times = sorted(r.time for r in server.requests)
    assert summary["by_status"]["available"] == 6 and len(times) == 6
    assert all(times[i + 2] - times[i] >= 0.38 for i in range(len(times) - 2)), times


def test_corpus_and_status_files_in_an_object_store(served, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    server, files = served
    local = tmp_path / "corpus"
    ids = _corpus(local, server, files)
    remote = upload_tree(local, f"{s3_bucket_or_skip(request)}/corpus")
    summary = verify_sources(remote, verify_config(remote, LOOPBACK))
    out = remote / AVAILABILITY_DIR
    assert summary["out"] == out.uri and json.loads((out / "summary.json").read_text()) == summary
    rows = {r["source_id"]: r for f in out.files() if f.name.endswith(".parquet") for r in f.read_table().to_pylist()}
    assert rows[ids["gone"]]["status"] == "gone" and rows[ids["unchanged"]]["status"] == "available"
    assert len(rows) == len(ids)


def _ytdlp_failure(error: Exception) -> yt_dlp.utils.DownloadError:
    """What ``YoutubeDL.extract_info`` raises: the extractor's error wrapped, with its message."""
    return yt_dlp.utils.DownloadError(f"ERROR: [youtube] abcdefghijk: {error}", exc_info=(type(error), error, None))


@pytest.mark.parametrize(("error", "status", "reason"), [
    (yt_dlp.utils.ExtractorError("Video unavailable. This video has been removed by the uploader", expected=True),
     "gone", "removed"),
    (yt_dlp.utils.ExtractorError("Video unavailable. This video is private", expected=True), "forbidden",
     "login_required"),
    (yt_dlp.utils.ExtractorError("Private video. Sign in if you've been granted access to this video", expected=True),
     "forbidden", "login_required"),
    (yt_dlp.utils.ExtractorError("This video is only available for registered users", expected=True), "forbidden",
     "login_required"),
    (yt_dlp.utils.GeoRestrictedError("This video is not available from your location due to geo restriction"),
     "forbidden", "geo_restricted"),
    (yt_dlp.utils.ExtractorError("Requested format is not available. Use --list-formats", expected=True), "changed",
     "format"),
    (yt_dlp.utils.ExtractorError("Unable to download API page: <urlopen error timed out>"), "error", "ytdlp_failed"),
])
def test_ytdlp_answers_become_statuses(error: Exception, status: str, reason: str) -> None:
    """Pages of sites yt-dlp knows answer 200 whatever became of their video: yt-dlp's extraction errors say."""
    result = ytdlp_status(_ytdlp_failure(error))
    assert (result["status"], result["reason"]) == (status, reason)
    assert result["detail"].startswith("[youtube] abcdefghijk: ")


def test_token_bucket_waits_for_tokens() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(round(seconds, 6))
        now[0] += seconds

    bucket = TokenBucket(rate=4.0, burst=2, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        bucket.acquire()
    assert waits == [0.25, 0.25], "two at once from the burst, then one every 1/rate"
    now[0] += 10  # a quiet spell refills at most `burst` tokens
    for _ in range(3):
        bucket.acquire()
    assert waits == [0.25, 0.25, 0.25]


def test_cli_prints_the_summary_and_explains_errors(served, tmp_path: Path, capsys, caplog) -> None:
    server, files = served
    root = tmp_path / "corpus"
    _corpus(root, server, files)
    args = ["verify-sources", str(root), "--out", str(tmp_path / "status")]
    assert cli_main([*args, *[a for s in LOOPBACK for a in ("--set", s)], "--rate", "50"]) == 0
    printed = capsys.readouterr().out
    assert "gone" in printed and "forbidden" in printed and str(tmp_path / "status") in printed
    assert json.loads((tmp_path / "status" / "summary.json").read_text())["rate"] == 50
    assert cli_main(["verify-sources", str(tmp_path / "missing")]) == 2
    assert "does not exist" in caplog.text
    assert cli_main([*args, "--set", "download.no_such_key=1"]) == 2
    assert "no_such_key" in caplog.text
