"""The download stage against a real HTTP server and real files (no mocks)."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from curation.config import DownloadConfig
from curation.download import Fetched, fetch, ytdlp_claims
from curation.errors import Rejection
from curation.ids import source_id
from tests.http_server import VideoServer

CLIP = "clip.mp4"


@pytest.fixture
def cfg() -> DownloadConfig:
    """Fast retries; a max_backoff above the server's Retry-After of 1 s so it is honoured in full."""
    return DownloadConfig(timeout_s=5.0, retries=3, backoff_s=0.01, max_backoff_s=2.0)


@pytest.fixture
def clip(served_video_dir: Path) -> Path:
    return served_video_dir / CLIP


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_url(url: str, dest: Path, cfg: DownloadConfig) -> Fetched:
    return fetch(url, source_id(url), dest, cfg)


def reject(url: str, dest: Path, cfg: DownloadConfig) -> Rejection:
    with pytest.raises(Rejection) as info:
        fetch_url(url, dest, cfg)
    return info.value


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


# --- local sources -------------------------------------------------------------------------------


def test_local_path_is_used_in_place(clip: Path, tmp_path: Path, cfg: DownloadConfig) -> None:
    got = fetch(str(clip), source_id(str(clip)), tmp_path / "dl", cfg)
    assert got == Fetched(str(clip), "local", sha256(clip), clip.stat().st_size)
    assert leftovers(tmp_path / "dl") == []


def test_file_url_is_used_in_place(clip: Path, tmp_path: Path, cfg: DownloadConfig) -> None:
    got = fetch_url(clip.as_uri(), tmp_path, cfg)
    assert (got.local_path, got.method, got.sha256) == (str(clip), "local", sha256(clip))


def _empty_file(d: Path) -> Path:
    (d / "empty.mp4").touch()
    return d / "empty.mp4"


@pytest.mark.parametrize(
    ("make", "reason"),
    [(lambda d: d / "nope.mp4", "not_found"), (lambda d: d, "not_a_file"), (_empty_file, "empty_file")],
    ids=["missing", "directory", "empty"],
)
def test_bad_local_sources_are_rejected(
    make: Callable[[Path], Path], reason: str, tmp_path: Path, cfg: DownloadConfig
) -> None:
    path = make(tmp_path)
    rejection = reject(str(path), tmp_path / "dl", cfg)
    assert rejection.reason == reason
    assert str(path) in rejection.detail


def test_unsupported_scheme_and_empty_source(tmp_path: Path, cfg: DownloadConfig) -> None:
    assert reject("ftp://example.org/a.mp4", tmp_path, cfg).reason == "unsupported_scheme"
    assert reject("   ", tmp_path, cfg).reason == "no_source"


# --- plain HTTP ----------------------------------------------------------------------------------


def test_http_download(video_server: VideoServer, clip: Path, tmp_path: Path, cfg: DownloadConfig) -> None:
    url = video_server.url(f"/videos/{CLIP}")
    got = fetch_url(url, tmp_path / "dl", cfg)
    final = tmp_path / "dl" / f"{source_id(url)}.mp4"
    assert got == Fetched(str(final), "http", sha256(clip), clip.stat().st_size)
    assert leftovers(tmp_path / "dl") == [final.name]
    assert video_server.requests_for(f"/videos/{CLIP}")[0].headers["User-Agent"] == cfg.user_agent


@pytest.mark.parametrize(("route", "status"), [("missing", 404), ("forbidden", 403)])
def test_client_errors_are_permanent(
    video_server: VideoServer, tmp_path: Path, cfg: DownloadConfig, route: str, status: int
) -> None:
    url = video_server.url(f"/{route}/{CLIP}")
    rejection = reject(url, tmp_path, cfg)
    assert rejection.reason == f"http_{status}"
    assert url in rejection.detail
    assert video_server.count(f"/{route}/{CLIP}") == 1  # not retried
    assert leftovers(tmp_path) == []


def test_server_errors_are_retried(
    video_server: VideoServer, clip: Path, tmp_path: Path, cfg: DownloadConfig
) -> None:
    got = fetch_url(video_server.url(f"/flaky/{CLIP}"), tmp_path, cfg)
    assert got.sha256 == sha256(clip)
    assert video_server.count(f"/flaky/{CLIP}") == 3  # 500, 500, 200


def test_server_errors_exhaust_retries(video_server: VideoServer, tmp_path: Path, cfg: DownloadConfig) -> None:
    cfg.retries = 1
    rejection = reject(video_server.url(f"/flaky/{CLIP}"), tmp_path, cfg)
    assert rejection.reason == "http_500"
    assert "2 attempts" in rejection.detail


def test_retry_after_is_honoured(
    video_server: VideoServer, clip: Path, tmp_path: Path, cfg: DownloadConfig
) -> None:
    start = time.monotonic()
    got = fetch_url(video_server.url(f"/ratelimited/{CLIP}"), tmp_path, cfg)
    assert time.monotonic() - start >= 1.0
    assert got.sha256 == sha256(clip)
    assert video_server.count(f"/ratelimited/{CLIP}") == 2


