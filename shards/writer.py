"""Writing WebDataset shards: deterministic bytes from the same samples.

Shards are planned from a partition's clips sorted by key (so the same clips always land in the
same shards) and written with webdataset's ``TarWriter`` with a fixed mtime (so the same clips
always give the same bytes and sha256). ``content_digest`` names what decides those bytes, so a
writer can tell that a shard already written holds exactly what it would write, without reading it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shards.schema import sample_metadata

#: Fixed member mtime: identical clips give byte-identical shards.
SHARD_MTIME = 0.0


@dataclass(frozen=True)
class Sample:
    """One clip as stored in a shard."""

    key: str
    caption: str
    metadata: dict[str, Any]

    def text_members(self) -> dict[str, bytes]:
        return {
            "txt": self.caption.encode("utf-8"),
            "json": json.dumps(self.metadata, sort_keys=True, ensure_ascii=False).encode("utf-8"),
        }


def sample_from_row(row: dict[str, Any]) -> Sample:
    """The shard sample of an index row."""
    return Sample(key=row["key"], caption=row.get("caption") or "", metadata=sample_metadata(row))


def plan_shards(sizes: Iterable[int], target_bytes: int) -> list[int]:
    """Shard number of each sample, in order: a new shard starts when the next would pass the target."""
    assignment, shard, filled = [], 0, 0
    for size in sizes:
        if filled and filled + size > target_bytes:
            shard, filled = shard + 1, 0
        assignment.append(shard)
        filled += size
    return assignment


def content_digest(samples: list[Sample], video_sha256: list[str]) -> str:
    """A digest of everything that decides a shard's bytes: keys, videos (by sha256), captions, metadata."""
    digest = hashlib.sha256()
    for sample, video in zip(samples, video_sha256, strict=True):
        digest.update(sample.key.encode() + b"\0" + video.encode() + b"\0")
        for ext, data in sample.text_members().items():
            digest.update(ext.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def write_shard(path: Path, samples: Iterable[tuple[Sample, bytes]]) -> None:
    """Write the local tar ``path`` from ``(sample, mp4 bytes)`` pairs, read one at a time by the caller."""
    import webdataset as wds  # imports torch (webdataset.pytorch): paid by the process that writes, not importers

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        writer = wds.TarWriter(fh, mtime=SHARD_MTIME)
        for sample, video in samples:
            writer.write({"__key__": sample.key, "mp4": video, **sample.text_members()})
        writer.close()
