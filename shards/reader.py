"""Reading a corpus: its index and its samples, streamed from the shards with webdataset."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from shards.layout import INDEX_FILE, MANIFEST_FILE, REJECTIONS_FILE, shard_paths


def read_index(root: str | Path) -> pa.Table:
    return pq.read_table(Path(root) / INDEX_FILE)


def read_rejections(root: str | Path) -> pa.Table:
    return pq.read_table(Path(root) / REJECTIONS_FILE)


def read_manifest(root: str | Path) -> dict[str, Any]:
    return json.loads((Path(root) / MANIFEST_FILE).read_text())


def iter_samples(root: str | Path) -> Iterator[dict[str, Any]]:
    """Every sample of the corpus in shard order: ``{"key", "mp4" (bytes), "txt" (str), "json" (dict)}``."""
    import webdataset as wds  # here, not at the top: it imports torch, which readers of the index never need

    urls = [str(p) for p in shard_paths(root)]
    if not urls:
        return
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        yield {
            "key": sample["__key__"],
            "mp4": sample["mp4"],
            "txt": sample["txt"].decode("utf-8"),
            "json": json.loads(sample["json"]),
        }
