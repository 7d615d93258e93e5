"""Checking a corpus against its own index and manifest: ``videofactory validate DIR``.

Every shard must open, carry the sha256 the manifest promises, and hold complete samples
(``mp4``, ``txt``, ``json``) whose metadata and video bytes match their index row; every index row
must be in exactly one shard, and no shard may hold a sample the index does not know. Problems are
collected, not raised, so one run reports everything that is wrong.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from shards.hashing import file_sha256
from shards.layout import INDEX_FILE, MANIFEST_FILE, REJECTIONS_FILE, SHARDS_DIR, shard_paths
from shards.schema import INDEX_SCHEMA, REJECTION_SCHEMA, SAMPLE_EXTENSIONS


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


def validate(root: str | Path) -> Report:
    root = Path(root)
    report = Report()
    manifest = _load_manifest(root, report)
    index_rows = _load_index(root, report)
    _check_rejections(root, report)
    report.index_rows = len(index_rows)
    promised = {s["name"]: s for s in (manifest or {}).get("shards", [])}
    seen: dict[str, str] = {}
    for path in shard_paths(root):
        report.shards += 1
        entry = promised.pop(path.name, None)
        if manifest is not None and entry is None:
            report.problems.append(f"{path.name}: not listed in {MANIFEST_FILE}")
        elif entry is not None and file_sha256(path) != entry.get("sha256"):
            report.problems.append(f"{path.name}: sha256 differs from {MANIFEST_FILE}")
        _check_shard(path, index_rows, seen, report)
    for name in promised:
        report.problems.append(f"{name}: listed in {MANIFEST_FILE} but missing from {SHARDS_DIR}/")
    for key in sorted(set(index_rows) - set(seen)):
        report.problems.append(f"{key}: in {INDEX_FILE} but in no shard")
    return report


def _load_manifest(root: Path, report: Report) -> dict[str, Any] | None:
    try:
        return json.loads((root / MANIFEST_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        report.problems.append(f"{MANIFEST_FILE}: cannot read ({exc})")
        return None


def _load_index(root: Path, report: Report) -> dict[str, dict[str, Any]]:
    try:
        table = pq.read_table(root / INDEX_FILE)
    except (OSError, ValueError) as exc:
        report.problems.append(f"{INDEX_FILE}: cannot read ({exc})")
        return {}
    missing = sorted(set(INDEX_SCHEMA.names) - set(table.column_names))
    if missing:
        report.problems.append(f"{INDEX_FILE}: missing columns {missing}")
    rows: dict[str, dict[str, Any]] = {}
    for row in table.to_pylist():
        if row.get("key") in rows:
            report.problems.append(f"{row.get('key')}: more than one row in {INDEX_FILE}")
        rows[row.get("key")] = row
    return rows


def _check_rejections(root: Path, report: Report) -> None:
    try:
        names = pq.read_schema(root / REJECTIONS_FILE).names
    except (OSError, ValueError) as exc:
        report.problems.append(f"{REJECTIONS_FILE}: cannot read ({exc})")
        return
    missing = sorted(set(REJECTION_SCHEMA.names) - set(names))
    if missing:
        report.problems.append(f"{REJECTIONS_FILE}: missing columns {missing}")


def _check_shard(path: Path, index: dict[str, dict[str, Any]], seen: dict[str, str], report: Report) -> None:
    """Open one shard and check each of its samples against the index."""
    members: dict[str, dict[str, bytes]] = defaultdict(dict)
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                data = tar.extractfile(member)
                members[key][ext] = data.read() if data is not None else b""
    except (tarfile.TarError, OSError, EOFError) as exc:
        report.problems.append(f"{path.name}: cannot be read as a tar ({exc})")
        return
    for key, files in members.items():
        report.samples += 1
        where = f"{path.name}:{key}"
        if key in seen:
            report.problems.append(f"{where}: also in {seen[key]}")
        seen[key] = path.name
        missing = [e for e in SAMPLE_EXTENSIONS if e not in files]
        extra = sorted(set(files) - set(SAMPLE_EXTENSIONS))
        if missing or extra:
            report.problems.append(f"{where}: incomplete sample (missing {missing}, unexpected {extra})")
            continue
        row = index.get(key)
        if row is None:
            report.problems.append(f"{where}: not in {INDEX_FILE}")
            continue
        _check_sample(where, path.name, files, row, report)


def _check_sample(where: str, shard: str, files: dict[str, bytes], row: dict[str, Any], report: Report) -> None:
    try:
        meta = json.loads(files["json"])
    except json.JSONDecodeError as exc:
        report.problems.append(f"{where}: json does not parse ({exc})")
        return
    if row.get("shard") != shard:
        report.problems.append(f"{where}: index says shard {row.get('shard')!r}")
    differing = sorted(k for k in row if meta.get(k) != row[k] and not _same_float(meta.get(k), row[k]))
    if differing:
        report.problems.append(f"{where}: json differs from the index in {differing}")
    if hashlib.sha256(files["mp4"]).hexdigest() != row.get("clip_sha256"):
        report.problems.append(f"{where}: mp4 sha256 differs from the index")
    if files["txt"].decode("utf-8", errors="replace") != (row.get("caption") or ""):
        report.problems.append(f"{where}: txt differs from the index caption")


def _same_float(a: Any, b: Any) -> bool:
    return isinstance(a, float) and isinstance(b, float) and abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))

