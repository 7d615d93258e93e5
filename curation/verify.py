"""Source availability: re-check every source of a corpus, and where asked its content hash (``verify-sources``).

Dead links are the most common complaint about web-video corpora: a corpus published as URLs decays
as videos are taken down. This records, per source, whether it can still be fetched, with the same
rules as the download (``curation.download``: its redirect and private-network checks, its retries
with backoff honouring Retry-After on 429/503, its local-root confinement) and without downloading:

* **http(s)**: a ``HEAD`` request; a server that refuses HEAD (403, 405, 501) gets a GET of byte 0
  (``Range: bytes=0-0``), whose Content-Range gives the size. 404/410 are ``gone``; 401/403/451
  ``forbidden``; 429 and 5xx are retried (``download.retries``), then ``error``. A size that differs
  from the recorded ``source_bytes`` is ``changed``, else ``available``;
* **pages of sites yt-dlp knows** (YouTube, Vimeo, ...: a watch page answers 200 whether or not its video
  is still there): yt-dlp's metadata extraction in ``download.ytdlp_format``, no download. Removed videos
  are ``gone``, private, login-only and geo-blocked ones ``forbidden``, one no longer offered in that
  format ``changed`` (reasons ``removed``, ``login_required``, ``geo_restricted``, ``format``);
* **local files** (paths, ``file://``): ``stat``; **object stores**: the object's metadata;
* **--hash** (``hash: true``): the source is fetched by the download stage's own ``fetch`` into a
  scratch directory (removed right after) and its sha256 compared with ``source_sha256``:
  ``unchanged`` or ``changed``. (A page URL that yt-dlp resolves may give other bytes on another day,
  a re-encode by the site, for the same video: its ``changed`` says the bytes differ, nothing more.)

Requests are bounded in concurrency (``concurrency`` threads) and rate (a token bucket of ``rate``
requests per second and ``burst`` at once, shared by every thread; each attempt takes a token, and
with --hash each download takes one). The corpus is read one partition at a time (its index and
rejection files, the two columns needed, sources deduplicated), so memory holds a few partitions
whatever the corpus's size; one status file is written per partition as soon as it is checked:
``availability/p00042.parquet`` (``shards.schema.AVAILABILITY_SCHEMA``), and a ``summary.json``, locally or
in an object store. A run cut short continues with ``resume: true`` (its finished partitions are kept).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import stat
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import requests
import yt_dlp
from pydantic import Field
from tqdm import tqdm

from curation.config import DownloadConfig
from curation.download import (
    _CONTENT_RANGE,
    RETRY_AFTER_STATUSES,
    RETRYABLE_STATUSES,
    STORE_SCHEMES,
    _content_type,
    _file_url_path,
    _get,
    _retry_after_s,
    _Retryable,
    _scheme,
    _translated_errors,
    _wait_s,
    check_url,
    fetch,
    outside_roots_detail,
    within_roots,
    ytdlp_claims,
)
from curation.errors import Rejection
from settings import Config, ConfigError, apply_overrides
from shards.layout import (
    AVAILABILITY_DIR,
    index_location,
    manifest_location,
    rejections_location,
)
from shards.reader import partition_files, read_manifest
from shards.schema import AVAILABILITY_SCHEMA
from storage import Location, StorageError
from storage.scratch import scratch_dir

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
STATUSES = ("available", "unchanged", "changed", "gone", "forbidden", "error")

#: HEAD answers that mean "not to HEAD" rather than "not to you": ask for byte 0 with GET instead.
HEAD_REFUSED = frozenset({403, 405, 501})
GONE_STATUSES = frozenset({404, 410})
FORBIDDEN_STATUSES = frozenset({401, 403, 451})
#: Rejection reasons of ``fetch`` (with --hash) that mean gone or forbidden; any other is an error.
GONE_REASONS = frozenset({"http_404", "http_410", "not_found", "broken_link"})
FORBIDDEN_REASONS = frozenset({"http_401", "http_403", "http_451", "unreadable"})
#: Partitions whose sources are queued or in flight at once: the next one starts while the last ones finish.
PARTITIONS_IN_FLIGHT = 3


class VerifyConfig(Config):
    """How ``verify-sources`` checks: its bounds, and the download's rules (the corpus's own, then ``--set``)."""

    concurrency: Annotated[int, Field(ge=1)] = 16  # sources checked at once
    rate: Annotated[float, Field(gt=0)] = 20.0  # requests per second, every source and host together
    burst: Annotated[int, Field(ge=1)] = 4  # requests that may start at once after a quiet spell
    hash: bool = False  # fetch every source and compare its sha256 with source_sha256
    resume: bool = False  # keep the status files an earlier run on the same output wrote; check only the rest
    download: DownloadConfig = Field(default_factory=DownloadConfig)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; ``acquire`` waits for one. Shared by threads.

    A caller reserves its token under the lock (the count may go below zero) and sleeps outside it, so
    waiting callers are served in order and the long-run rate never exceeds ``rate``.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate, self.burst = rate, burst
        self._clock, self._sleep = clock, sleep
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait:
            self._sleep(wait)


@dataclass(frozen=True)
class Source:
    """One source of the corpus and what was recorded of it when the corpus was made."""

    source_id: str
    source: str
    recorded_sha256: str | None
    recorded_bytes: int | None


# --- the corpus's sources, a partition at a time ----------------------------------------------------

def corpus_partitions(root: Location) -> list[str]:
    """Names (``p00042``) of the partitions with an index or a rejection file, in order (two listings)."""
    names = {f.name.removesuffix(".parquet") for d in (index_location(root), rejections_location(root))
             for f in partition_files(d)}
    return sorted(names)


def partition_sources(root: Location, name: str) -> list[Source]:
    """The distinct sources of partition ``name``, by id, with their recorded sha256 and size.

    Rejected sources (no index row) are included; the rejections do not record their sha256 or size, so
    they are checked for availability only (with --hash their sha256 now is recorded, for the next check).
    """
    found: dict[str, dict[str, Any]] = {}
    reads = ((index_location(root), ["source_id", "source", "source_sha256", "source_bytes"]),
             (rejections_location(root), ["source_id", "source"]))
    for directory, columns in reads:
        location = directory / f"{name}.parquet"
        if not location.is_file():
            continue
        for row in location.read_table(columns=columns).to_pylist():
            known = found.setdefault(row["source_id"], {})
            for key, value in row.items():
                if known.get(key) is None:
                    known[key] = value
    return [Source(sid, row.get("source") or "", row.get("source_sha256"), row.get("source_bytes"))
            for sid, row in sorted(found.items()) if row.get("source")]


# --- checking one source ----------------------------------------------------------------------------

class Checker:
    """Checks sources under one config, one token bucket and one scratch directory (thread-safe)."""

    def __init__(self, cfg: VerifyConfig, scratch: Path, roots: list[str] | None) -> None:
        self.cfg = cfg
        self.bucket = TokenBucket(cfg.rate, cfg.burst)
        self.scratch = scratch
        self.roots = roots

    def check(self, src: Source) -> dict[str, Any]:
        """The availability row of ``src``; never raises for a problem of the source itself."""
        row: dict[str, Any] = {"source_id": src.source_id, "source": src.source, "recorded_sha256": src.recorded_sha256,
                               "recorded_bytes": src.recorded_bytes, "attempts": 0}
        try:
            scheme = _scheme(src.source)
            if self.cfg.hash:
                row.update(self._download(src))
            elif scheme in ("http", "https"):
                row.update(self._ytdlp(src.source) if ytdlp_claims(src.source) else self._http(src.source))
            elif scheme in STORE_SCHEMES:
                row.update(self._store(src.source))
            elif scheme in ("", "file") or "://" not in src.source:
                row.update(self._local(src.source, scheme))
            else:
                row.update(status="error", reason="unsupported_scheme", detail=f"{scheme}:// sources cannot be checked")
        except Rejection as exc:  # before any request: a URL that cannot be parsed, a file:// URL of another host
            row.update(_rejected(exc))
        except StorageError as exc:  # a source in a bucket this job cannot read: a verdict on it, not on the job
            row.update(_store_failure(exc))
        row["checked_at"] = datetime.now(UTC)
        if row["status"] == "available":
            _compare(row)
        return row

    # -- http(s) without downloading ------------------------------------------------------------
    def _http(self, url: str) -> dict[str, Any]:
        dl = self.cfg.download
        deadline = time.monotonic() + dl.deadline_s
        method, attempts, failures = "head", 0, 0
        with requests.Session() as session:
            session.headers.update({"User-Agent": dl.user_agent, "Accept-Encoding": "identity"})
            while True:
                self.bucket.acquire()
                attempts += 1
                try:
                    answer = self._ask(session, url, method, deadline)
                except _Retryable as failure:
                    status, retry_after, why = None, failure.retry_after, failure
                else:
                    status, retry_after, why = answer["http_status"], answer.pop("retry_after"), None
                    if method == "head" and status in HEAD_REFUSED:
                        method = "range"
                        continue
                    if status not in RETRYABLE_STATUSES:
                        return {**answer, "status": _status_of_http(status), "method": method, "attempts": attempts,
                                "reason": None if status in (200, 206) else f"http_{status}"}
                failures += 1
                reason = why.reason if why is not None else f"http_{status}"
                detail = why.detail if why is not None else f"HTTP {status}"
                if failures > dl.retries:
                    return {"status": "error", "http_status": status, "method": method, "attempts": attempts,
                            "reason": reason, "detail": f"{detail}; gave up after {attempts} requests"}
                wait = _wait_s(failures, retry_after, dl)
                if time.monotonic() + wait >= deadline:
                    return {"status": "error", "http_status": status, "method": method, "attempts": attempts,
                            "reason": "deadline_exceeded", "detail": f"{detail}; download.deadline_s reached"}
                log.debug("%s: %s; retrying in %.2f s", url, detail, wait)
                time.sleep(wait)

    def _ask(self, session: requests.Session, url: str, method: str, deadline: float) -> dict[str, Any]:
        """One HEAD (or GET of byte 0): its status, the source's size and type, and any Retry-After."""
        headers = {"Range": "bytes=0-0"} if method == "range" else {}
        with _translated_errors(url), _get(session, url, headers, self.cfg.download, deadline,
                                           method="HEAD" if method == "head" else "GET") as resp:
            status = resp.status_code
            return {"http_status": status, "size": _size(resp), "detail": f"HTTP {status} {resp.reason}",
                    "content_type": _content_type(resp) or None,
                    "retry_after": _retry_after_s(resp.headers.get("Retry-After"))
                    if status in RETRY_AFTER_STATUSES else None}

    def _ytdlp(self, url: str) -> dict[str, Any]:
        """A page of a site yt-dlp knows (YouTube, Vimeo, ...): its page answers 200 whether or not the video is still
        there, so ask yt-dlp for the video's metadata, in the download's format, without downloading."""
        dl = self.cfg.download
        try:
            check_url(url, dl)
        except socket.gaierror:
            pass  # the name does not resolve: yt-dlp fails on it and says so
        self.bucket.acquire()
        options = {"format": dl.ytdlp_format, "quiet": True, "noprogress": True, "noplaylist": True,
                   "playlist_items": "1", "retries": dl.retries, "socket_timeout": dl.timeout_s, "cachedir": False,
                   "logger": logging.getLogger(f"{__name__}.yt_dlp")}
        out: dict[str, Any] = {"method": "yt-dlp", "attempts": 1}
        try:
            with yt_dlp.YoutubeDL(options) as ydl:
                ydl.extract_info(url, download=False)
        except yt_dlp.utils.YoutubeDLError as exc:
            return {**out, **ytdlp_status(exc)}
        return {**out, "status": "available"}

    # -- files and objects without downloading ---------------------------------------------------
    def _local(self, source: str, scheme: str) -> dict[str, Any]:
        path = os.path.abspath(_file_url_path(source) if scheme == "file" else source)
        out: dict[str, Any] = {"method": "file", "attempts": 1}
        if self.roots is not None and not within_roots(path, self.roots):
            return {**out, "status": "error", "reason": "outside_roots",
                    "detail": outside_roots_detail(source, self.roots)}
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return {**out, "status": "gone", "reason": "not_found", "detail": f"{path}: no such file"}
        except PermissionError as exc:
            return {**out, "status": "forbidden", "reason": "unreadable", "detail": str(exc)}
        except OSError as exc:
            return {**out, "status": "error", "reason": "not_found", "detail": str(exc)}
        if not stat.S_ISREG(info.st_mode):
            return {**out, "status": "error", "reason": "not_a_file", "detail": f"{path} is not a regular file"}
        if not os.access(path, os.R_OK):
            return {**out, "status": "forbidden", "reason": "unreadable", "detail": f"{path} cannot be read"}
        return {**out, "status": "available", "size": info.st_size}

    def _store(self, uri: str) -> dict[str, Any]:
        out: dict[str, Any] = {"method": "store", "attempts": 1}
        try:
            info = Location(uri).info()
        except StorageError as exc:
            return {**out, **_store_failure(exc)}
        if info.type.name == "NotFound":
            return {**out, "status": "gone", "reason": "not_found", "detail": f"{uri}: no such object"}
        if info.type.name != "File":
            return {**out, "status": "error", "reason": "not_a_file", "detail": f"{uri} is not an object"}
        return {**out, "status": "available", "size": info.size}

    # -- --hash: the download stage's own fetch ------------------------------------------------
    def _download(self, src: Source) -> dict[str, Any]:
        self.bucket.acquire()
        scheme = _scheme(src.source)
        method = "download" if scheme in ("http", "https") else "store" if scheme in STORE_SCHEMES else "file"
        with tempfile.TemporaryDirectory(dir=self.scratch) as directory:
            try:
                fetched = fetch(src.source, src.source_id, Path(directory), self.cfg.download, roots=self.roots)
            except Rejection as exc:
                return {**_rejected(exc), "method": method, "attempts": 1}
        return {"status": "available", "method": method, "attempts": 1, "size": fetched.size,
                "sha256": fetched.sha256}


