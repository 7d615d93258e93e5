"""A real S3 API on loopback for tests: ``moto_server`` in a subprocess, and a fault-injecting proxy.

Storage is tested against actual sockets and the actual AWS C++ SDK inside pyarrow, not mocks, so
request signing, multipart uploads, retries, keep-alive and error bodies go through the same code
as in production. Only the store behind the endpoint is a stand-in.

* ``S3Server``: ``moto_server`` (from the ``moto[server]`` test dependency) on 127.0.0.1 with a free
  port. moto keeps everything in memory and has no persistence: ``stop()`` then ``start()`` gives an
  *empty* store on the same port (buckets and objects are gone). To simulate an outage during a job
  without losing the store, keep the server up and take a ``FaultProxy`` in front of it down instead.
* ``FaultProxy``: a loopback TCP proxy that forwards HTTP/1.1 byte for byte (keep-alive, chunked and
  ``Expect: 100-continue`` request bodies) and, on demand, answers the next N requests with S3's
  ``503 SlowDown`` error or refuses all connections while ``down()``.
* ``s3_client_env``: point this process's pyarrow S3 client at another endpoint or credentials for
  a block (pyarrow reads them from the environment when an ``S3FileSystem`` is built, and
  ``storage.location`` caches that file system).

Processes are started from argument lists (never a shell string) and stopped by their pid.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import requests

#: The credentials moto accepts (any, unless auth is enforced) and that tests use.
TEST_ACCESS_KEY = "testing"
TEST_SECRET_KEY = "testing"
TEST_REGION = "us-east-1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def s3_env(endpoint: str, access_key: str = TEST_ACCESS_KEY, secret_key: str = TEST_SECRET_KEY) -> dict[str, str]:
    """The environment a process needs for pyarrow's S3 client to use ``endpoint`` with these keys.

    ``AWS_EC2_METADATA_DISABLED`` stops the SDK probing the instance-metadata service (a slow
    timeout on machines that are not EC2 instances).
    """
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_DEFAULT_REGION": TEST_REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


#: Variables that change which store or identity pyarrow's S3 client uses; ``s3_client_env``
#: clears those it is not given so a stray one from the outer environment cannot leak in.
_S3_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_EC2_METADATA_DISABLED")


@contextmanager
def s3_client_env(env: Mapping[str, str]) -> Iterator[None]:
    """Use ``env`` (from ``s3_env``) for this process's S3 client inside the block, then restore.

    ``storage.location._s3`` caches one ``S3FileSystem`` built from the environment, so the cache
    is cleared on entry and again on exit: the block gets a client for ``env`` and the code after
    it a client for the restored environment.
    """
    from storage import location

    saved = {name: os.environ.get(name) for name in _S3_VARS}
    try:
        for name in _S3_VARS:
            os.environ.pop(name, None)
        os.environ.update(env)
        location._s3.cache_clear()
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        location._s3.cache_clear()


def _moto_server_executable() -> str:
    """``moto_server`` next to this interpreter (the project's venv), else from PATH."""
    beside = Path(sys.executable).parent / "moto_server"
    return str(beside) if beside.exists() else "moto_server"


def _wait_listening(port: int, alive: Callable[[], bool], timeout_s: float) -> None:
    """Wait until 127.0.0.1:``port`` answers HTTP; fail early when the process died."""
    deadline = time.monotonic() + timeout_s
    url = f"http://127.0.0.1:{port}/moto-api/data.json"
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"moto_server on port {port} exited during start-up")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"moto_server on port {port} did not answer within {timeout_s} s")


