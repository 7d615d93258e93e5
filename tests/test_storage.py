"""storage.Location against a local directory and a real S3 API (moto_server on loopback).

Every behaviour the pipeline relies on is pinned on both backends, so a path that works on a
laptop works on a bucket: round trips, listings, atomic writes, moves versus uploads, scratch
copies. The fault tests check that a store problem becomes a ``StorageError`` that says what to
fix, and that transient faults (503 SlowDown) are ridden out by pyarrow's retries.
"""

from __future__ import annotations

import http.client
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pytest

from storage import location as location_module
from storage.location import Location, StorageError, check_access
from storage.scratch import local_copy, scratch_dir
from tests.s3_server import FaultProxy, S3Server, free_port, s3_client_env, s3_env


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    """An empty directory: under ``tmp_path``, or a prefix in a fresh bucket of the moto server."""
    if request.param == "local":
        return Location(str(tmp_path / "store"))
    return Location(request.getfixturevalue("s3_bucket")) / "prefix"


@pytest.fixture
def few_retries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Two attempts per S3 request instead of ten, so a test of a lasting fault ends in seconds.

    The attempt count is read when the cached client is built, hence the cache clears.
    """
    monkeypatch.setattr(location_module, "S3_MAX_ATTEMPTS", 2)
    location_module._s3.cache_clear()
    yield
    location_module._s3.cache_clear()


def _visible(directory: Location) -> list[str]:
    """Names under ``directory`` at any depth, staging files included (they must not linger)."""
    return [f.uri[len(directory.uri) + 1:] for f in directory.files(recursive=True)]


# --- behaviour on both backends ------------------------------------------------------------------------


def test_bytes_and_text_round_trip(root: Location) -> None:
    target = root / "a" / "b.bin"
    target.write_bytes(b"\x00\x01payload")
    assert target.read_bytes() == b"\x00\x01payload"
    target.write_text("second, überschrieben")  # an overwrite replaces the whole content
    assert target.read_text() == "second, überschrieben"
    assert target.size() == len("second, überschrieben".encode())
    assert _visible(root) == ["a/b.bin"]


def test_table_round_trip(root: Location) -> None:
    table = pa.table({"clip_id": ["x", "y"], "score": [0.5, 1.5]})
    target = root / "t.parquet"
    target.write_table(table)
    assert target.read_table().equals(table)
    assert target.read_table(columns=["score"]).column_names == ["score"]


def test_files_lists_sorted_direct_or_recursive_and_empty_when_missing(root: Location) -> None:
    for name in ["b.txt", "a.txt", "sub/c.txt", "sub/deeper/d.txt"]:
        (root / name).write_bytes(name.encode())
    assert [f.name for f in root.files()] == ["a.txt", "b.txt"]
    assert [f.uri for f in root.files(recursive=True)] == [
        (root / n).uri for n in ["a.txt", "b.txt", "sub/c.txt", "sub/deeper/d.txt"]
    ]
    assert (root / "sub" / "c.txt").read_bytes() == b"sub/c.txt"  # listed locations are usable as such
    assert (root / "absent").files() == []
    assert (root / "absent").files(recursive=True) == []


def test_exists_is_file_is_dir(root: Location) -> None:
    (root / "d" / "f.bin").write_bytes(b"x")
    file, directory, missing = root / "d" / "f.bin", root / "d", root / "nothing"
    assert (file.exists(), file.is_file(), file.is_dir()) == (True, True, False)
    assert (directory.exists(), directory.is_file(), directory.is_dir()) == (True, False, True)
    assert (missing.exists(), missing.is_file(), missing.is_dir()) == (False, False, False)
    with pytest.raises(FileNotFoundError):  # a missing file is an answer, never a StorageError
        missing.read_bytes()


def test_delete_and_delete_tree(root: Location) -> None:
    for name in ["keep.txt", "tree/a.txt", "tree/sub/b.txt"]:
        (root / name).write_bytes(b"x")
    (root / "keep.txt").delete()
    (root / "keep.txt").delete()  # a missing file is fine
    assert not (root / "keep.txt").exists()
    (root / "tree").delete_tree()
    (root / "tree").delete_tree()  # a missing directory is fine
    assert not (root / "tree").exists()
    assert _visible(root) == []


def test_upload_from_moves_locally_and_uploads_to_the_store(root: Location, tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    payload = os.urandom(location_module.CHUNK_BYTES + 12345)  # more than one chunk (and one S3 part)
    source.write_bytes(payload)
    target = root / "up" / "dst.bin"
    target.upload_from(source)
    assert target.read_bytes() == payload
    # Same local disk: a rename, so the source is gone. To the store: a copy, the source stays.
    assert source.exists() is (not target.is_local)
    assert _visible(root) == ["up/dst.bin"]


def test_download_to(root: Location, tmp_path: Path) -> None:
    (root / "v.mp4").write_bytes(b"video bytes")
    dest = (root / "v.mp4").download_to(tmp_path / "deep" / "down" / "v.mp4")
    assert dest.read_bytes() == b"video bytes"


def _failing_chunks() -> Iterator[bytes]:
    yield b"partial " * 1000
    raise RuntimeError("producer failed midway")


def test_failed_write_leaves_no_object_and_no_partial_file(root: Location) -> None:
    """A writer that dies midway: the new name never appears, an old object keeps its content.

    Pins the S3 staging-and-copy: pyarrow's output stream completes the upload when it is closed or
    collected, so writing straight to the real key would publish the partial bytes.
    """
    fresh, existing = root / "fresh.bin", root / "existing.bin"
    existing.write_bytes(b"good old content")
    for target in (fresh, existing):
        with pytest.raises(RuntimeError, match="producer failed midway"):
            target._write_chunks(_failing_chunks())
    assert not fresh.exists()
    assert existing.read_bytes() == b"good old content"
    assert _visible(root) == ["existing.bin"]  # no staging or .part files left behind


def test_local_copy_is_the_file_itself_or_one_scratch_copy(root: Location) -> None:
    target = root / "clip.mp4"
    target.write_bytes(b"first")
    with scratch_dir("test") as scratch:
        copy = local_copy(target.uri, scratch)
        assert copy.read_bytes() == b"first"
        assert copy.suffix == ".mp4"
        if target.is_local:
            assert copy == target.local_path()  # no copy of a local file
        else:
            assert copy.is_relative_to(scratch)
            target.write_bytes(b"second")
            assert local_copy(target.uri, scratch) == copy  # copied once per task
            assert copy.read_bytes() == b"first"
    assert not scratch.exists()


def test_check_access_passes_on_a_writable_root(root: Location) -> None:
    check_access(root, write=True)
    assert _visible(root) == []  # the probe object is deleted
    with pytest.raises(FileNotFoundError):
        check_access(root / "absent", write=False)


# --- faults of the store (S3 only) --------------------------------------------------------------------


def test_missing_bucket_says_so(s3_server: S3Server) -> None:
    bucket = f"nope-{uuid.uuid4().hex[:12]}"
    with pytest.raises(StorageError, match=rf"bucket '{bucket}' of s3://{bucket}/x.* does not exist"):
        check_access(Location(f"s3://{bucket}/x"), write=True)


def test_refused_credentials_say_so() -> None:
    """moto accepts any key unless auth is enforced (``/moto-api/reset-auth``): a server of its own."""
    with S3Server() as server:
        bucket = server.create_bucket()
        server.enforce_auth()
        with s3_client_env(server.env()), pytest.raises(StorageError) as info:
            check_access(Location(f"s3://{bucket}/x"), write=True)
    message = str(info.value)
    assert "refused access" in message and "AWS_ACCESS_KEY_ID" in message
    assert not message.startswith("bucket")  # not mistaken for a missing bucket


def test_unreachable_endpoint_says_so(few_retries: None) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with s3_client_env(s3_env(endpoint)), pytest.raises(StorageError, match="cannot reach the object store") as info:
        check_access(Location("s3://any-bucket/x"), write=True)
    assert endpoint in str(info.value) and "AWS_ENDPOINT_URL" in str(info.value)


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the session's moto server, with this process's S3 client behind it."""
    with FaultProxy(s3_server.endpoint) as fault_proxy, s3_client_env(fault_proxy.env()):
        yield fault_proxy


