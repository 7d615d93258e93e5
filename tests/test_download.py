"""The download stage against a real HTTP server and real files (no mocks)."""

from __future__ import annotations

import hashlib
import os
import socket
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest

from curation import download
from curation.config import DownloadConfig
from curation.download import Fetched, fetch, ytdlp_claims
from curation.errors import Rejection
from curation.ids import source_id
from tests.http_server import VideoServer

CLIP = "clip.mp4"


@pytest.fixture
def cfg() -> DownloadConfig:
    """Fast retries; a max_backoff above the server's Retry-After of 1 s so it is honoured in full.

    The test server listens on 127.0.0.1, which downloads refuse by default: these tests allow it.
    """
    return DownloadConfig(timeout_s=5.0, retries=3, backoff_s=0.01, max_backoff_s=2.0, allow_private_networks=True)


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


# --- local sources are confined to their roots, and only regular files are read ------------------


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """``inside/`` (the allowed root) with a video, and a secret next to it, outside."""
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    (inside / "ok.mp4").write_bytes(b"video bytes")
    (outside / "secret.mp4").write_bytes(b"secret bytes")
    return {"inside": inside, "outside": outside, "dl": tmp_path / "dl"}


def test_local_sources_inside_the_roots_are_read(tree: dict[str, Path], cfg: DownloadConfig) -> None:
    ok = tree["inside"] / "ok.mp4"
    (tree["inside"] / "link.mp4").symlink_to(ok)  # a link that stays inside is fine
    for source in (str(ok), ok.as_uri(), str(tree["inside"] / "link.mp4")):
        got = fetch(source, source_id(source), tree["dl"], cfg, roots=[str(tree["inside"])])
        assert got.sha256 == sha256(ok), source


@pytest.mark.parametrize("spelling", ["absolute", "dotdot", "file_url", "symlink", "etc_passwd", "etc_shadow_url"])
def test_local_sources_outside_the_roots_are_refused(
    tree: dict[str, Path], cfg: DownloadConfig, spelling: str
) -> None:
    inside, secret = tree["inside"], tree["outside"] / "secret.mp4"
    (inside / "escape.mp4").symlink_to(secret)
    source = {
        "absolute": str(secret), "dotdot": f"{inside}/../outside/secret.mp4", "file_url": secret.as_uri(),
        "symlink": str(inside / "escape.mp4"), "etc_passwd": "/etc/passwd", "etc_shadow_url": "file:///etc/shadow",
    }[spelling]
    with pytest.raises(Rejection) as caught:
        fetch(source, source_id(source), tree["dl"], cfg, roots=[str(inside)])
    assert caught.value.reason == "outside_roots"
    assert "download.local_roots" in caught.value.detail and source in caught.value.detail


def test_local_roots_option_confines_without_explicit_roots(tree: dict[str, Path], cfg: DownloadConfig) -> None:
    cfg.local_roots = [str(tree["inside"])]
    secret = str(tree["outside"] / "secret.mp4")
    assert reject(secret, tree["dl"], cfg).reason == "outside_roots"
    cfg.local_roots = [str(tree["outside"])]
    assert fetch_url(secret, tree["dl"], cfg).size == len(b"secret bytes")


def test_devices_fifos_and_directories_are_not_read(tmp_path: Path, cfg: DownloadConfig) -> None:
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)  # opening it for reading would block until a writer came
    for source, kind in [("/dev/zero", "a device"), (str(fifo), "a FIFO"), (str(tmp_path), "a directory")]:
        rejection = reject(source, tmp_path / "dl", cfg)
        assert (rejection.reason, kind in rejection.detail) == ("not_a_file", True), rejection.detail


