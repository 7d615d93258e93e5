"""Reading the job's input into source rows: one per distinct URL or path, with a stable id.

The input is a manifest (parquet, CSV, JSON lines, or plain text with one URL or path a line) or a
directory of videos. Manifests are parsed with Ray Data's readers; extra columns travel with each
source as a JSON object and end up in every clip's metadata. The same URL listed twice is one
source; its repeats are recorded as rejections rather than silently merged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import ray

from curation.config import CurationConfig
from curation.ids import source_id
from shards.schema import STATUS_OK, STATUS_REJECTED, to_table

MANIFEST_READERS = {
    ".parquet": ray.data.read_parquet,
    ".csv": ray.data.read_csv,
    ".jsonl": lambda path: ray.data.read_json(path, lines=True),
    ".json": ray.data.read_json,
    ".txt": ray.data.read_text,
}


def read_sources(cfg: CurationConfig) -> pa.Table:
    """Source rows for the configured input (status ``ok``, or ``rejected`` for repeats)."""
    path = Path(cfg.input).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"input {cfg.input!r} does not exist: give a manifest file or a directory of videos")
    if path.is_dir():
        records = [{"source": str(p.resolve())} for p in _video_files(path, cfg.input_extensions)]
        if not records:
            raise ValueError(f"{path} holds no files ending in {', '.join(cfg.input_extensions)}")
    else:
        records = _manifest_records(path, cfg.url_column)
    return to_table(_dedupe(records))


def _video_files(directory: Path, extensions: list[str]) -> list[Path]:
    """Video files under ``directory`` (recursively, hidden ones skipped), in a stable order."""
    wanted = {e.lower() for e in extensions}
    return sorted(
        p for p in directory.rglob("*")
        if p.is_file() and p.suffix.lower() in wanted and not any(part.startswith(".") for part in p.parts[-1:])
    )


def _manifest_records(path: Path, url_column: str) -> list[dict[str, Any]]:
    """Rows of a manifest file as ``{"source", "extra"}`` dicts."""
    reader = MANIFEST_READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: unknown manifest type; use .parquet, .csv, .jsonl, .json or .txt")
    rows = reader(str(path.resolve())).take_all()
    if path.suffix.lower() == ".txt":
        lines = (r["text"].strip() for r in rows)
        rows = [{url_column: line} for line in lines if line and not line.startswith("#")]
    if rows and url_column not in rows[0]:
        raise ValueError(f"{path}: no column {url_column!r} (columns: {sorted(rows[0])}); set url_column in the config")
    records = []
    for row in rows:
        value = str(row.pop(url_column) or "").strip()
        if not value:
            continue
        extra = {k: v for k, v in row.items() if v is not None}
        extra_json = json.dumps(extra, default=str, sort_keys=True)
        records.append({"source": _absolute(value, path.parent), "extra": extra_json})
    return records


def _absolute(source: str, base: Path) -> str:
    """URLs stay as they are; local paths become absolute (relative ones are relative to the manifest)."""
    scheme = urlparse(source).scheme
    if scheme and len(scheme) > 1:  # a one-letter "scheme" is a Windows drive
        return source
    return str((base / Path(source).expanduser()).resolve())


def _dedupe(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each record its source id; repeats of an id become rejected rows."""
    seen: set[str] = set()
    out = []
    for record in records:
        sid = source_id(record["source"])
        row = {**record, "source_id": sid, "stage": "manifest", "extra": record.get("extra") or "{}"}
        if sid in seen:
            row.update(status=STATUS_REJECTED, reason="duplicate",
                       detail="the manifest lists this source more than once")
            row["source_id"] = f"{sid}-dup{len(out)}"
        else:
            row["status"] = STATUS_OK
            seen.add(sid)
        out.append(row)
    return out
