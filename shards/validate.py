"""Checking a corpus against its own index and manifest: ``videofactory validate CORPUS`` (a directory or s3://...).

Every shard must open, carry the sha256 the manifest promises, and hold complete samples
(``mp4``, ``txt``, ``json``) whose metadata and video bytes match their index row; every index row
must be in exactly one shard, and no shard may hold a sample the index does not know. Problems are
collected, not raised, so one run reports everything that is wrong.

The corpus is checked one partition at a time (its ``index/pNNNNN.parquet`` and the shards named
``-pNNNNN-``), and each shard is read once as a stream, hashed while its samples are checked, so
memory is one partition's index rows plus one sample, whatever the size of the corpus. A source
lives in one partition, so keys cannot meet across partitions unless a row sits in the wrong
partition, which the source id's hash (``partition_of``) tells without comparing partitions.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from shards.layout import (
    INDEX_DIR,
    MANIFEST_FILE,
    REJECTIONS_DIR,
    SHARDS_DIR,
    index_location,
    partition_name,
    partition_of,
    rejections_location,
    shard_locations,
    shard_partition,
)
from shards.reader import open_stream, partition_files, read_manifest, tar_samples
from shards.schema import INDEX_SCHEMA, REJECTION_SCHEMA, SAMPLE_EXTENSIONS
from storage import Location
from storage.location import CHUNK_BYTES, translated


@dataclass
class Report:
    """What ``validate`` found."""

    shards: int = 0
    samples: int = 0
    index_rows: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = f"{self.shards} shards, {self.samples} samples, {self.index_rows} index rows: "
        if self.ok:
            return head + "OK"
        lines = [head + f"{len(self.problems)} problem(s)"] + [f"  - {p}" for p in self.problems[:50]]
        if len(self.problems) > 50:
            lines.append(f"  ... and {len(self.problems) - 50} more")
        return "\n".join(lines)


class _HashingReader:
    """A read-only stream that hashes what passes through it, so a shard is read once for both checks."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        return data

    def hexdigest(self) -> str:
        """The sha256 of the whole stream: what tar left unread (end-of-archive padding) is read first."""
        while self.read(CHUNK_BYTES):
            pass
        return self.digest.hexdigest()


def validate(root: str | Location) -> Report:
    """Check the corpus at ``root`` partition by partition; return every problem found."""
    root = Location(str(root))
    report = Report()
    manifest = _load_manifest(root, report)
    partitions = manifest.get("partitions") if manifest else None
    promised = {s["name"]: s for s in (manifest or {}).get("shards", [])}
    shards: dict[int, list[Location]] = defaultdict(list)
    for shard in shard_locations(root):
        number = shard_partition(shard.name)
        if number is None:
            report.shards += 1
            report.problems.append(f"{shard.name}: not a shard name of this layout (<name>-pNNNNN-NNNNNN.tar)")
            promised.pop(shard.name, None)
            continue
        shards[number].append(shard)
    indexes: dict[int, Location] = {}
    for location in partition_files(index_location(root)):
        number = _file_partition(location)
        if number is None:
            report.problems.append(f"{INDEX_DIR}/{location.name}: not a partition file name (pNNNNN.parquet)")
            continue
        indexes[number] = location
    if not indexes and (manifest is None or shards):
        report.problems.append(f"{INDEX_DIR}/: holds no partition files (pNNNNN.parquet)")
    _check_rejections(root, report)
    for number in sorted(set(shards) | set(indexes)):
        if partitions is not None and number >= partitions:
            report.problems.append(f"partition {partition_name(number)}: the manifest has only {partitions} "
                                   "partitions")
        rows = _load_index(indexes.get(number), number, partitions, report)
        seen: dict[str, str] = {}
        for shard in shards.get(number, []):
            report.shards += 1
            entry = promised.pop(shard.name, None)
            if manifest is not None and entry is None:
                report.problems.append(f"{shard.name}: not listed in {MANIFEST_FILE}")
            _check_shard(shard, entry, rows, seen, _index_name(number), report)
        for key in sorted(set(rows) - set(seen)):
            report.problems.append(f"{key}: in {_index_name(number)} but in no shard")
    for name in promised:
        report.problems.append(f"{name}: listed in {MANIFEST_FILE} but missing from {SHARDS_DIR}/")
    return report


def _index_name(partition: int) -> str:
    """``index/p00042.parquet``: how problems name a partition's index file."""
    return f"{INDEX_DIR}/{partition_name(partition)}.parquet"


def _file_partition(location: Location) -> int | None:
    """The partition of an index file from its name (``p00042.parquet`` -> 42); None when malformed."""
    stem = location.name.removesuffix(".parquet")
    return int(stem[1:]) if stem.startswith("p") and stem[1:].isdigit() else None


def _load_manifest(root: Location, report: Report) -> dict[str, Any] | None:
    try:
        return read_manifest(root)
    except (OSError, json.JSONDecodeError) as exc:
        report.problems.append(f"{MANIFEST_FILE}: cannot read ({exc})")
        return None


