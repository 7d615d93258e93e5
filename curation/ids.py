"""Deterministic, path-safe ids for sources and clips.

A source id is a hash of its URL or absolute path, so the same input always gets the same id on any
machine and in any run (which is what makes resume and de-duplication work), and it can never carry
``..``, slashes or shell metacharacters into a file name.
"""

from __future__ import annotations

import hashlib
import re

SOURCE_ID_LENGTH = 16
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


def source_id(source: str) -> str:
    """Id of a source: the first 16 hex digits of the sha256 of its URL or path."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:SOURCE_ID_LENGTH]


def clip_key(source_id_: str, index: int) -> str:
    """WebDataset key of the ``index``-th clip of a source: ``<source_id>_<n:04d>``."""
    return f"{sanitise(source_id_)}_{index:04d}"


def sanitise(name: str, max_length: int = 120) -> str:
    """Make ``name`` safe as one path component and as a WebDataset key (no dots, no slashes)."""
    cleaned = _SAFE.sub("-", name).strip("-")[:max_length]
    if not cleaned:
        raise ValueError(f"nothing usable left of id {name!r} after sanitising")
    return cleaned