def test_slowdown_answers_are_retried(proxy: FaultProxy, s3_bucket: str) -> None:
    target = Location(s3_bucket) / "retried.bin"
    proxy.fail_next(3)
    target.write_bytes(b"made it")
    assert proxy.faults_served == 3
    assert [r.outcome for r in proxy.requests[:4]] == ["503", "503", "503", "forwarded"]
    assert target.read_bytes() == b"made it"


def test_slowdown_beyond_the_retries_is_a_storage_error(proxy: FaultProxy, s3_bucket: str,
                                                        few_retries: None) -> None:
    target = Location(s3_bucket) / "never.bin"
    proxy.fail_next(1000)
    with pytest.raises(StorageError, match="rerun"):
        target.write_bytes(b"x")
    assert proxy.faults_served == 2  # S3_MAX_ATTEMPTS attempts, then the error
    proxy.fail_next(0)
    assert not target.exists()


def test_outage_through_the_proxy_then_recovery(proxy: FaultProxy, s3_bucket: str, few_retries: None) -> None:
    """``down()`` is an outage that keeps the store's data (unlike restarting moto, below)."""
    before = Location(s3_bucket) / "before.bin"
    before.write_bytes(b"kept")
    proxy.down()
    with pytest.raises(StorageError, match="cannot reach the object store"):
        (Location(s3_bucket) / "during.bin").write_bytes(b"x")
    proxy.up()
    assert before.read_bytes() == b"kept"
    (Location(s3_bucket) / "after.bin").write_bytes(b"y")
    assert [f.name for f in Location(s3_bucket).files()] == ["after.bin", "before.bin"]