def test_truncated_body_is_retried_then_rejected(
    video_server: VideoServer, tmp_path: Path, cfg: DownloadConfig
) -> None:
    """/truncated ignores Range and always hangs up half-way, so every attempt restarts and fails."""
    url = video_server.url(f"/truncated/{CLIP}")
    rejection = reject(url, tmp_path, cfg)
    assert rejection.reason == "truncated"
    assert f"{cfg.retries + 1} attempts" in rejection.detail
    assert video_server.count(f"/truncated/{CLIP}") == cfg.retries + 1
    assert [r.headers.get("Range") for r in video_server.requests_for(f"/truncated/{CLIP}")][1:] == [
        "bytes=" + str(Path(video_server.root_dir / CLIP).stat().st_size // 2) + "-"
    ] * cfg.retries
    # Only the partial file is left, for a later run to resume; nothing under a final name.
    assert leftovers(tmp_path) == [f"{source_id(url)}.part"]


def test_timeout(video_server: VideoServer, tmp_path: Path, cfg: DownloadConfig) -> None:
    cfg.timeout_s, cfg.retries = 0.5, 1
    start = time.monotonic()
    rejection = reject(video_server.url(f"/slow/{CLIP}"), tmp_path, cfg)
    assert rejection.reason == "timeout"
    assert time.monotonic() - start < 3.0
    assert video_server.count(f"/slow/{CLIP}") == 2


def test_unreachable(tmp_path: Path, cfg: DownloadConfig) -> None:
    with socket.socket() as sock:  # a port nobody listens on once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg.retries = 1
    rejection = reject(f"http://127.0.0.1:{port}/videos/{CLIP}", tmp_path, cfg)
    assert rejection.reason == "unreachable"


def test_bad_url(tmp_path: Path, cfg: DownloadConfig) -> None:
    assert reject("http://", tmp_path, cfg).reason == "bad_url"


def test_text_is_not_a_video(video_server: VideoServer, tmp_path: Path, cfg: DownloadConfig) -> None:
    rejection = reject(video_server.url(f"/text/{CLIP}"), tmp_path, cfg)
    assert rejection.reason == "not_a_video"
    assert "text/plain" in rejection.detail
    assert leftovers(tmp_path) == []


def test_too_large_is_refused_before_downloading(
    video_server: VideoServer, tmp_path: Path, cfg: DownloadConfig
) -> None:
    cfg.max_bytes = 1000
    rejection = reject(video_server.url(f"/videos/{CLIP}"), tmp_path, cfg)
    assert rejection.reason == "too_large"
    assert leftovers(tmp_path) == []


def test_unannounced_size(video_server: VideoServer, clip: Path, tmp_path: Path, cfg: DownloadConfig) -> None:
    """Without Content-Length the file is taken as it comes, and max_bytes is enforced while streaming."""
    url = video_server.url(f"/chunked/{CLIP}")
    assert fetch_url(url, tmp_path / "ok", cfg).sha256 == sha256(clip)
    cfg.max_bytes = 20_000
    rejection = reject(url, tmp_path / "big", cfg)
    assert rejection.reason == "too_large"
    assert leftovers(tmp_path / "big") == []


def test_resume_appends_to_partial_file(
    video_server: VideoServer, clip: Path, tmp_path: Path, cfg: DownloadConfig
) -> None:
    url = video_server.url(f"/videos/{CLIP}")
    half = clip.stat().st_size // 2
    (tmp_path / f"{source_id(url)}.part").write_bytes(clip.read_bytes()[:half])
    got = fetch_url(url, tmp_path, cfg)
    assert (got.sha256, got.size) == (sha256(clip), clip.stat().st_size)
    assert [r.headers.get("Range") for r in video_server.requests_for(f"/videos/{CLIP}")] == [f"bytes={half}-"]
    assert leftovers(tmp_path) == [f"{source_id(url)}.mp4"]


def test_complete_download_is_reused_without_network(
    video_server: VideoServer, clip: Path, tmp_path: Path, cfg: DownloadConfig
) -> None:
    url = video_server.url(f"/videos/{CLIP}")
    first = fetch_url(url, tmp_path, cfg)
    second = fetch_url(url, tmp_path, cfg)
    assert first == second
    assert video_server.count(f"/videos/{CLIP}") == 1


# --- yt-dlp --------------------------------------------------------------------------------------


def test_html_page_goes_through_ytdlp(
    video_server: VideoServer, clip: Path, tmp_path: Path, cfg: DownloadConfig
) -> None:
    url = video_server.url(f"/page/{CLIP}")
    got = fetch_url(url, tmp_path, cfg)
    assert (got.method, got.sha256, got.size) == ("yt-dlp", sha256(clip), clip.stat().st_size)
    assert Path(got.local_path).parent == tmp_path
    assert Path(got.local_path).name.startswith(source_id(url) + ".")
    assert video_server.count(f"/videos/{CLIP}") >= 1


def test_html_page_without_video(video_server: VideoServer, tmp_path: Path, cfg: DownloadConfig) -> None:
    rejection = reject(video_server.url(f"/novideo/{CLIP}"), tmp_path, cfg)
    assert rejection.reason == "not_a_video"
    assert "yt-dlp" in rejection.detail


def test_site_urls_are_claimed_by_ytdlp(video_server: VideoServer) -> None:
    assert ytdlp_claims("https://www.youtube.com/watch?v=dQw4w9WgXcQ")
    assert ytdlp_claims("https://vimeo.com/76979871")
    assert not ytdlp_claims(video_server.url(f"/videos/{CLIP}"))
    assert not ytdlp_claims(video_server.url(f"/page/{CLIP}"))