def _size(resp: requests.Response) -> int | None:
    """The whole source's size from an answer's headers: Content-Range's total (206), else Content-Length."""
    if resp.status_code == 206:
        match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", "").strip())
        return int(match.group(3)) if match and match.group(3).isdigit() else None
    length = resp.headers.get("Content-Length", "").strip()
    encoded = resp.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
    return int(length) if length.isdigit() and resp.status_code == 200 and not encoded else None


#: What yt-dlp's extractors say when a video is gone for good, or there but not for us (checked in this order).
_YTDLP_FORBIDDEN = re.compile(r"\bprivate\b|sign in|registered users|members[- ]only|login|HTTP Error 40[13]\b",
                              re.IGNORECASE)
_YTDLP_GONE = re.compile(r"unavailable|not available|removed|deleted|terminated|no longer exists|does not exist|"
                         r"not found|HTTP Error 4(04|10)\b", re.IGNORECASE)


def ytdlp_status(exc: Exception) -> dict[str, Any]:
    """The status of a page yt-dlp could not extract: forbidden (private, login, geo-blocked), changed (the video is
    there, in no format of ``download.ytdlp_format`` any more), gone (removed), else error."""
    cause = exc.exc_info[1] if getattr(exc, "exc_info", None) else None
    message = re.sub(r"^ERROR:\s*", "", str(exc))
    if isinstance(cause, yt_dlp.utils.GeoRestrictedError):
        status, reason = "forbidden", "geo_restricted"
    elif re.search(r"requested format is not available", message, re.IGNORECASE):
        status, reason = "changed", "format"
    elif _YTDLP_FORBIDDEN.search(message):
        status, reason = "forbidden", "login_required"
    elif _YTDLP_GONE.search(message):
        status, reason = "gone", "removed"
    else:
        status, reason = "error", "ytdlp_failed"
    return {"status": status, "reason": reason, "detail": message[:500]}


