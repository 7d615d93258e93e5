"""``Location``: a file or a directory prefix on a local disk or in an object store, through ``pyarrow.fs``.

Why pyarrow.fs and not fsspec: pyarrow is already how every table of the project is read and
written, its S3 client is the AWS C++ SDK (the standard credential chain: environment, shared
config and credentials files, instance roles; ``AWS_ENDPOINT_URL`` for S3-compatible stores) and
Ray Data's readers take its file systems directly. Credentials and endpoints never come from our
config files.

Writes are atomic everywhere: a local file is written under a name unique to its writer and renamed
into place; an object is uploaded under a name unique to its writer and copied into place (one
server-side copy, atomic) only once the upload is complete, so an upload that fails part-way never
reaches its real name. (pyarrow cannot abort an upload: its output streams complete the upload with
what was written when they are closed or collected.) So a reader sees a whole object or none.

Errors of the store itself (unreachable endpoint, refused credentials, missing bucket, a fault that
outlived the retries) surface as ``StorageError``: an *environment* error that fails the job
clearly and is redone by a rerun, never recorded as a verdict on a source or clip.
"""

from __future__ import annotations

import functools
import os
import posixpath
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

#: Attempts of one S3 request (the AWS standard strategy: exponential backoff with jitter on 5xx,
#: SlowDown and throttling answers, and on connection errors); ``VIDEOFACTORY_S3_MAX_ATTEMPTS`` overrides.
S3_MAX_ATTEMPTS = 10

#: Bytes read or written per call when streaming a file to or from the store.
CHUNK_BYTES = 8 * 1024 * 1024


class StorageError(RuntimeError):
    """The store failed or refused (not the data): fix the environment and rerun; nothing is recorded."""


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names an object store (``s3://``, ``gs://``, ...) rather than a local path."""
    scheme = urlparse(str(uri)).scheme
    return len(scheme) > 1 and scheme != "file"


@functools.cache
def _s3() -> pafs.S3FileSystem:
    # AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (scheme included) name an S3-compatible store. pyarrow 26
    # reads them only in FileSystem.from_uri, not in the S3FileSystem constructor, so pass them here.
    # A bucket's region is only looked up when no endpoint is set.
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    return pafs.S3FileSystem(endpoint_override=endpoint,
                             retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=_max_attempts()))


def _max_attempts() -> int:
    return int(os.environ.get("VIDEOFACTORY_S3_MAX_ATTEMPTS") or S3_MAX_ATTEMPTS)


def _resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The file system and the path inside it of ``uri``."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return _s3(), (parsed.netloc + parsed.path).rstrip("/")
    if is_remote(uri):
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path.rstrip("/")
    local = uri[len("file://"):] if uri.startswith("file://") else uri
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(local))


