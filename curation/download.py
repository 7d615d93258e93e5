"""The download stage: turn a source (URL or local path) into one complete local video file.

Sources come from manifests written by people, so anything can be in them. Every problem with a source
ends as a :class:`~curation.errors.Rejection` whose ``reason`` can be counted and whose ``detail`` says
what to do; only environment failures (a full disk, a bug) escape as other exceptions.

Three ways in:

* local paths and ``file://`` URLs are used where they are (no copy), but only regular files inside the
  allowed directories (``roots``: by default the input's directory; ``download.local_roots``), symlinks
  resolved: a manifest must not make a worker read ``/etc/shadow``, ``/dev/zero`` or a FIFO;
* object-store URLs (``s3://``, ``gs://``, ...) are copied into the task's scratch directory through
  ``storage.Location``, with the job's credentials;
* plain http(s) files are streamed with ``requests`` into ``<source_id>.part`` and renamed to
  ``<source_id><ext>`` only when complete, so a file under its final name is always whole. That is what
  lets a resumed run reuse it without the network and continue a ``.part`` with a Range request;
* sites that yt-dlp has an extractor for, HTML pages (yt-dlp's generic extractor finds ``<video>``
  tags) and HLS/DASH manifests go through the yt-dlp Python API.

URLs are checked before any connection: a host that resolves to a loopback, private, link-local (the
cloud metadata service), shared, unspecified or multicast address is refused (``private_network``)
unless ``download.allow_private_networks`` is set. Plain HTTP follows redirects itself, one hop at a
time, so every hop is checked the same way and a redirect to another scheme (``file://``) is refused
(``redirect_refused``); once connected, the peer's address is checked again (a DNS answer that changed
between the check and the connection). yt-dlp is checked on the URL it is given only: the URLs it
finds in pages and its own redirects are not (see docs/reliability.md).

``download.deadline_s`` bounds one source's whole download, every attempt and wait included
(``deadline_exceeded``): a server that drips a byte at a time never holds a worker longer.

A ``.part`` left when retries run out (timeouts, truncation) stays for the next run to continue;
permanent rejections delete it. A reused download reports method "yt-dlp" when a site extractor claims
the URL and "http" otherwise (an HTML page fetched through yt-dlp is then reported as "http").
"""

from __future__ import annotations

import email.utils
import errno
import functools
import hashlib
import ipaddress
import logging
import os
import re
import socket
import stat
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import requests
import urllib3.exceptions
import yt_dlp
from yt_dlp.extractor import gen_extractor_classes

from curation.config import VIDEO_EXTENSIONS, DownloadConfig
from curation.errors import Rejection
from curation.ids import sanitise
from shards.hashing import file_sha256
from storage import Location

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024

#: URL schemes read through the storage layer (pyarrow.fs), with the job's own credentials.
STORE_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs")

#: Statuses worth another attempt: the server may answer differently later.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504}) | frozenset(range(505, 600))
#: Statuses whose Retry-After header we honour.
RETRY_AFTER_STATUSES = frozenset({429, 503})

#: Content types of files we keep (checked only when the URL carries no better hint).
_BINARY_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
#: Content types yt-dlp must handle: pages with players, and streaming manifests.
_YTDLP_TYPES = frozenset({
    "text/html", "application/xhtml+xml",
    "application/vnd.apple.mpegurl", "application/x-mpegurl", "audio/mpegurl", "application/dash+xml",
})
_TYPE_EXTENSIONS = {
    "video/mp4": ".mp4", "video/webm": ".webm", "video/x-matroska": ".mkv", "video/quicktime": ".mov",
}
_FALLBACK_EXTENSION = ".bin"
#: Every name a finished download can have: what lets a rerun find it without the network.
_FINAL_EXTENSIONS = (*VIDEO_EXTENSIONS, _FALLBACK_EXTENSION)
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
#: Redirects followed before a URL is rejected as a loop (requests' own limit).
MAX_REDIRECTS = 30
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Fetched:
    """A complete local copy of a source."""

    local_path: str  # absolute path of the complete file
    method: str  # "local" | "http" | "yt-dlp"
    sha256: str  # hex sha256 of the file's bytes
    size: int  # bytes