def _store_failure(exc: StorageError) -> dict[str, Any]:
    refused = "refused access" in str(exc)
    return {"status": "forbidden" if refused else "error", "reason": "store_error", "detail": str(exc)}


def _status_of_http(status: int) -> str:
    if status in (200, 206):
        return "available"
    if status in GONE_STATUSES:
        return "gone"
    return "forbidden" if status in FORBIDDEN_STATUSES else "error"


def _rejected(exc: Rejection) -> dict[str, Any]:
    """The status of a source the download code rejected: gone, forbidden or error, with the HTTP status if any."""
    status = "gone" if exc.reason in GONE_REASONS else "forbidden" if exc.reason in FORBIDDEN_REASONS else "error"
    match = re.fullmatch(r"http_(\d{3})", exc.reason)
    return {"status": status, "reason": exc.reason, "detail": exc.detail,
            "http_status": int(match.group(1)) if match else None}


def _compare(row: dict[str, Any]) -> None:
    """An available source against its record: ``unchanged`` when the hashes match, ``changed`` when the hash or the
    size differs; left ``available`` when nothing recorded can be compared."""
    if row.get("sha256") and row.get("recorded_sha256"):
        same = row["sha256"] == row["recorded_sha256"]
        row["status"] = "unchanged" if same else "changed"
        if not same:
            row.update(reason="sha256", detail=f"sha256 {row['sha256'][:16]}…, recorded {row['recorded_sha256'][:16]}…")
    elif row.get("size") is not None and row.get("recorded_bytes") is not None and row["size"] != row["recorded_bytes"]:
        row.update(status="changed", reason="size", detail=f"{row['size']} bytes, recorded {row['recorded_bytes']}")


