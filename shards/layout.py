"""Where things live in a corpus: the one place both halves of the project look it up.

A corpus is a directory or an object-store prefix (``s3://bucket/corpus``)::

    shards/<name>-p00042-000000.tar   WebDataset shards of partition 42: <key>.mp4, <key>.txt, <key>.json
    index/p00042.parquet              the index rows (one per clip) of partition 42
    rejections/p00042.parquet         the rejected sources and clips of partition 42
    manifest.json                     counts, config, versions and every shard's sha256
    work/                             what the curation job keeps to resume (see curation.workarea)
    availability/p00042.parquet       whether partition 42's sources can still be fetched (videofactory verify-sources)

Every source belongs to one partition, a hash of its id (``partition_of``). Partitions are written
as soon as all their sources are finished, and rewritten only when their sources change, so adding
sources to a corpus rewrites only the partitions they fall in. ``index/`` and ``rejections/`` are
parquet datasets: pandas, DuckDB, pyarrow and Ray Data read each directory as one table.
"""

from __future__ import annotations

import hashlib
import re

from storage import Location

SHARDS_DIR = "shards"
INDEX_DIR = "index"
REJECTIONS_DIR = "rejections"
MANIFEST_FILE = "manifest.json"
AVAILABILITY_DIR = "availability"

_SHARD = re.compile(r"^(?P<name>.+)-p(?P<partition>\d{5,})-(?P<number>\d{6})\.tar$")


def partition_of(source_id: str, partitions: int) -> int:
    """The partition of a source: stable for a given partition count, whatever else the corpus holds."""
    return int.from_bytes(hashlib.sha256(source_id.encode("utf-8")).digest()[:8], "big") % partitions


def partition_name(partition: int) -> str:
    """``p00042``: the name of a partition's index and rejection files."""
    return f"p{partition:05d}"


def shard_name(name: str, partition: int, number: int) -> str:
    """File name of the ``number``-th shard of ``partition``: ``<name>-p00042-000000.tar``."""
    return f"{name}-{partition_name(partition)}-{number:06d}.tar"


def shard_partition(shard: str) -> int | None:
    """The partition a shard file name belongs to (None for a name that is not a shard's)."""
    match = _SHARD.match(shard)
    return int(match["partition"]) if match else None


def shard_locations(root: str | Location) -> list[Location]:
    """The corpus's shards, in name order (partition, then number)."""
    return [f for f in (Location(str(root)) / SHARDS_DIR).files() if f.name.endswith(".tar")]


def index_location(root: str | Location) -> Location:
    return Location(str(root)) / INDEX_DIR


def rejections_location(root: str | Location) -> Location:
    return Location(str(root)) / REJECTIONS_DIR


def manifest_location(root: str | Location) -> Location:
    return Location(str(root)) / MANIFEST_FILE
