"""Reading a corpus, local or in an object store: its index and rejections as parquet datasets, its
manifest, and its samples streamed from the shards one shard at a time.

Everything goes through ``storage.Location``, so ``s3://bucket/corpus`` works wherever a directory
does. Shards are read as sequential buffered streams (never seeked, never downloaded whole, never
opened through a shell ``pipe:``), which is what an object store serves best and what keeps memory
at one sample. Training, ``validate`` and ``iter_samples`` share ``shard_samples``.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.dataset as ds

from shards.layout import index_location, manifest_location, rejections_location, shard_locations
from shards.schema import INDEX_SCHEMA, REJECTION_SCHEMA
from storage import Location
from storage.location import CHUNK_BYTES, translated

#: Rows per streamed record batch: large enough for vectorised compute, small enough to bound memory.
BATCH_ROWS = 262_144


def partition_files(directory: Location) -> list[Location]:
    """The parquet files of a partitioned dataset directory, in partition order ([] when it is absent).

    Partial files a writer leaves while writing (``.<name>.<id>.part``) are not ``.parquet`` and are skipped.
    """
    return [f for f in directory.files() if f.name.endswith(".parquet") and not f.name.startswith(".")]


def dataset(directory: Location, schema: pa.Schema, dictionary: Sequence[str] = ()) -> ds.Dataset:
    """The partition files under ``directory`` as one dataset of ``schema`` (empty when there are none).

    The explicit schema makes every partition read with the same types, and a column a file lacks
    read as nulls. ``dictionary`` columns are read dictionary-encoded (repeated strings stored once).
    """
    fmt = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=list(dictionary)))
    if dictionary:
        schema = pa.schema([f.with_type(pa.dictionary(pa.int32(), f.type)) if f.name in dictionary else f
                            for f in schema])
    files = [f.path for f in partition_files(directory)]
    with translated(directory):
        return ds.dataset(files, schema=schema, format=fmt, filesystem=directory.fs)


def index_dataset(root: str | Location, dictionary: Sequence[str] = ()) -> ds.Dataset:
    """``index/`` of the corpus at ``root`` as one dataset of ``INDEX_SCHEMA``."""
    return dataset(index_location(root), INDEX_SCHEMA, dictionary)


def read_index(root: str | Location, columns: Sequence[str] | None = None) -> pa.Table:
    """The whole index (or some of its columns) in memory: for small corpora and tests; stream large ones."""
    location = index_location(root)
    with translated(location):
        return index_dataset(root).to_table(columns=list(columns) if columns is not None else None)


def read_rejections(root: str | Location, columns: Sequence[str] | None = None) -> pa.Table:
    """The rejections (or some of their columns); an empty table when the corpus has none."""
    location = rejections_location(root)
    with translated(location):
        return dataset(location, REJECTION_SCHEMA).to_table(columns=list(columns) if columns is not None else None)


def index_batches(root: str | Location, columns: Sequence[str], batch_rows: int = BATCH_ROWS,
                  dictionary: Sequence[str] = ()) -> Iterator[pa.RecordBatch]:
    """The index's ``columns`` streamed a record batch at a time, partition by partition, in partition order.

    Memory stays at a batch (plus pyarrow's read-ahead), whatever the size of the corpus.
    """
    location = index_location(root)
    with translated(location):
        yield from index_dataset(root, dictionary).to_batches(columns=list(columns), batch_size=batch_rows)


def read_manifest(root: str | Location) -> dict[str, Any]:
    """``manifest.json`` of the corpus (FileNotFoundError when it has none)."""
    return json.loads(manifest_location(root).read_text())


@contextmanager
def open_stream(location: Location) -> Iterator[BinaryIO]:
    """A sequential, buffered reader of one file: one request per ``CHUNK_BYTES`` on an object store.

    (``Location.open`` is seekable, which costs a ranged request per read on S3; tar needs no seeking.)
    """
    with translated(location), location.fs.open_input_stream(location.path, compression=None,
                                                             buffer_size=CHUNK_BYTES) as stream:
        yield stream


def tar_samples(stream: BinaryIO, url: str) -> Iterator[dict[str, Any]]:
    """The samples of one tar stream: ``{"__key__", "__url__", <ext>: bytes, ...}``, in tar order.

    Members are grouped by key while consecutive (how WebDataset shards are written), so one sample
    is in memory at a time. Raises ``tarfile.TarError`` for a stream that is not a tar.
    """
    current: dict[str, Any] | None = None
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not member.isreg():
                continue
            key, _, ext = member.name.partition(".")
            data = tar.extractfile(member)
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                current = {"__key__": key, "__url__": url}
            current[ext] = data.read() if data is not None else b""
            tar.members = []  # a streamed TarFile would otherwise keep every member's header
    if current is not None:
        yield current


def shard_samples(shards: Iterable[str | Location]) -> Iterator[dict[str, Any]]:
    """The raw samples (see ``tar_samples``) of each shard in turn, each shard opened only while read."""
    for shard in shards:
        location = Location(str(shard))
        with open_stream(location) as stream:
            yield from tar_samples(stream, location.uri)


def iter_samples(root: str | Location) -> Iterator[dict[str, Any]]:
    """Every sample of the corpus in shard order: ``{"key", "mp4" (bytes), "txt" (str), "json" (dict)}``."""
    for sample in shard_samples(shard_locations(root)):
        yield {
            "key": sample["__key__"],
            "mp4": sample["mp4"],
            "txt": sample["txt"].decode("utf-8"),
            "json": json.loads(sample["json"]),
        }