@dataclass(frozen=True)
class Location:
    """A file or directory named by a local path or a store URI; ``loc / "a" / "b.parquet"`` descends."""

    uri: str

    def __post_init__(self) -> None:
        uri = str(self.uri)
        if not is_remote(uri):
            uri = _resolve(uri)[1]
        object.__setattr__(self, "uri", uri.rstrip("/") or "/")

    # -- naming ---------------------------------------------------------------------------------
    def __truediv__(self, part: str) -> Location:
        return Location(posixpath.join(self.uri, str(part)))

    def __str__(self) -> str:
        return self.uri

    @property
    def name(self) -> str:
        return posixpath.basename(self.uri)

    @property
    def parent(self) -> Location:
        return Location(posixpath.dirname(self.uri))

    @property
    def is_local(self) -> bool:
        return not is_remote(self.uri)

    @property
    def fs(self) -> pafs.FileSystem:
        return _resolve(self.uri)[0]

    @property
    def path(self) -> str:
        """The path inside ``fs`` (``bucket/key`` on S3, an absolute path locally)."""
        return _resolve(self.uri)[1]

    def local_path(self) -> Path:
        """This location as a local path; only for local locations."""
        if not self.is_local:
            raise ValueError(f"{self.uri} is in an object store, not on a local disk")
        return Path(self.path)

    # -- queries --------------------------------------------------------------------------------
    def info(self) -> pafs.FileInfo:
        with translated(self):
            return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        """A local directory, or an object-store prefix with at least one object under it."""
        return self.info().type == pafs.FileType.Directory

    def size(self) -> int:
        return self.info().size

    def files(self, recursive: bool = False) -> list[Location]:
        """Files directly under this directory (or under it at any depth), sorted; [] when absent."""
        with translated(self):
            infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=recursive, allow_not_found=True))
        prefix = self.uri
        base = self.path
        return sorted(Location(prefix + i.path[len(base):]) for i in infos if i.type == pafs.FileType.File)

    def __lt__(self, other: Location) -> bool:
        return self.uri < other.uri

    # -- reading --------------------------------------------------------------------------------
    def read_bytes(self) -> bytes:
        with translated(self), self.fs.open_input_stream(self.path) as stream:
            return stream.read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    @contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """A seekable binary reader (tarfile and parquet need to seek)."""
        with translated(self), self.fs.open_input_file(self.path) as handle:
            yield handle

    def read_table(self, columns: list[str] | None = None, schema: pa.Schema | None = None) -> pa.Table:
        with translated(self):
            return pq.read_table(self.path, filesystem=self.fs, columns=columns, schema=schema)

    def download_to(self, dest: Path) -> Path:
        """Copy this file to the local ``dest`` (its directory is created)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        with translated(self), self.fs.open_input_stream(self.path) as src, open(dest, "wb") as out:
            for chunk in iter(lambda: src.read(CHUNK_BYTES), b""):
                out.write(chunk)
        return dest

    # -- writing (atomic) -----------------------------------------------------------------------
    def write_bytes(self, data: bytes) -> None:
        self._write_chunks([data])

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def write_table(self, table: pa.Table) -> None:
        """Write ``table`` as one parquet file (built in memory, so a failure leaves nothing behind)."""
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        self._write_chunks([sink.getvalue().to_pybytes()])

    def upload_from(self, source: Path) -> None:
        """Copy the local file ``source`` here; when both are on the same local disk, move it instead."""
        if self.is_local:
            dest = self.local_path()
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(source, dest)
                return
            except OSError:  # another device: copy below
                pass
        with open(source, "rb") as fh:
            self._write_chunks(iter(lambda: fh.read(CHUNK_BYTES), b""))

    def _write_chunks(self, chunks: Iterable[bytes]) -> None:
        fs, path = self.fs, self.path
        if self.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            partial = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex}.part")
            try:
                with open(partial, "wb") as out:
                    for chunk in chunks:
                        out.write(chunk)
                os.replace(partial, path)
            finally:
                if os.path.exists(partial):
                    os.unlink(partial)
            return
        if isinstance(chunks, list) and len(chunks) == 1:
            # Bytes already in memory: nothing can fail between the writes, and a failed upload is
            # never completed, so one upload under the real name is atomic (and costs one request).
            with translated(self), fs.open_output_stream(path) as stream:
                stream.write(chunks[0])
            return
        # A stream (a file being read) may fail part-way, and pyarrow's S3 output stream has no abort:
        # closing it, or dropping it, completes the upload with the bytes written so far. So a stream
        # goes to a staging name and is moved into place (CopyObject: atomic; at most 5 GB on AWS)
        # only when whole; a failed one is deleted.
        staging = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.{uuid.uuid4().hex}.part")
        with translated(self):
            stream = fs.open_output_stream(staging)
            try:
                for chunk in chunks:
                    stream.write(chunk)
                stream.close()
                fs.move(staging, path)
            except BaseException:
                _discard(fs, stream, staging)
                raise

    # -- deleting -------------------------------------------------------------------------------
    def delete(self) -> None:
        """Delete this file; a missing file is fine."""
        with translated(self):
            try:
                self.fs.delete_file(self.path)
            except FileNotFoundError:
                pass

    def delete_tree(self) -> None:
        """Delete this directory and everything under it; a missing one is fine."""
        if self.exists():
            with translated(self):
                self.fs.delete_dir(self.path)


def _discard(fs: pafs.FileSystem, stream: Any, staging: str) -> None:
    """Remove a failed upload's staging object (closing the stream makes it an object first)."""
    for step in (stream.close, lambda: fs.delete_file(staging)):
        try:
            step()
        except Exception:  # the store may be down: the staging name is hidden, the real one untouched
            pass


def _describe(exc: BaseException, location: Location) -> str | None:
    """A sentence saying what to do about a store error, or None when it is not one of the known kinds."""
    text = str(exc)
    bucket = urlparse(location.uri).netloc
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "the default endpoint"
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return f"bucket {bucket!r} of {location.uri} does not exist at {endpoint}: create it, or fix the path"
    if any(k in text for k in ("ACCESS_DENIED", "AccessDenied", "INVALID_ACCESS_KEY_ID", "InvalidAccessKeyId",
                               "SIGNATURE_DOES_NOT_MATCH", "SignatureDoesNotMatch", "403")):
        return (f"the object store at {endpoint} refused access to {location.uri} ({_first_line(text)}): check "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance role, and the bucket policy")
    if any(k in text for k in ("NETWORK_CONNECTION", "Couldn't connect", "Could not connect", "Connection refused",
                               "curlCode", "Failed to connect")):
        return (f"cannot reach the object store at {endpoint} for {location.uri} ({_first_line(text)}): check "
                "AWS_ENDPOINT_URL and the network, then rerun (the job resumes)")
    return None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else ""


@contextmanager
def translated(location: Location) -> Iterator[None]:
    """Turn object-store failures into ``StorageError`` with an actionable message.

    ``FileNotFoundError`` passes through: a missing file is an answer, not a fault.
    """
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        if location.is_local:
            raise
        message = _describe(exc, location)
        raise StorageError(message or f"object store error on {location.uri}: {_first_line(str(exc))}; "
                                      "rerun the job when the store is healthy (it resumes)") from exc


def check_access(location: Location, write: bool) -> None:
    """Fail at the start of a job, with a clear message, when ``location`` cannot be read (or written).

    A write check puts, reads back and deletes one small object, which finds a missing bucket,
    refused credentials and an unreachable endpoint before any work is done.
    """
    if not write:
        if not location.exists():
            raise FileNotFoundError(f"{location.uri} does not exist")
        return
    probe = location / f".videofactory-access-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"ok")
        if probe.read_bytes() != b"ok":
            raise StorageError(f"{location.uri}: an object written there read back differently")
    except FileNotFoundError as exc:  # a bucket that does not exist may answer "not found"
        raise StorageError(_describe(exc, location) or f"cannot write under {location.uri}: {exc}") from exc
    finally:
        try:
            probe.delete()
        except (StorageError, OSError):
            pass