def test_large_multipart_upload_through_the_proxy(proxy: FaultProxy, s3_bucket: str) -> None:
    """The proxy forwards pyarrow's multipart uploads and ranged reads byte for byte."""
    payload = os.urandom(12 * 1024 * 1024)
    target = Location(s3_bucket) / "big.bin"
    target.write_bytes(payload)
    assert target.read_bytes() == payload
    methods = [r.method for r in proxy.requests]
    assert methods.count("PUT") >= 2 and proxy.faults_served == 0


def test_restarted_moto_server_is_empty() -> None:
    """moto has no persistence: a restart on the same port loses every bucket (use FaultProxy.down)."""
    with S3Server() as server:
        bucket = server.create_bucket()
        port, first_pid = server.port, server.pid
        with s3_client_env(server.env()):
            (Location(f"s3://{bucket}") / "x").write_bytes(b"x")
            server.stop()
            assert not server.running()
            server.start()
            assert (server.port, server.running()) == (port, True) and server.pid != first_pid
            with pytest.raises(StorageError, match="does not exist"):
                check_access(Location(f"s3://{bucket}"), write=True)


# --- the proxy's own HTTP handling (keep-alive, chunked bodies, faults between requests) --------------


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers each request with its method and body, keeping the connection open (HTTP/1.1)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_PUT(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            body = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        reply = b"PUT " + body
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


def test_proxy_keeps_connections_alive_and_streams_chunked_bodies() -> None:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    threading.Thread(target=upstream.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}") as fault_proxy:
            conn = http.client.HTTPConnection("127.0.0.1", fault_proxy.port, timeout=10)
            answers = []
            conn.request("PUT", "/a", body=b"sized body")
            answers.append(conn.getresponse().read())
            conn.request("PUT", "/b", body=iter([b"chunk one, ", b"chunk two"]), encode_chunked=True)
            answers.append(conn.getresponse().read())
            fault_proxy.fail_next(1)
            conn.request("PUT", "/c", body=b"refused")
            refused = conn.getresponse()
            refused_body = refused.read()
            conn.request("PUT", "/d", body=b"after the fault")
            answers.append(conn.getresponse().read())
            conn.close()
        assert answers == [b"PUT sized body", b"PUT chunk one, chunk two", b"PUT after the fault"]
        assert refused.status == 503 and b"<Code>SlowDown</Code>" in refused_body
        assert fault_proxy.connections == 1  # all four requests on one kept-alive connection
        assert [(r.target, r.outcome) for r in fault_proxy.requests] == [
            ("/a", "forwarded"), ("/b", "forwarded"), ("/c", "503"), ("/d", "forwarded")]
    finally:
        upstream.shutdown()
        upstream.server_close()
