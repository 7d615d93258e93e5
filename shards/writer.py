"""Writing WebDataset shards, the index and the manifest of a corpus.

Shards are planned from the sorted index (so the same clips always land in the same shards),
written with webdataset's ``TarWriter`` with a fixed mtime (so the same clips always give the same
bytes and sha256), and renamed into place only when complete (so a crash never leaves a shard that
looks finished). A shard already on disk with exactly the planned members is kept, which makes a
rerun of the write stage cheap.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds

from shards.hashing import file_sha256
from shards.layout import INDEX_FILE, MANIFEST_FILE, REJECTIONS_FILE, SHARDS_DIR
from shards.schema import INDEX_SCHEMA, REJECTION_SCHEMA, sample_metadata

#: Fixed member mtime: identical clips give byte-identical shards.
SHARD_MTIME = 0.0


@dataclass(frozen=True)
class Sample:
    """One clip as stored in a shard."""

    key: str
    video_path: str
    caption: str
    metadata: dict[str, Any]

    def members(self) -> dict[str, bytes]:
        """File extension -> bytes, as the tar will hold them."""
        return {
            "mp4": Path(self.video_path).read_bytes(),
            "txt": self.caption.encode("utf-8"),
            "json": json.dumps(self.metadata, sort_keys=True, ensure_ascii=False).encode("utf-8"),
        }


def plan_shards(sizes: Iterable[int], target_bytes: int) -> list[int]:
    """Shard number of each sample, in order: a new shard starts when the next would pass the target."""
    assignment, shard, filled = [], 0, 0
    for size in sizes:
        if filled and filled + size > target_bytes:
            shard, filled = shard + 1, 0
        assignment.append(shard)
        filled += size
    return assignment


def write_shard(path: Path, samples: list[Sample]) -> dict[str, Any]:
    """Write (or keep, if already identical) one shard; return its manifest entry."""
    if not _has_members(path, samples):
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.part")
        with open(partial, "wb") as fh:
            writer = wds.TarWriter(fh, mtime=SHARD_MTIME)
            for sample in samples:
                writer.write({"__key__": sample.key, **sample.members()})
            writer.close()
        os.replace(partial, path)
    return {"name": path.name, "samples": len(samples), "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def _has_members(path: Path, samples: list[Sample]) -> bool:
    """Whether ``path`` is a complete shard holding exactly ``samples`` (names and sizes)."""
    if not path.exists():
        return False
    wanted = {f"{s.key}.{ext}": len(data) for s in samples for ext, data in s.members().items()}
    try:
        with tarfile.open(path) as tar:
            found = {m.name: m.size for m in tar.getmembers()}
    except (tarfile.TarError, OSError):
        return False
    return found == wanted



def write_table_atomically(table: pa.Table, path: Path) -> None:
    partial = path.with_name(f".{path.name}.part")
    pq.write_table(table, partial)
    os.replace(partial, path)


def write_index(root: Path, clips: pa.Table, rejections: pa.Table) -> None:
    """``index.parquet`` (one row per clip) and ``rejections.parquet`` (one per rejected source or clip)."""
    root.mkdir(parents=True, exist_ok=True)
    write_table_atomically(clips.select(INDEX_SCHEMA.names).cast(INDEX_SCHEMA), root / INDEX_FILE)
    write_table_atomically(rejections.select(REJECTION_SCHEMA.names).cast(REJECTION_SCHEMA), root / REJECTIONS_FILE)


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    partial = root / f".{MANIFEST_FILE}.part"
    partial.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    os.replace(partial, root / MANIFEST_FILE)


def remove_stale_shards(root: Path, keep: set[str]) -> list[str]:
    """Delete shards left by an earlier write that the current plan no longer has."""
    removed = []
    for path in sorted((root / SHARDS_DIR).glob("*.tar")):
        if path.name not in keep:
            path.unlink()
            removed.append(path.name)
    return removed


def sample_from_row(row: dict[str, Any]) -> Sample:
    """The shard sample of an index row (whose ``clip_path`` points at the extracted clip)."""
    return Sample(key=row["key"], video_path=row["clip_path"], caption=row.get("caption") or "",
                  metadata=sample_metadata(row))
