"""Corpora written by hand in the published layout (``shards.layout``), independently of the curation writer.

Tests of the readers (validate, iter_samples, statistics, the training loader) build their corpora
here, so they check the readers against the layout itself rather than against whatever the writer
happens to do, and keep working while the writer changes.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from shards.layout import (
    SHARDS_DIR,
    index_location,
    manifest_location,
    partition_name,
    partition_of,
    rejections_location,
    shard_name,
)
from shards.schema import INDEX_SCHEMA, REJECTION_SCHEMA, sample_metadata, to_table
from storage import Location


@dataclass(frozen=True)
class Clip:
    """One sample: its index row (``key``, ``source_id`` and ``caption`` at least) and its mp4 bytes."""

    row: Mapping[str, Any]
    mp4: bytes


def tar_bytes(clips: Iterable[Clip]) -> bytes:
    """A WebDataset shard of ``clips``: ``<key>.mp4``, ``<key>.txt``, ``<key>.json`` each, mtime 0."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for clip in clips:
            members = {"mp4": clip.mp4, "txt": (clip.row.get("caption") or "").encode("utf-8"),
                       "json": json.dumps(sample_metadata(clip.row), sort_keys=True).encode("utf-8")}
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{clip.row['key']}.{ext}")
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_corpus(root: str | Path | Location, clips: list[Clip], partitions: int, shard_samples: int,
                 name: str = "corpus", rejections: Iterable[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """Write ``clips`` (and ``rejections``) as a corpus of ``partitions`` partitions; return the index rows.

    Each clip goes to its source's partition, sorted by key, ``shard_samples`` to a shard; the rows get
    ``clip_sha256`` and ``shard`` filled in. The manifest lists every shard as the writer does.
    """
    root = Location(str(root))
    by_partition: dict[int, list[Clip]] = defaultdict(list)
    for clip in sorted(clips, key=lambda c: c.row["key"]):
        by_partition[partition_of(clip.row["source_id"], partitions)].append(clip)
    rejections = list(rejections)
    rejected: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rejections:
        rejected[partition_of(row["source_id"], partitions)].append(row)
    rows, entries = [], []
    for partition in sorted(set(by_partition) | set(rejected)):
        members = by_partition[partition]
        for number, start in enumerate(range(0, len(members), shard_samples)):
            shard = shard_name(name, partition, number)
            chunk = [Clip({**c.row, "shard": shard, "clip_sha256": hashlib.sha256(c.mp4).hexdigest(),
                           "clip_bytes": len(c.mp4)}, c.mp4) for c in members[start:start + shard_samples]]
            data = tar_bytes(chunk)
            (root / SHARDS_DIR / shard).write_bytes(data)
            entries.append({"name": shard, "partition": partition, "samples": len(chunk), "bytes": len(data),
                            "sha256": hashlib.sha256(data).hexdigest()})
            rows += [c.row for c in chunk]
        part_rows = [r for r in rows if partition_of(r["source_id"], partitions) == partition]
        (index_location(root) / f"{partition_name(partition)}.parquet").write_table(to_table(part_rows, INDEX_SCHEMA))
        (rejections_location(root) / f"{partition_name(partition)}.parquet").write_table(
            to_table(rejected[partition], REJECTION_SCHEMA))
    manifest = {
        "format": "videofactory-webdataset/2", "created": "2025-01-01T00:00:00+00:00", "config": {}, "versions": {},
        "partitions": partitions, "shards": sorted(entries, key=lambda e: e["name"]),
        "counts": {"sources": len({r["source_id"] for r in rows} | {r["source_id"] for r in rejections}),
                   "clips": len(rows), "rejections": sum(len(r) for r in rejected.values())},
    }
    manifest_location(root).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return rows


def upload_tree(local: Path, dest: str | Location) -> Location:
    """Copy every file under the local directory ``local`` to ``dest`` (an object-store prefix); return it."""
    dest = Location(str(dest))
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        (dest / path.relative_to(local).as_posix()).upload_from(path)
    return dest


def s3_bucket_or_skip(request: pytest.FixtureRequest) -> str:
    """The ``s3_bucket`` fixture of tests/conftest.py (``s3://<name>``), or a skip while it does not exist."""
    try:
        return request.getfixturevalue("s3_bucket")
    except pytest.FixtureLookupError:
        pytest.skip("no s3_bucket fixture in tests/conftest.py (the S3 test server is not wired in)")


def comparable(index: pa.Table) -> list[tuple]:
    """Per source file name, each clip's span and bytes: what must not depend on where a corpus was made
    (a local disk or an object store, one node or two), unlike source URIs, ids and keys."""
    rows = index.select(["source", "clip_index", "start_frame", "end_frame", "clip_sha256"]).to_pylist()
    return sorted((r["source"].rsplit("/", 1)[-1], r["clip_index"], r["start_frame"], r["end_frame"], r["clip_sha256"])
                  for r in rows)