@pytest.mark.parametrize("kind", ["loop", "self", "dangling", "loop_on_the_way"])
def test_broken_symlinks_are_rejected_as_broken_link(tmp_path: Path, cfg: DownloadConfig, kind: str) -> None:
    (tmp_path / "a.mp4").symlink_to(tmp_path / "b.mp4")
    (tmp_path / "b.mp4").symlink_to(tmp_path / "a.mp4")
    (tmp_path / "self.mp4").symlink_to(tmp_path / "self.mp4")
    (tmp_path / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    (tmp_path / "dir1").symlink_to(tmp_path / "dir2")
    (tmp_path / "dir2").symlink_to(tmp_path / "dir1")
    path = {"loop": "a.mp4", "self": "self.mp4", "dangling": "dangling.mp4", "loop_on_the_way": "dir1/x.mp4"}[kind]
    for roots in (None, [str(tmp_path)]):
        source = str(tmp_path / path)
        with pytest.raises(Rejection) as caught:
            fetch(source, source_id(source), tmp_path / "dl", cfg, roots=roots)
        assert caught.value.reason == "broken_link", caught.value.detail


# --- private networks, redirects, deadline ---------------------------------------------------------


@pytest.mark.parametrize("host", [
    "127.0.0.1", "localhost", "[::1]", "169.254.169.254", "10.1.2.3", "172.16.0.1", "192.168.1.1", "0.0.0.0",
    "[fe80::1]", "[fd00::1]", "224.0.0.1", "[::ffff:127.0.0.1]", "2130706433", "100.100.100.200",
])
def test_private_addresses_are_refused_by_default(video_server: VideoServer, tmp_path: Path, host: str) -> None:
    cfg = DownloadConfig(timeout_s=2.0, retries=0)
    assert cfg.allow_private_networks is False
    url = f"http://{host}:{video_server.port}/videos/{CLIP}"
    rejection = reject(url, tmp_path, cfg)
    assert rejection.reason == "private_network"
    assert "download.allow_private_networks" in rejection.detail
    assert video_server.count(f"/videos/{CLIP}") == 0  # refused before connecting
    assert leftovers(tmp_path) == []


def test_private_addresses_are_reached_when_allowed(video_server: VideoServer, clip: Path, tmp_path: Path) -> None:
    cfg = DownloadConfig(timeout_s=5.0, retries=0, allow_private_networks=True)
    assert fetch_url(video_server.url(f"/videos/{CLIP}"), tmp_path, cfg).sha256 == sha256(clip)


def _treat_loopback_as_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the test server stand in for a public host: 127.0.0.1 counts as global, every other rule holds."""
    real = download.refused_address
    monkeypatch.setattr(download, "refused_address", lambda a: None if a == "127.0.0.1" else real(a))


def test_every_redirect_hop_is_checked(video_server: VideoServer, tmp_path: Path, monkeypatch) -> None:
    _treat_loopback_as_public(monkeypatch)
    metadata = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    url = video_server.url(f"/redirect/{CLIP}?to={urllib.parse.quote(metadata, safe='')}")
    rejection = reject(url, tmp_path, DownloadConfig(timeout_s=2.0, retries=0))
    assert rejection.reason == "private_network"
    assert "169.254.169.254" in rejection.detail
    assert video_server.count(f"/redirect/{CLIP}") == 1


def test_redirects_to_public_hosts_are_followed(
    video_server: VideoServer, clip: Path, tmp_path: Path, monkeypatch
) -> None:
    _treat_loopback_as_public(monkeypatch)
    url = video_server.url(f"/redirect/x?to={urllib.parse.quote(video_server.url(f'/videos/{CLIP}'), safe='')}")
    got = fetch_url(url, tmp_path, DownloadConfig(timeout_s=5.0, retries=0))
    assert (got.sha256, Path(got.local_path).suffix) == (sha256(clip), ".mp4")


def test_a_name_that_changes_its_answer_is_caught_at_connection(
    video_server: VideoServer, tmp_path: Path, monkeypatch
) -> None:
    """DNS rebinding: the check sees a public address, the connection goes to loopback; the peer is checked."""
    monkeypatch.setattr(download, "_resolve", lambda host, port: ["93.184.216.34"])
    rejection = reject(video_server.url(f"/videos/{CLIP}"), tmp_path, DownloadConfig(timeout_s=2.0, retries=0))
    assert rejection.reason == "private_network"
    assert "connected to 127.0.0.1" in rejection.detail
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://example.org/a.mp4", "gopher://127.0.0.1:6379/_"])
def test_redirect_to_another_scheme_is_refused(
    video_server: VideoServer, tmp_path: Path, cfg: DownloadConfig, target: str
) -> None:
    rejection = reject(video_server.url(f"/redirect/{CLIP}?to={urllib.parse.quote(target, safe='')}"), tmp_path, cfg)
    assert rejection.reason == "redirect_refused"
    assert target in rejection.detail and "fix it in the manifest" not in rejection.detail
    assert leftovers(tmp_path) == []


def test_redirect_loop(video_server: VideoServer, tmp_path: Path, cfg: DownloadConfig) -> None:
    rejection = reject(video_server.url(f"/redirect/{CLIP}"), tmp_path, cfg)
    assert rejection.reason == "too_many_redirects"
    assert video_server.count(f"/redirect/{CLIP}") == download.MAX_REDIRECTS + 1


def test_deadline_bounds_a_dripping_server(video_server: VideoServer, tmp_path: Path, cfg: DownloadConfig) -> None:
    """1 byte every 0.2 s never trips the 5 s read timeout; the deadline of all attempts ends it."""
    cfg.deadline_s = 1.5
    url = video_server.url(f"/drip/{CLIP}")
    start = time.monotonic()
    rejection = reject(url, tmp_path, cfg)
    assert time.monotonic() - start < 4.0
    assert rejection.reason == "deadline_exceeded"
    assert "download.deadline_s" in rejection.detail
    assert video_server.count(f"/drip/{CLIP}") == 1
    assert leftovers(tmp_path) == [f"{source_id(url)}.part"]  # what arrived stays for a later run


def test_deadline_stops_retries(video_server: VideoServer, tmp_path: Path, cfg: DownloadConfig) -> None:
    cfg.timeout_s, cfg.retries, cfg.backoff_s, cfg.deadline_s = 0.3, 50, 0.3, 1.5
    start = time.monotonic()
    rejection = reject(video_server.url(f"/slow/{CLIP}"), tmp_path, cfg)
    assert rejection.reason == "deadline_exceeded"
    assert time.monotonic() - start < 4.0


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