class _Retryable(Exception):
    """One attempt failed in a way another attempt may not; ``reason`` is used if none succeeds."""

    def __init__(self, reason: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after


class _NeedsYtdlp(Exception):
    """The URL answered with a page or a manifest, not a file: yt-dlp has to find the video in it."""


def fetch(source: str, source_id: str, dest_dir: Path, cfg: DownloadConfig, *,
          roots: Sequence[str] | None = None) -> Fetched:
    """Make ``source`` available as a complete local file, downloading into ``dest_dir`` if needed.

    ``roots`` are the directories local sources may be read from (``curation.manifest.local_roots``
    of the job's config); None: ``cfg.local_roots`` when set, else no confinement here (ingest has
    already rejected local sources outside the input's directory). Raises :class:`Rejection` for
    every problem with the source itself.
    """
    if sanitise(source_id) != source_id:
        raise ValueError(f"source id {source_id!r} is not path-safe; pass ids from curation.ids")
    source = source.strip()
    if not source:
        raise Rejection("no_source", "the manifest row has an empty URL/path; fill it in or drop the row")
    scheme = _scheme(source)
    if scheme in ("http", "https"):
        return _fetch_remote(source, source_id, Path(dest_dir), cfg)
    allowed = list(roots) if roots is not None else (list(cfg.local_roots) or None)
    if scheme == "file":
        return _fetch_local(_file_url_path(source), source, allowed)
    if scheme in STORE_SCHEMES:
        return _fetch_stored(source, source_id, Path(dest_dir))
    if "://" in source:
        raise Rejection(
            "unsupported_scheme",
            f"{source}: only http(s)://, file://, object-store ({', '.join(STORE_SCHEMES)}) URLs or local paths "
            "can be fetched; "
            "download it yourself and list the local path instead",
        )
    return _fetch_local(source, source, allowed)


def _scheme(source: str) -> str:
    """The URL scheme of ``source`` in lower case ('' for a plain path)."""
    try:
        return urllib.parse.urlsplit(source).scheme.lower()
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise Rejection("bad_url", f"{source} is not a valid URL ({exc}); fix it in the manifest") from None


# --- local files ---------------------------------------------------------------------------------


def _file_url_path(url: str) -> str:
    """The local path a ``file://`` URL names; other hosts would need a network mount we do not have."""
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise Rejection(
            "unsupported_url",
            f"{url}: file:// URLs must name a local file (file:///path); mount host {parts.netloc!r} "
            "and list the local path instead",
        )
    return urllib.request.url2pathname(parts.path)


def within_roots(path: str, roots: Sequence[str]) -> bool:
    """Whether ``path``, symlinks resolved, lies inside one of ``roots`` (symlinks resolved too)."""
    real = os.path.realpath(path)
    for root in roots:
        top = os.path.realpath(root)
        if real == top or real.startswith(top.rstrip(os.sep) + os.sep):
            return True
    return False


def outside_roots_detail(source: str, roots: Sequence[str]) -> str:
    """What an ``outside_roots`` rejection says: where the file is, where reads are allowed, what to set."""
    where = ", ".join(roots) if roots else "none (the input is not a local directory or manifest)"
    return (f"{source} resolves to {os.path.realpath(source)}, outside the directories local sources may be "
            f"read from ({where}); if the manifest is trusted, add its directory to download.local_roots")


def _fetch_local(path_text: str, source: str, roots: Sequence[str] | None) -> Fetched:
    """Describe a local file in place; copying it would only double the disk use.

    Only a regular file inside ``roots`` is opened: its type is checked with ``os.stat`` first, and the
    file is opened without blocking (a FIFO swapped in after the check cannot hang the worker) and
    checked again on the open descriptor.
    """
    try:
        path = os.path.abspath(path_text)
        link = os.lstat(path)
    except FileNotFoundError as exc:
        raise Rejection("not_found", f"{source}: no such file ({exc}); check the path in the manifest") from None
    except (OSError, ValueError) as exc:  # ValueError: NUL bytes; OSError: a looping directory on the way
        if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
            raise _broken_link(source) from None
        raise Rejection("not_found", f"{source}: no such file ({exc}); check the path in the manifest") from None
    if roots is not None and not within_roots(path, roots):
        raise Rejection("outside_roots", outside_roots_detail(source, roots))
    try:
        info = os.stat(path)
    except OSError as exc:
        if stat.S_ISLNK(link.st_mode) or exc.errno == errno.ELOOP:
            raise _broken_link(source) from None
        raise Rejection("not_found", f"{source}: no such file ({exc}); check the path in the manifest") from None
    if not stat.S_ISREG(info.st_mode):
        raise _not_a_file(source, info.st_mode)
    if info.st_size == 0:
        raise Rejection("empty_file", f"{source} is empty (0 bytes); re-export or drop it")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except PermissionError:
        raise Rejection("unreadable", f"{source} cannot be read (permission denied); fix its permissions") from None
    with os.fdopen(fd, "rb") as handle:
        opened = os.fstat(handle.fileno())
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            raise Rejection("not_a_file", f"{source} changed while it was being opened; list stable files only")
        digest = hashlib.sha256()
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return Fetched(local_path=path, method="local", sha256=digest.hexdigest(), size=opened.st_size)


def _broken_link(source: str) -> Rejection:
    return Rejection("broken_link", f"{source} is a symbolic link that loops or points to nothing; fix or remove "
                                    "the link")


def _not_a_file(source: str, mode: int) -> Rejection:
    kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")
    return Rejection("not_a_file", f"{source} is {kind}, not a regular file; list video files only")


def _fetch_stored(uri: str, source_id: str, dest_dir: Path) -> Fetched:
    """Copy an object of an object store (the job's credentials) into the task's scratch directory."""
    location = Location(uri)
    try:
        size = location.size()
    except FileNotFoundError:
        raise Rejection("not_found", f"{uri}: no such object; check the path in the manifest") from None
    if location.info().type.name != "File":
        raise Rejection("not_a_file", f"{uri} is not an object (a prefix?); list video objects only")
    if size == 0:
        raise Rejection("empty_file", f"{uri} is empty (0 bytes); re-upload or drop it")
    dest = location.download_to(dest_dir / f"{source_id}{Path(location.name).suffix.lower()}")
    return _describe(dest, "storage")


def _describe(path: Path, method: str) -> Fetched:
    """Hash and measure a complete file."""
    return Fetched(local_path=str(path), method=method, sha256=file_sha256(path), size=path.stat().st_size)


# --- remote sources ------------------------------------------------------------------------------


def _fetch_remote(url: str, source_id: str, dest_dir: Path, cfg: DownloadConfig) -> Fetched:
    """Reuse an earlier complete download, else pick yt-dlp or plain HTTP for ``url``."""
    deadline = time.monotonic() + cfg.deadline_s
    dest_dir = Path(os.path.abspath(dest_dir))
    dest_dir.mkdir(parents=True, exist_ok=True)
    claimed = ytdlp_claims(url)
    existing = _finished_download(dest_dir, source_id)
    if existing is not None:
        log.info("%s: reusing %s from an earlier run", url, existing)
        return _describe(existing, "yt-dlp" if claimed else "http")
    if claimed:
        try:
            check_url(url, cfg)
        except socket.gaierror:
            pass  # the name does not resolve: yt-dlp fails on it and says so
        return _fetch_ytdlp(url, source_id, dest_dir, cfg, deadline)
    try:
        return _fetch_http(url, source_id, dest_dir, cfg, deadline)
    except _NeedsYtdlp:
        log.info("%s is a page or a manifest, handing it to yt-dlp", url)
    # Outside the except block: yt-dlp records the exception being handled as the cause of its own errors.
    return _fetch_ytdlp(url, source_id, dest_dir, cfg, deadline)


# --- which hosts may be reached ------------------------------------------------------------------


def refused_address(address: str) -> str | None:
    """Why connecting to IP ``address`` is refused by default ("loopback", ...), or None when it is global."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone ("fe80::1%eth0") is not part of it
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    for kind in ("loopback", "link_local", "unspecified", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if ip.is_global else "non-global"


def _resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    return sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


def check_url(url: str, cfg: DownloadConfig) -> None:
    """Refuse ``url`` when its host is, or resolves to, a non-global address (unless allowed).

    Raises ``socket.gaierror`` when the name does not resolve (the caller decides what that means).
    """
    if cfg.allow_private_networks:
        return
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    if not host:
        raise Rejection("bad_url", f"{url} names no host; fix it in the manifest")
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 80)
    except ValueError as exc:
        raise Rejection("bad_url", f"{url} is not a valid URL ({exc}); fix it in the manifest") from None
    for address in _resolve(host, port):
        kind = refused_address(address)
        if kind is not None:
            raise Rejection(
                "private_network",
                f"{url}: {host} is {address} ({kind} address); private networks and the cloud metadata service "
                "are not reached by default. Set download.allow_private_networks: true if this server is yours",
            )


def _check_peer(resp: requests.Response, url: str, session: requests.Session, cfg: DownloadConfig) -> None:
    """The address the connection really went to: a DNS answer may have changed since ``check_url``."""
    if cfg.allow_private_networks or (session.trust_env and requests.utils.get_environ_proxies(url)):
        return  # through a proxy the peer is the proxy; the proxy decides where it connects
    connection = getattr(resp.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    try:
        address = sock.getpeername()[0]
    except OSError:
        return
    kind = refused_address(address)
    if kind is not None:
        raise Rejection(
            "private_network",
            f"{url} connected to {address} ({kind} address) although its name resolved to a public one when "
            "checked; not read. Set download.allow_private_networks: true if this server is yours",
        )


def _finished_download(dest_dir: Path, source_id: str) -> Path | None:
    """The complete file an earlier run left for this source, if any (partial files never match)."""
    for ext in _FINAL_EXTENSIONS:
        candidate = dest_dir / f"{source_id}{ext}"
        if candidate.is_file() and candidate.stat().st_size > 0:
            return candidate
    return None


# --- plain HTTP ----------------------------------------------------------------------------------


def _fetch_http(url: str, source_id: str, dest_dir: Path, cfg: DownloadConfig, deadline: float) -> Fetched:
    """Download with retries and backoff; each attempt resumes whatever ``.part`` the last one left.

    Every attempt, and every wait between them, ends by ``deadline`` (``time.monotonic()``).
    """
    attempts = cfg.retries + 1
    part = dest_dir / f"{source_id}.part"
    with requests.Session() as session:
        # identity: byte counts and Range offsets must refer to the file, not to a compressed stream.
        session.headers.update({"User-Agent": cfg.user_agent, "Accept-Encoding": "identity"})
        for attempt in range(1, attempts + 1):
            try:
                return _attempt(session, url, part, dest_dir / source_id, cfg, deadline)
            except _Retryable as failure:
                if attempt == attempts:
                    raise Rejection(
                        failure.reason,
                        f"{url}: {failure.detail}; gave up after {attempts} attempts. Check that the URL works "
                        "or raise download.retries / download.timeout_s",
                    ) from None
                wait = _wait_s(attempt, failure.retry_after, cfg)
                if time.monotonic() + wait >= deadline:
                    raise _deadline_exceeded(url, cfg, f"the last attempt failed: {failure.detail}") from None
                log.warning(
                    "%s: %s (attempt %d of %d); retrying in %.2f s", url, failure.detail, attempt, attempts, wait
                )
                time.sleep(wait)
    raise AssertionError("unreachable: the loop returns or raises")


def _wait_s(attempt: int, retry_after: float | None, cfg: DownloadConfig) -> float:
    """Seconds before attempt ``attempt + 1``: the server's Retry-After if given, else exponential backoff."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), cfg.max_backoff_s)
    return min(cfg.backoff_s * 2 ** (attempt - 1), cfg.max_backoff_s)


def _deadline_exceeded(url: str, cfg: DownloadConfig, what: str) -> Rejection:
    return Rejection(
        "deadline_exceeded",
        f"{url}: not downloaded within download.deadline_s={cfg.deadline_s:g} s, all attempts together ({what}); "
        "the server is too slow. Raise download.deadline_s if this source is worth the wait",
    )


def _get(session: requests.Session, url: str, headers: dict[str, str], cfg: DownloadConfig,
         deadline: float, method: str = "GET") -> requests.Response:
    """GET ``url`` (streamed), following redirects one hop at a time so each hop's host is checked.

    ``method`` HEAD asks for the headers only, with the same checks (``curation.verify``)."""
    for _ in range(MAX_REDIRECTS + 1):
        try:
            check_url(url, cfg)
        except socket.gaierror as exc:
            raise _Retryable("unreachable", f"cannot resolve {urllib.parse.urlsplit(url).hostname} ({exc})") from None
        timeout = max(min(cfg.timeout_s, deadline - time.monotonic()), 0.001)
        resp = session.request(method, url, headers=headers, stream=True, timeout=timeout, allow_redirects=False)
        if resp.status_code not in _REDIRECT_STATUSES or "Location" not in resp.headers:
            _check_peer(resp, url, session, cfg)
            return resp
        resp.close()
        target = urllib.parse.urljoin(url, resp.headers["Location"].strip())
        scheme = _scheme(target)
        if scheme not in ("http", "https"):
            raise Rejection(
                "redirect_refused",
                f"{url} redirects to {target}; only http(s) redirects are followed, never to {scheme or 'a'}: URLs "
                "(a server must not make the job read local files). The manifest row is fine; the server is not",
            )
        url = target
    raise requests.exceptions.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")


def _attempt(session: requests.Session, url: str, part: Path, stem: Path, cfg: DownloadConfig,
             deadline: float) -> Fetched:
    """One GET: check the answer, stream the body into ``part`` and rename it to its final name."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    if time.monotonic() >= deadline:
        raise _deadline_exceeded(url, cfg, "no time left for another attempt")
    with _translated_errors(url), _get(session, url, headers, cfg, deadline) as resp:
        _check_status(resp, url, offset, part)
        content_type = _content_type(resp)
        _check_content_type(content_type, url)
        append = resp.status_code == 206
        total = _expected_total(resp, offset if append else 0)
        if total is not None and total > cfg.max_bytes:
            part.unlink(missing_ok=True)
            raise _too_large(url, f"announces {total} bytes", cfg)
        with part.open("ab" if append else "wb") as out:
            digest = _hash_prefix(part) if append else hashlib.sha256()
            size = _stream(resp, out, digest, offset if append else 0, url, part, cfg, deadline)
    if total is not None and size != total:
        raise _Retryable("truncated", f"connection ended after {size} of {total} bytes")
    if size == 0:
        part.unlink(missing_ok=True)
        raise Rejection("empty_file", f"{url} answered with an empty body; check the URL")
    final = stem.with_name(stem.name + _extension((url, resp.url), content_type))
    os.replace(part, final)
    return Fetched(local_path=str(final), method="http", sha256=digest.hexdigest(), size=size)


@contextmanager
def _translated_errors(url: str) -> Iterator[None]:
    """Turn requests' exceptions into retryable failures or rejections with a reason we can count."""
    try:
        yield
    except (
        requests.exceptions.InvalidURL,
        requests.exceptions.InvalidSchema,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidHeader,
        urllib3.exceptions.LocationValueError,  # hosts urllib3 cannot parse, e.g. empty labels
        UnicodeError,  # hosts IDNA cannot encode
    ) as exc:
        raise Rejection("bad_url", f"{url} is not a valid URL ({exc}); fix it in the manifest") from None
    except requests.exceptions.TooManyRedirects:
        raise Rejection(
            "too_many_redirects", f"{url} redirects in a loop; open it in a browser and list the final URL"
        ) from None
    except requests.exceptions.SSLError as exc:
        raise Rejection(
            "tls_error", f"{url}: TLS handshake failed ({exc}); the server's certificate is not trusted"
        ) from None
    except (requests.exceptions.Timeout, urllib3.exceptions.ReadTimeoutError, TimeoutError):
        raise _Retryable("timeout", "no answer within the timeout") from None
    except urllib3.exceptions.ProtocolError as exc:  # raised by the body reads of _stream
        raise _Retryable("truncated", f"connection ended early ({_root_cause(exc)})") from None
    except requests.exceptions.ChunkedEncodingError as exc:
        raise _Retryable("truncated", f"connection ended early ({_root_cause(exc)})") from None
    except requests.exceptions.ConnectionError as exc:
        # requests reports a read timeout in the middle of the body as a ConnectionError.
        if isinstance(_root_cause(exc), urllib3.exceptions.ReadTimeoutError):
            raise _Retryable("timeout", "the body stalled longer than the timeout") from None
        raise _Retryable("unreachable", f"cannot connect ({_root_cause(exc)})") from None
    except requests.exceptions.RequestException as exc:
        raise _Retryable("unreachable", f"request failed ({exc})") from None


def _root_cause(exc: BaseException) -> object:
    """The innermost wrapped error requests and urllib3 carry in ``args``, for a readable message."""
    inner: object = exc
    while isinstance(inner, BaseException) and inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    if isinstance(inner, urllib3.exceptions.MaxRetryError) and inner.reason is not None:
        return inner.reason
    return inner


def _check_status(resp: requests.Response, url: str, offset: int, part: Path) -> None:
    """Raise unless the answer is a body we can use: 200, or 206 continuing exactly at ``offset``."""
    status = resp.status_code
    if status == 200 or (status == 206 and offset and _range_start(resp) == offset):
        return
    if status in (206, 416):
        # The server's idea of our partial file differs from ours: start over.
        part.unlink(missing_ok=True)
        raise _Retryable(f"http_{status}", f"HTTP {status} to a request for bytes {offset}- (restarting)")
    if status in RETRYABLE_STATUSES:
        retry_after = _retry_after_s(resp.headers.get("Retry-After")) if status in RETRY_AFTER_STATUSES else None
        raise _Retryable(f"http_{status}", f"HTTP {status} {resp.reason}", retry_after)
    part.unlink(missing_ok=True)
    raise Rejection(
        f"http_{status}", f"{url} answered HTTP {status} {resp.reason}; check the URL and its access rights"
    )


def _range_start(resp: requests.Response) -> int | None:
    """First byte of a 206 body according to Content-Range."""
    match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", "").strip())
    return int(match.group(1)) if match else None


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After in seconds; the header is either a number of seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _content_type(resp: requests.Response) -> str:
    """The media type without parameters, lower case ('' when the server sends none)."""
    return resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


def _check_content_type(content_type: str, url: str) -> None:
    """Keep videos and anonymous binaries, send pages and manifests to yt-dlp, refuse the rest."""
    if content_type.startswith("video/") or content_type in _BINARY_TYPES:
        return
    if content_type in _YTDLP_TYPES:
        raise _NeedsYtdlp(url)
    raise Rejection(
        "not_a_video",
        f"{url} serves {content_type!r}, not a video; list the URL of the video file itself",
    )


def _expected_total(resp: requests.Response, offset: int) -> int | None:
    """Size of the whole file once this body is appended at ``offset``, if the server says."""
    length = resp.headers.get("Content-Length", "").strip()
    return offset + int(length) if length.isdigit() else None


def _hash_prefix(part: Path) -> Any:
    """sha256 state after the bytes already in ``part``, so appending continues the same hash."""
    digest = hashlib.sha256()
    with part.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest


def _stream(resp: requests.Response, out: BinaryIO, digest: Any, size: int, url: str, part: Path,
            cfg: DownloadConfig, deadline: float) -> int:
    """Append the body to ``out`` and ``digest``; return the file's size. Enforces ``max_bytes`` as it goes.

    urllib3 would raise on a short body and drop the bytes it had buffered; reading what arrived and
    comparing sizes afterwards keeps every byte on disk for the Range request of the next attempt.
    ``read1`` returns what one receive brought, so the deadline is checked however slowly bytes come.
    """
    resp.raw.enforce_content_length = False
    while chunk := resp.raw.read1(CHUNK_BYTES, decode_content=False):
        if time.monotonic() > deadline:
            out.close()  # the .part stays for a later run to continue
            raise _deadline_exceeded(url, cfg, f"{size} bytes had arrived")
        size += len(chunk)
        if size > cfg.max_bytes:
            out.close()
            part.unlink(missing_ok=True)
            raise _too_large(url, f"sent more than {cfg.max_bytes} bytes", cfg)
        out.write(chunk)
        digest.update(chunk)
    return size


def _too_large(url: str, what: str, cfg: DownloadConfig) -> Rejection:
    return Rejection(
        "too_large",
        f"{url} {what}, over download.max_bytes={cfg.max_bytes}; raise the limit if you want it",
    )


def _extension(urls: tuple[str, ...], content_type: str) -> str:
    """File extension for the download: a known video suffix of a URL path, else from the type, else .bin.

    Only whitelisted suffixes are used, so nothing from the server can reach the file name.
    """
    for url in urls:
        suffix = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            return suffix
    return _TYPE_EXTENSIONS.get(content_type, _FALLBACK_EXTENSION)


# --- yt-dlp --------------------------------------------------------------------------------------


@functools.cache
def _site_extractors() -> tuple[type, ...]:
    """yt-dlp's extractor classes except the generic one; built once per process because it is slow."""
    return tuple(ie for ie in gen_extractor_classes() if ie.ie_key() != "Generic")


def ytdlp_claims(url: str) -> bool:
    """True when a site-specific yt-dlp extractor handles ``url`` (YouTube, Vimeo, ...)."""
    return any(ie.suitable(url) for ie in _site_extractors())


def _fetch_ytdlp(url: str, source_id: str, dest_dir: Path, cfg: DownloadConfig, deadline: float) -> Fetched:
    """Download through yt-dlp's Python API (never a shell); the first video of a playlist or page.

    A progress hook enforces the deadline whenever yt-dlp reports progress (yt-dlp has no total timeout).
    """

    def enforce_deadline(_: dict[str, Any]) -> None:
        if time.monotonic() > deadline:
            raise yt_dlp.utils.DownloadCancelled("download.deadline_s passed")

    options = {
        "format": cfg.ytdlp_format,
        "outtmpl": {"default": str(dest_dir / f"{source_id}.%(ext)s")},
        "merge_output_format": "mp4",
        "quiet": True,
        "noprogress": True,
        "noplaylist": True,
        "playlist_items": "1",  # a playlist or a page with several videos is one source: take the first
        "retries": cfg.retries,
        "socket_timeout": cfg.timeout_s,
        "max_filesize": cfg.max_bytes,
        "cachedir": False,
        "progress_hooks": [enforce_deadline],
        "logger": logging.getLogger(f"{__name__}.yt_dlp"),
        # Config files are read only by yt-dlp's command line, never by the YoutubeDL API.
    }
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(url, download=True)
    except yt_dlp.utils.YoutubeDLError as exc:  # DownloadError wraps extractor and network errors
        if time.monotonic() > deadline:
            raise _deadline_exceeded(url, cfg, "through yt-dlp") from None
        raise _ytdlp_rejection(url, exc) from None
    path = _ytdlp_output(info) or _finished_download(dest_dir, source_id)
    if path is None:
        size = _ytdlp_size(info)
        if size is not None and size > cfg.max_bytes:
            raise _too_large(url, f"is {size} bytes", cfg)
        raise Rejection("ytdlp_failed", f"yt-dlp wrote no file for {url}; try it with the yt-dlp command to see why")
    return _describe(path, "yt-dlp")


def _ytdlp_rejection(url: str, exc: Exception) -> Rejection:
    """Map yt-dlp's errors: 'nothing to download here' versus 'download went wrong'."""
    cause = exc.exc_info[1] if getattr(exc, "exc_info", None) else None
    message = re.sub(r"^ERROR:\s*", "", str(exc))
    nothing_there = re.search(r"unsupported url|no video formats", message, re.IGNORECASE)
    if isinstance(cause, yt_dlp.utils.UnsupportedError) or nothing_there:
        return Rejection("not_a_video", f"{url}: page has no video that yt-dlp can extract; list the video's own URL")
    return Rejection("ytdlp_failed", f"yt-dlp could not download {url}: {message}")


def _entries(info: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """The info dict and, for playlists, its entries."""
    if not info:
        return
    yield info
    for entry in info.get("entries") or ():
        yield from _entries(entry)


def _ytdlp_output(info: dict[str, Any] | None) -> Path | None:
    """The file yt-dlp reports it wrote."""
    for entry in _entries(info):
        for download in entry.get("requested_downloads") or ():
            filepath = download.get("filepath")
            if filepath and Path(filepath).is_file():
                return Path(os.path.abspath(filepath))
    return None


def _ytdlp_size(info: dict[str, Any] | None) -> int | None:
    """The size yt-dlp expected for the chosen format, to explain a skipped download."""
    for entry in _entries(info):
        size = entry.get("filesize") or entry.get("filesize_approx")
        if size:
            return int(size)
    return None
