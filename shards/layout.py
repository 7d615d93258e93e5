"""Where things live in a corpus directory: the one place both halves of the project look it up."""

from __future__ import annotations

from pathlib import Path

SHARDS_DIR = "shards"
INDEX_FILE = "index.parquet"
REJECTIONS_FILE = "rejections.parquet"
MANIFEST_FILE = "manifest.json"


def shard_name(name: str, index: int) -> str:
    """File name of the ``index``-th shard: ``<name>-000000.tar``."""
    return f"{name}-{index:06d}.tar"


def shard_paths(root: str | Path) -> list[Path]:
    """The corpus's shards, in order."""
    return sorted((Path(root) / SHARDS_DIR).glob("*.tar"))