# --- the whole corpus -------------------------------------------------------------------------------

def verify_config(root: str | Location, overrides: Sequence[str] = (), **fields: Any) -> VerifyConfig:
    """The corpus's download settings (from its manifest), then ``--set`` ``overrides``, then explicit ``fields``."""
    root = Location(str(root))
    manifest = read_manifest(root) if manifest_location(root).is_file() else {}
    download = manifest.get("config", {}).get("download") or {}
    try:
        DownloadConfig.from_dict(download)
    except ConfigError as exc:
        log.warning("the corpus's download settings are not this version's (%s); using the defaults", exc)
        download = {}
    data = apply_overrides({"download": download}, overrides)
    data.update({k: v for k, v in fields.items() if v is not None})
    return VerifyConfig.from_dict(data, "verify-sources settings" + (" with --set overrides" if overrides else ""))


def source_roots(root: Location, cfg: VerifyConfig) -> list[str] | None:
    """Where local sources may be read from: ``download.local_roots``, else the directory of the corpus's input,
    as the curation job confined them; None (no confinement) when the corpus records no input."""
    if cfg.download.local_roots:
        return [os.path.abspath(os.path.expanduser(r)) for r in cfg.download.local_roots]
    manifest = read_manifest(root) if manifest_location(root).is_file() else {}
    source = manifest.get("config", {}).get("input")
    if not source:
        return None
    location = Location(source)
    if not location.is_local:
        return []
    return [location.uri] if location.is_dir() else [location.parent.uri]