def _load_index(location: Location | None, partition: int, partitions: int | None,
                report: Report) -> dict[str, dict[str, Any]]:
    """One partition's index rows by key; problems for unreadable files, missing columns, misplaced rows."""
    name = _index_name(partition)
    if location is None:
        return {}
    try:
        with translated(location):
            missing = sorted(set(INDEX_SCHEMA.names) - set(pq.read_schema(location.path, filesystem=location.fs).names))
        table = location.read_table(schema=INDEX_SCHEMA)
    except (OSError, ValueError) as exc:
        report.problems.append(f"{name}: cannot read ({exc})")
        return {}
    if missing:
        report.problems.append(f"{name}: missing columns {missing}")
    report.index_rows += table.num_rows
    rows: dict[str, dict[str, Any]] = {}
    for row in table.to_pylist():  # one partition: bounded by the writer's partition size
        key = row.get("key")
        if key in rows:
            report.problems.append(f"{key}: more than one row in {name}")
        if partitions and row.get("source_id") is not None and partition_of(row["source_id"], partitions) != partition:
            report.problems.append(f"{key}: its source belongs in partition "
                                   f"{partition_name(partition_of(row['source_id'], partitions))}, not in {name}")
        rows[key] = row
    return rows


def _check_rejections(root: Location, report: Report) -> None:
    """Each rejection file must be readable parquet with the rejection columns (its footer only is read)."""
    for location in partition_files(rejections_location(root)):
        name = f"{REJECTIONS_DIR}/{location.name}"
        try:
            with translated(location):
                names = pq.read_schema(location.path, filesystem=location.fs).names
        except (OSError, ValueError) as exc:
            report.problems.append(f"{name}: cannot read ({exc})")
            continue
        missing = sorted(set(REJECTION_SCHEMA.names) - set(names))
        if missing:
            report.problems.append(f"{name}: missing columns {missing}")


def _check_shard(shard: Location, entry: dict[str, Any] | None, index: dict[str, dict[str, Any]],
                 seen: dict[str, str], index_name: str, report: Report) -> None:
    """Read one shard once: check its sha256 against the manifest and each sample against the index."""
    found: list[str] = []
    try:
        with open_stream(shard) as raw:
            stream = _HashingReader(raw)
            try:
                for files in tar_samples(stream, shard.uri):
                    _check_sample(shard.name, files, index, seen, index_name, report, found)
            except (tarfile.TarError, EOFError) as exc:
                found.append(f"{shard.name}: cannot be read as a tar ({exc})")
            digest = stream.hexdigest()
    except OSError as exc:
        report.problems.append(f"{shard.name}: cannot be read ({exc})")
        return
    if entry is not None and digest != entry.get("sha256"):
        report.problems.append(f"{shard.name}: sha256 differs from {MANIFEST_FILE}")
    report.problems.extend(found)


def _check_sample(shard: str, files: dict[str, Any], index: dict[str, dict[str, Any]], seen: dict[str, str],
                  index_name: str, report: Report, found: list[str]) -> None:
    """One sample: complete, known to the index, in no other shard, and equal to its index row."""
    key = files["__key__"]
    report.samples += 1
    where = f"{shard}:{key}"
    if key in seen:
        found.append(f"{where}: also in {seen[key]}")
    seen[key] = shard
    present = {e for e in files if not e.startswith("__")}
    missing = [e for e in SAMPLE_EXTENSIONS if e not in present]
    extra = sorted(present - set(SAMPLE_EXTENSIONS))
    if missing or extra:
        found.append(f"{where}: incomplete sample (missing {missing}, unexpected {extra})")
        return
    row = index.get(key)
    if row is None:
        found.append(f"{where}: not in {index_name}")
        return
    found.extend(_sample_problems(where, shard, files, row))


def _sample_problems(where: str, shard: str, files: dict[str, bytes], row: dict[str, Any]) -> list[str]:
    try:
        meta = json.loads(files["json"])
    except json.JSONDecodeError as exc:
        return [f"{where}: json does not parse ({exc})"]
    problems = []
    if row.get("shard") != shard:
        problems.append(f"{where}: index says shard {row.get('shard')!r}")
    differing = sorted(k for k in row if meta.get(k) != row[k] and not _same_float(meta.get(k), row[k]))
    if differing:
        problems.append(f"{where}: json differs from the index in {differing}")
    if hashlib.sha256(files["mp4"]).hexdigest() != row.get("clip_sha256"):
        problems.append(f"{where}: mp4 sha256 differs from the index")
    if files["txt"].decode("utf-8", errors="replace") != (row.get("caption") or ""):
        problems.append(f"{where}: txt differs from the index caption")
    return problems


def _same_float(a: Any, b: Any) -> bool:
    return isinstance(a, float) and isinstance(b, float) and abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
