"""A real HTTP server for tests: serves video files and misbehaves in the ways real servers do.

Downloads are tested against actual sockets rather than mocks, so status codes, Range requests,
truncated bodies and timeouts go through requests/urllib3/yt-dlp exactly as they would in production.

Routes (``<name>`` is a file in ``root_dir``):

* ``/videos/<name>``       the file, with Content-Type/Length and Range support (206)
* ``/missing/<name>``      404
* ``/forbidden/<name>``    403
* ``/flaky/<name>``        500 for the first ``flaky_failures`` requests, then the file
* ``/ratelimited/<name>``  429 with ``Retry-After: <retry_after>`` once, then the file
* ``/chunked/<name>``      the file with chunked transfer encoding: no Content-Length, no Range
* ``/truncated/<name>``    announces the full Content-Length, sends half and closes (ignores Range)
* ``/slow/<name>``         waits ``slow_s`` (or until stop) before answering with the file
* ``/text/<name>``         a text/plain body
* ``/page/<name>``         an HTML page whose ``<video>`` points at ``/videos/<name>``
* ``/novideo/<name>``      an HTML page without any media
* ``/redirect/<name>?to=U`` 302 to ``U`` (any scheme, any host: what a hostile server sends); without
  ``to``, to itself (a loop)
* ``/drip/<name>``         announces the file's length, then sends one byte every ``drip_s`` (ignores Range)
* ``/busy/<name>``         503 with ``Retry-After: <retry_after>`` once, then the file
* ``/nohead/<name>``       405 to HEAD (as some servers answer), the file to GET

Every request is counted per path (``count``) and recorded with its headers and arrival time (``requests``).
"""

from __future__ import annotations

import mimetypes
import re
import sys
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass(frozen=True)
class Request:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    time: float = 0.0  # time.monotonic() when it arrived


class VideoServer:
    """Threaded HTTP server on 127.0.0.1 with an OS-chosen port; use as a context manager."""

    def __init__(
        self,
        root_dir: str | Path,
        *,
        flaky_failures: int = 2,
        retry_after: int = 1,
        slow_s: float = 5.0,
        drip_s: float = 0.2,
    ) -> None:
        self.root_dir = Path(root_dir)
        self.flaky_failures = flaky_failures
        self.retry_after = retry_after
        self.slow_s = slow_s
        self.drip_s = drip_s
        self.requests: list[Request] = []
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> VideoServer:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.video_server = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> VideoServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` (``/videos/a.mp4``) on this server."""
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def count(self, path: str) -> int:
        """How many requests ``path`` (without query) has received."""
        with self._lock:
            return self._counts["/" + path.lstrip("/")]

    def requests_for(self, path: str) -> list[Request]:
        """The recorded requests for ``path``, oldest first."""
        with self._lock:
            return [r for r in self.requests if r.path == "/" + path.lstrip("/")]

    def _record(self, method: str, path: str, headers: dict[str, str]) -> int:
        """Count a request and return how many ``path`` has had, this one included."""
        with self._lock:
            self.requests.append(Request(method, path, headers, time.monotonic()))
            self._counts[path] += 1
            return self._counts[path]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for a client stuck on /slow
    video_server: VideoServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up early (timeouts, size limits) are expected; report anything else."""
        if not isinstance(sys.exception(), ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "VideoServer/1"

    @property
    def app(self) -> VideoServer:
        assert isinstance(self.server, _Server)
        return self.server.video_server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Keep test output quiet."""

    def do_GET(self) -> None:
        self._dispatch(body=True)

    def do_HEAD(self) -> None:
        self._dispatch(body=False)

    def _dispatch(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        nth = self.app._record(self.command, path, dict(self.headers.items()))
        route, _, name = path.lstrip("/").partition("/")
        file = self.app.root_dir / name
        if route == "redirect":
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            self._simple(302, "text/plain", b"moved\n", body, {"Location": query.get("to", [self.path])[0]})
            return
        self._route(route, name, file, nth, body)

    def _route(self, route: str, name: str, file: Path, nth: int, body: bool) -> None:
        app = self.app
        if route == "missing":
            self._simple(404, "text/plain", b"not found\n", body)
        elif route == "forbidden":
            self._simple(403, "text/plain", b"forbidden\n", body)
        elif route == "flaky" and nth <= app.flaky_failures:
            self._simple(500, "text/plain", b"try again\n", body)
        elif route == "ratelimited" and nth == 1:
            self._simple(429, "text/plain", b"slow down\n", body, {"Retry-After": str(app.retry_after)})
        elif route == "busy" and nth == 1:
            self._simple(503, "text/plain", b"busy\n", body, {"Retry-After": str(app.retry_after)})
        elif route == "nohead" and not body:
            self._simple(405, "text/plain", b"method not allowed\n", body, {"Allow": "GET"})
        elif route == "text":
            self._simple(200, "text/plain; charset=utf-8", b"this is not a video\n", body)
        elif route == "page":
            html = f'<html><body><video src="/videos/{name}" controls width="320"></video></body></html>'
            self._simple(200, "text/html; charset=utf-8", html.encode(), body)
        elif route == "novideo":
            self._simple(200, "text/html; charset=utf-8", b"<html><body><p>No video here.</p></body></html>", body)
        elif route == "slow":
            app._stopping.wait(app.slow_s)
            self._file(file, body)
        elif route == "drip":
            self._drip(file, body)
        elif route == "truncated":
            self._truncated(file, body)
        elif route == "chunked":
            self._chunked(file, body)
        elif route in ("videos", "flaky", "ratelimited", "busy", "nohead"):
            self._file(file, body)
        else:
            self._simple(404, "text/plain", b"unknown route\n", body)

    def _simple(self, status: int, content_type: str, payload: bytes, body: bool,
                extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def _file(self, file: Path, body: bool) -> None:
        """Serve ``file`` whole (200) or the requested byte range (206)."""
        if not file.is_file():
            self._simple(404, "text/plain", b"no such file\n", body)
            return
        data = file.read_bytes()
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        match = _RANGE.match(self.headers.get("Range", "").strip())
        if match is None:
            self._simple(200, content_type, data, body, {"Accept-Ranges": "bytes"})
            return
        start = int(match.group(1))
        end = min(int(match.group(2)) if match.group(2) else len(data) - 1, len(data) - 1)
        if start >= len(data) or start > end:
            self._simple(416, "text/plain", b"range not satisfiable\n", body, {"Content-Range": f"bytes */{len(data)}"})
            return
        self._simple(
            206, content_type, data[start : end + 1], body,
            {"Accept-Ranges": "bytes", "Content-Range": f"bytes {start}-{end}/{len(data)}"},
        )

    def _truncated(self, file: Path, body: bool) -> None:
        """Promise the whole file, send half of it and hang up."""
        data = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", mimetypes.guess_type(file.name)[0] or "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
        self.close_connection = True

    def _drip(self, file: Path, body: bool) -> None:
        """Promise the whole file and send it one byte at a time, ``drip_s`` apart, until done or stopped."""
        data = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", mimetypes.guess_type(file.name)[0] or "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.flush()
        for i in range(len(data) if body else 0):
            if self.app._stopping.wait(self.app.drip_s):
                break
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()
        self.close_connection = True

    def _chunked(self, file: Path, body: bool) -> None:
        """Send the file in 16 KiB chunks without announcing its length, as streaming servers do."""
        data = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", mimetypes.guess_type(file.name)[0] or "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if not body:
            return
        for start in range(0, len(data), 16384):
            piece = data[start : start + 16384]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")