def verify_sources(root: str | Location, cfg: VerifyConfig, out: str | Location | None = None) -> dict[str, Any]:
    """Check every source of the corpus at ``root``; write one status file per partition and ``summary.json``
    into ``out`` (default ``<root>/availability``); return the summary."""
    root = Location(str(root))
    if not root.exists():
        raise FileNotFoundError(f"corpus {root} does not exist")
    names = corpus_partitions(root)
    if not names and not manifest_location(root).is_file():
        raise FileNotFoundError(f"{root} holds no index/, rejections/ or manifest.json: it is not a corpus")
    out_dir = Location(str(out)) if out else root / AVAILABILITY_DIR
    if out_dir.is_file():
        raise ValueError(f"{out_dir} is a file; give --out a directory (it is created when missing)")
    manifest = read_manifest(root) if manifest_location(root).is_file() else {}
    started, began = time.monotonic(), datetime.now(UTC)
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    requests_made = 0

    def count(rows: list[dict[str, Any]]) -> None:
        nonlocal requests_made
        counts.update(r["status"] for r in rows)
        reasons.update(f"{r['status']}/{r['reason']}" for r in rows if r.get("reason"))
        requests_made += sum(r["attempts"] or 0 for r in rows)

    earlier = {f.name.removesuffix(".parquet"): f for f in partition_files(out_dir)}
    for name in sorted(set(earlier) - set(names)):  # partitions the corpus no longer has
        earlier.pop(name).delete()
    if cfg.resume:
        for name in sorted(earlier):
            count(earlier[name].read_table(columns=["status", "reason", "attempts"]).to_pylist())
        log.info("resuming: %d of %d partitions were checked by an earlier run", len(earlier), len(names))
    todo = [name for name in names if not (cfg.resume and name in earlier)]
    with scratch_dir("verify") as scratch, ThreadPoolExecutor(cfg.concurrency) as pool, tqdm(
            total=manifest.get("counts", {}).get("sources") if not cfg.resume else None, desc="sources checked",
            unit="source", disable=None) as progress:
        checker = Checker(cfg, scratch, source_roots(root, cfg))
        for name, rows in _checked_partitions(root, todo, checker, pool, progress.update):
            (out_dir / f"{name}.parquet").write_table(pa.Table.from_pylist(rows, schema=AVAILABILITY_SCHEMA))
            count(rows)
    summary = {
        "corpus": root.uri, "out": out_dir.uri, "checked_at": began.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - started, 3), "partitions": len(names), "sources": sum(counts.values()),
        "resumed_partitions": len(names) - len(todo),
        "hash": cfg.hash, "concurrency": cfg.concurrency, "rate": cfg.rate, "requests": requests_made,
        "by_status": {s: counts.get(s, 0) for s in STATUSES}, "by_reason": dict(sorted(reasons.items())),
    }
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    return summary


