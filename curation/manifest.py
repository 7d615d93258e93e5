"""Reading the job's input into source rows, streamed: a manifest or a directory, local or in an object store.

The input is a manifest (parquet, CSV, JSON lines, or plain text with one URL or path a line) or a
directory of videos. Manifests are read with Ray Data's readers, in blocks, never as one table in
the driver; extra columns travel with each source as a JSON object and end up in every clip's
metadata. A directory is listed once (use a manifest beyond a few million files).

Each source gets a stable id (``curation.ids.source_id``) and its partition
(``shards.layout.partition_of``). The same URL listed twice is one source: the copies share a
partition, where ``dedupe`` keeps one and records the others as ``duplicate`` rejections.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import ray

from curation.config import CurationConfig
from curation.ids import source_id
from shards.layout import partition_of
from shards.schema import STATUS_OK, STATUS_REJECTED, to_table
from storage import Location

MANIFEST_READERS = {
    ".parquet": ray.data.read_parquet,
    ".csv": ray.data.read_csv,
    # Arrow's JSON reader reads line-delimited JSON; Ray's ``lines=True`` (pandas) refuses a ``filesystem``.
    ".jsonl": ray.data.read_json,
    ".json": ray.data.read_json,
    ".txt": ray.data.read_text,
}

#: The columns every source dataset has before ids are assigned.
SOURCE_COLUMNS = pa.schema([pa.field("source", pa.string()), pa.field("extra", pa.string())])


def source_dataset(cfg: CurationConfig) -> ray.data.Dataset:
    """The input as a Ray Dataset of ``source`` (absolute path or URL) and ``extra`` (JSON object) rows."""
    location = Location(cfg.input)
    info = location.info()
    if info.type.name == "NotFound":
        raise FileNotFoundError(f"input {cfg.input!r} does not exist: give a manifest file or a directory of videos")
    if info.type.name == "Directory":
        wanted = {e.lower() for e in cfg.input_extensions}
        files = [f.uri for f in location.files(recursive=True)
                 if posixpath.splitext(f.name)[1].lower() in wanted and not f.name.startswith(".")]
        if not files:
            raise ValueError(f"{cfg.input} holds no files ending in {', '.join(cfg.input_extensions)}")
        return ray.data.from_arrow(pa.table({"source": files, "extra": ["{}"] * len(files)}, schema=SOURCE_COLUMNS))
    suffix = posixpath.splitext(location.name)[1].lower()
    reader = MANIFEST_READERS.get(suffix)
    if reader is None:
        raise ValueError(f"{cfg.input}: unknown manifest type; use .parquet, .csv, .jsonl, .json or .txt")
    dataset = reader(location.path, filesystem=location.fs)
    columns = dataset.columns() or []
    if not columns:  # no row at all (a CSV with its header only): Ray Data knows no schema
        raise ValueError(f"input {cfg.input} lists no source (an empty manifest?): nothing to curate")
    url_column = "text" if suffix == ".txt" else cfg.url_column
    if url_column not in columns:
        raise ValueError(f"{cfg.input}: no column {cfg.url_column!r} (columns: {sorted(columns)}); set url_column "
                         "in the config")
    base = location.parent.uri
    return dataset.map_batches(_source_rows, fn_kwargs={"url_column": url_column, "base": base,
                                                         "comments": suffix == ".txt"},
                               batch_format="pyarrow", zero_copy_batch=True)


def _source_rows(batch: pa.Table, url_column: str, base: str, comments: bool) -> pa.Table:
    """Manifest rows as ``source``/``extra``; empty (and, in text files, ``#`` comment) lines dropped."""
    others = [c for c in batch.column_names if c != url_column]
    sources, extras = [], []
    for row in batch.to_pylist():
        value = str(row.get(url_column) or "").strip()
        if not value or (comments and value.startswith("#")):
            continue
        sources.append(_absolute(value, base))
        extra = {k: row[k] for k in others if row[k] is not None}
        extras.append(json.dumps(extra, default=str, sort_keys=True))
    return pa.table({"source": sources, "extra": extras}, schema=SOURCE_COLUMNS)


def _absolute(source: str, base: str) -> str:
    """URLs stay as they are; paths become absolute (relative ones are relative to the manifest's folder)."""
    scheme = urlparse(source).scheme
    if scheme and len(scheme) > 1:  # a one-letter "scheme" is a Windows drive
        return source
    if Location(base).is_local:
        return Location(posixpath.join(base, posixpath.expanduser(source))).uri
    return Location(base).uri + "/" + posixpath.normpath(source).lstrip("/")


def assign_ids(batch: pa.Table, partitions: int) -> pa.Table:
    """``source_id`` and ``partition`` of each source row."""
    ids = [source_id(s) for s in batch["source"].to_pylist()]
    return batch.append_column("source_id", pa.array(ids, pa.string())).append_column(
        "partition", pa.array([partition_of(i, partitions) for i in ids], pa.int32()))


def dedupe(table: pa.Table) -> pa.Table:
    """Source rows (``RECORD_SCHEMA``) of one partition's input rows, sorted by id; repeats of an id rejected.

    Of the copies of one source the one with the smallest ``extra`` is kept (a rule that does not
    depend on the order in which a distributed read delivered them); the others get distinct ids
    (``<id>-dup1``, ...) so every row can be told apart downstream.
    """
    rows = sorted(table.select(["source_id", "source", "extra", "partition"]).to_pylist(),
                  key=lambda r: (r["source_id"], r["extra"] or "", r["source"]))
    out: list[dict[str, Any]] = []
    copies = 0
    for i, row in enumerate(rows):
        repeat = i > 0 and rows[i - 1]["source_id"] == row["source_id"]
        copies = copies + 1 if repeat else 0
        record = {**row, "stage": "manifest", "extra": row["extra"] or "{}", "status": STATUS_OK}
        if repeat:
            record.update(source_id=f"{row['source_id']}-dup{copies}", status=STATUS_REJECTED, reason="duplicate",
                          detail="the manifest lists this source more than once")
        out.append(record)
    return to_table(out)