class S3Server:
    """``moto_server`` on 127.0.0.1 in a child process; a context manager.

    ``stop()`` and ``start()`` again reuse the port, but moto has no persistence: a restarted
    server is empty (see the module docstring; ``FaultProxy.down()`` is the outage that keeps data).
    """

    def __init__(self, port: int | None = None, start_timeout_s: float = 30.0) -> None:
        self.port = port or free_port()
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._logdir = Path(tempfile.mkdtemp(prefix="videofactory-moto-"))
        #: moto_server's own output (werkzeug's request log): read it when a test fails oddly.
        self.log_path = self._logdir / "moto_server.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def env(self) -> dict[str, str]:
        """The environment variables a process (this one, a Ray worker, a CLI) needs to use this store."""
        return s3_env(self.endpoint)

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> S3Server:
        """Start the server (again, on the same port) and wait until it answers."""
        if self.running():
            return self
        env = dict(os.environ)
        # moto reads these at import; the child's own AWS variables must not point it elsewhere.
        env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [_moto_server_executable(), "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        try:
            _wait_listening(self.port, self.running, self.start_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server by its pid (SIGTERM, then SIGKILL); its buckets and objects are lost."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- store administration (plain HTTP: moto accepts unsigned requests while auth is off) ------
    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique name by default) and return its name."""
        name = name or f"test-{uuid.uuid4().hex[:20]}"
        response = requests.put(f"{self.endpoint}/{name}", timeout=10)
        response.raise_for_status()
        return name

    def enforce_auth(self) -> None:
        """From now on check every request's signature against moto's IAM (which knows no keys).

        moto's ``/moto-api/reset-auth`` sets ``INITIAL_NO_AUTH_ACTION_COUNT`` at run time: with 0,
        every S3 request is authenticated, so any key (``testing`` included) is refused with
        ``InvalidAccessKeyId``. Use a separate server for this: it affects every client.
        """
        response = requests.post(f"{self.endpoint}/moto-api/reset-auth", data=b"0", timeout=10)
        response.raise_for_status()


# --- fault-injecting proxy --------------------------------------------------------------------------

_SLOWDOWN_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    "<Message>Please reduce your request rate.</Message><RequestId>{rid}</RequestId></Error>"
)


@dataclass(frozen=True)
class ProxiedRequest:
    """One request the proxy saw: what it did with it (``forwarded`` or ``503``)."""

    method: str
    target: str
    outcome: str


class _Reader:
    """Buffered reads from a socket: whole lines, exact byte counts and HTTP heads."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def until(self, marker: bytes, limit: int = 1 << 20) -> bytes | None:
        """Bytes up to and including ``marker``; None at a clean end of stream before any byte."""
        while marker not in self.buf:
            if len(self.buf) > limit:
                raise ConnectionError("request head too long")
            if not self._fill():
                if self.buf:
                    raise ConnectionError("connection closed mid-request")
                return None
        end = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:end], self.buf[end:]
        return out

    def copy(self, n: int, sink: Callable[[bytes], None]) -> None:
        """Pass exactly ``n`` bytes to ``sink`` as they arrive (streamed, not gathered)."""
        while n > 0:
            if not self.buf and not self._fill():
                raise ConnectionError("connection closed mid-body")
            piece, self.buf = self.buf[:n], self.buf[n:]
            sink(piece)
            n -= len(piece)

    def copy_body(self, headers: dict[str, str], sink: Callable[[bytes], None]) -> None:
        """Pass one request body to ``sink``, framed by Transfer-Encoding: chunked or Content-Length."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                line = self.until(b"\r\n")
                if line is None:
                    raise ConnectionError("connection closed mid-chunk")
                sink(line)
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:  # trailers, then the empty line
                    while True:
                        trailer = self.until(b"\r\n")
                        if trailer is None:
                            raise ConnectionError("connection closed in trailers")
                        sink(trailer)
                        if trailer == b"\r\n":
                            return
                self.copy(size + 2, sink)  # data and its CRLF
        else:
            self.copy(int(headers.get("content-length", "0") or 0), sink)


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    return method, target, headers


class FaultProxy:
    """A loopback HTTP/1.1 proxy in front of ``upstream`` (an ``http://127.0.0.1:PORT`` endpoint).

    Healthy, it forwards every request and response byte for byte, one upstream connection per
    client connection, so keep-alive and streamed bodies behave as without it. Faults:

    * ``fail_next(n)``: the next ``n`` requests are answered ``503 SlowDown`` (an S3 XML error) and
      never reach the store; ``faults_served`` counts them.
    * ``down()``: stop listening (new connections are refused, as for a dead endpoint) and cut the
      open ones; ``up()`` listens again on the same port.
    """

    def __init__(self, upstream: str, port: int | None = None) -> None:
        host_port = upstream.split("://", 1)[-1].rstrip("/")
        host, _, port_text = host_port.rpartition(":")
        self.upstream = (host, int(port_text))
        self.port = port or free_port()
        self.requests: list[ProxiedRequest] = []
        self.connections = 0
        self.faults_served = 0
        self._faults_pending = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._accepting = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self._open: set[socket.socket] = set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment that sends a process's S3 client through this proxy."""
        return s3_env(self.endpoint)

    def forwarded(self) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.outcome == "forwarded")

    # -- faults -------------------------------------------------------------------------------------
    def fail_next(self, n: int) -> None:
        """Answer the next ``n`` requests with ``503 SlowDown``."""
        with self._lock:
            self._faults_pending = n

    def down(self) -> None:
        """An outage: refuse new connections and cut the open ones until ``up()``."""
        self._accepting.clear()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
            self._accept_thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            open_now, self._open = list(self._open), set()
        for sock in open_now:
            _close(sock)

    def up(self) -> FaultProxy:
        """Listen (again) on the same port."""
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self._listener = listener
        self._accepting.set()
        self._accept_thread = threading.Thread(target=self._accept_loop, args=(listener,), daemon=True)
        self._accept_thread.start()
        return self

    start = up
    stop = down

    def __enter__(self) -> FaultProxy:
        return self.up()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()

    # -- serving ------------------------------------------------------------------------------------
    def _accept_loop(self, listener: socket.socket) -> None:
        while self._accepting.is_set():
            try:
                client, _addr = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                self.connections += 1
                self._open.add(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _record(self, method: str, target: str, outcome: str) -> None:
        with self._lock:
            self.requests.append(ProxiedRequest(method, target, outcome))

    def _take_fault(self) -> bool:
        with self._lock:
            if self._faults_pending > 0:
                self._faults_pending -= 1
                self.faults_served += 1
                return True
            return False

    def _serve(self, client: socket.socket) -> None:
        """One client connection: parse each request's framing, forward it or answer it with a fault."""
        reader = _Reader(client)
        upstream: socket.socket | None = None
        try:
            while True:
                head = reader.until(b"\r\n\r\n")
                if head is None:
                    return
                method, target, headers = _parse_head(head)
                if self._take_fault():
                    keep_alive = "100-continue" not in headers.get("expect", "").lower()
                    if keep_alive:  # read the body the client sends anyway, so the answer is not lost
                        reader.copy_body(headers, lambda _piece: None)
                    client.sendall(_slowdown(method, keep_alive))
                    self._record(method, target, "503")
                    if not keep_alive:  # the client waits for 100 and never sends the body
                        return
                    continue
                if upstream is None:
                    upstream = socket.create_connection(self.upstream, timeout=30)
                    upstream.settimeout(None)
                    with self._lock:
                        self._open.add(upstream)
                    threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
                self._record(method, target, "forwarded")
                upstream.sendall(head)
                reader.copy_body(headers, upstream.sendall)
        except (OSError, ValueError):
            return  # a cut connection (down(), the client or moto closed it) or bytes that are not HTTP
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with self._lock:
                        self._open.discard(sock)
                    _close(sock)


def _slowdown(method: str, keep_alive: bool) -> bytes:
    body = _SLOWDOWN_BODY.format(rid=uuid.uuid4().hex[:16]).encode()
    head = (
        "HTTP/1.1 503 Slow Down\r\n"
        "Content-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n"
        "\r\n"
    ).encode()
    return head if method == "HEAD" else head + body


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until ``src`` ends, then end ``dst`` too (responses are not parsed)."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        _close(dst)
        _close(src)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


__all__ = ["FaultProxy", "ProxiedRequest", "S3Server", "free_port", "s3_client_env", "s3_env"]


if __name__ == "__main__":  # a manual check: python -m tests.s3_server
    with S3Server() as server, FaultProxy(server.endpoint) as proxy:
        print(server.endpoint, proxy.endpoint, server.create_bucket("manual"))