def _checked_partitions(root: Location, names: list[str], checker: Checker, pool: ThreadPoolExecutor,
                        tick: Callable[[int], Any]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Each partition's rows, in order, while up to ``PARTITIONS_IN_FLIGHT`` partitions are queued: the pool never
    idles on one partition's slowest source, and memory holds only those partitions' sources."""
    pending: deque[tuple[str, list[Future[dict[str, Any]]]]] = deque()
    for name in names:
        futures = [pool.submit(checker.check, src) for src in partition_sources(root, name)]
        for future in futures:
            future.add_done_callback(lambda _: tick(1))
        pending.append((name, futures))
        if len(pending) >= PARTITIONS_IN_FLIGHT:
            done, futures = pending.popleft()
            yield done, [f.result() for f in futures]
    while pending:
        done, futures = pending.popleft()
        yield done, [f.result() for f in futures]


def summary_table(summary: dict[str, Any]) -> str:
    """The summary as a plain-text table for the terminal."""
    total = summary["sources"] or 1
    lines = [f"{'status':<10} {'sources':>10} {'share':>8}"]
    lines += [f"{status:<10} {n:>10,} {100 * n / total:>7.1f}%" for status, n in summary["by_status"].items()]
    lines.append(f"{'total':<10} {summary['sources']:>10,}   ({summary['requests']:,} requests, "
                 f"{summary['seconds']:.1f} s)")
    if summary["by_reason"]:
        lines.append("reasons: " + ", ".join(f"{k} {v:,}" for k, v in summary["by_reason"].items()))
    return "\n".join(lines)

