"""Reading the job's input into source rows, streamed: a manifest or a directory, local or in an object store.

The input is a manifest (parquet, CSV, JSON lines, or plain text with one URL or path a line) or a
directory of videos. Manifests are read with Ray Data's readers, in blocks, never as one table in
the driver; extra columns travel with each source as a JSON object and end up in every clip's
metadata. A directory is listed once (use a manifest beyond a few million files).

Each source gets a stable id (``curation.ids.source_id``) and its partition
(``shards.layout.partition_of``). The same URL listed twice is one source: the copies share a
partition, where ``dedupe`` keeps one and records the others as ``duplicate`` rejections. Sources
are canonical: ``file:///x`` and ``/x`` (and ``x`` next to a manifest in ``/``) are one source.

Local sources are confined: a local path or ``file://`` URL outside the allowed directories
(``local_roots``: the input directory, or the manifest's own directory, unless
``download.local_roots`` lists others), symlinks resolved, is recorded as an ``outside_roots``
rejection here, and the download stage checks again when it opens the file. Symlinks of an input
directory that loop or point nowhere are listed (not skipped) so that download records them as
``broken_link``.

Extra columns are strict JSON: NaN and infinities become null. JSON-lines manifests are parsed line
by line with Python's ``json`` (a ``true`` stays a boolean whatever the other rows hold; Arrow's
JSON reader refuses a column that is a boolean in one row and a number in another).
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import urllib.request
from typing import Any
from urllib.parse import urlparse, urlsplit

import pyarrow as pa
import ray

from curation.config import CurationConfig
from curation.download import outside_roots_detail, within_roots
from curation.ids import source_id
from shards.layout import partition_of
from shards.schema import STATUS_OK, STATUS_REJECTED, to_table
from storage import Location

MANIFEST_READERS = {
    ".parquet": ray.data.read_parquet,
    ".csv": ray.data.read_csv,
    # JSON lines are read as text and parsed per line (see the module docstring).
    ".jsonl": ray.data.read_text,
    ".json": ray.data.read_text,
    ".txt": ray.data.read_text,
}
_JSON_SUFFIXES = (".jsonl", ".json")

#: The columns every source dataset has before ids are assigned (``reason``/``detail``: a source
#: refused before any stage ran, e.g. ``outside_roots``; null for the others).
SOURCE_COLUMNS = pa.schema([pa.field("source", pa.string()), pa.field("extra", pa.string()),
                            pa.field("reason", pa.string()), pa.field("detail", pa.string())])


def local_roots(cfg: CurationConfig) -> list[str]:
    """Directories local sources may be read from: ``download.local_roots``, else the input directory
    (a directory input) or the manifest's directory; none for an input in an object store."""
    if cfg.download.local_roots:
        return [os.path.abspath(os.path.expanduser(r)) for r in cfg.download.local_roots]
    location = Location(cfg.input)
    if not location.is_local:
        return []
    if location.info().type.name == "Directory":
        return [location.uri]
    return [location.parent.uri]


def source_dataset(cfg: CurationConfig) -> ray.data.Dataset:
    """The input as a Ray Dataset of ``source`` (absolute path or URL) and ``extra`` (JSON object) rows."""
    location = Location(cfg.input)
    info = location.info()
    if info.type.name == "NotFound":
        raise FileNotFoundError(f"input {cfg.input!r} does not exist: give a manifest file or a directory of videos")
    roots = local_roots(cfg)
    if info.type.name == "Directory":
        wanted = {e.lower() for e in cfg.input_extensions}
        listed = _list_local(location.uri) if location.is_local else [f.uri for f in location.files(recursive=True)]
        files = [f for f in listed
                 if posixpath.splitext(f)[1].lower() in wanted and not posixpath.basename(f).startswith(".")]
        if not files:
            raise ValueError(f"input {cfg.input} holds no file ending in {', '.join(cfg.input_extensions)} "
                             "(an empty directory?): nothing to curate")
        return ray.data.from_arrow(_source_table(files, ["{}"] * len(files), roots))
    suffix = posixpath.splitext(location.name)[1].lower()
    reader = MANIFEST_READERS.get(suffix)
    if reader is None:
        raise ValueError(f"{cfg.input}: unknown manifest type; use .parquet, .csv, .jsonl, .json or .txt")
    dataset = reader(location.path, filesystem=location.fs)
    columns = dataset.columns() or []
    if not columns:  # no row at all (a CSV with its header only): Ray Data knows no schema
        raise ValueError(f"input {cfg.input} lists no source (an empty manifest?): nothing to curate")
    json_lines = suffix in _JSON_SUFFIXES
    url_column = "text" if suffix == ".txt" else cfg.url_column
    base = location.parent.uri
    if json_lines:  # the first row says, here in the driver, what a bad file would only say in a task
        with location.fs.open_input_stream(location.path) as stream:
            head = stream.read(1 << 16).decode("utf-8", "replace").splitlines()
        first = next((line for line in head[:-1] or head if line.strip()), None)
        if first is not None:
            _json_row(first, url_column, cfg.input)
    elif url_column not in columns:
        raise ValueError(f"{cfg.input}: no column {cfg.url_column!r} (columns: {sorted(columns)}); set url_column "
                         "in the config")
    return dataset.map_batches(_source_rows, fn_kwargs={"url_column": url_column, "base": base,
                                                         "comments": suffix == ".txt", "json_lines": json_lines,
                                                         "roots": roots, "input": cfg.input},
                               batch_format="pyarrow", zero_copy_batch=True)


def _source_rows(batch: pa.Table, url_column: str, base: str, comments: bool, roots: list[str],
                 json_lines: bool = False, input: str = "") -> pa.Table:  # noqa: A002 - the config's name
    """Manifest rows as source rows; empty (and, in text files, ``#`` comment) lines dropped."""
    rows = batch.to_pylist()
    if json_lines:
        rows = [_json_row(r["text"], url_column, input) for r in rows if str(r["text"] or "").strip()]
    sources, extras = [], []
    for row in rows:
        value = str(row.get(url_column) or "").strip()
        if not value or (comments and value.startswith("#")):
            continue
        sources.append(_absolute(value, base))
        extras.append(strict_json({k: v for k, v in row.items() if k != url_column}))
    return _source_table(sources, extras, roots)


def _json_row(line: str, url_column: str, input: str) -> dict[str, Any]:  # noqa: A002
    """One JSON-lines row, parsed by Python's json (``true`` stays a boolean; NaN is cleaned later)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{input}: a line is not valid JSON ({exc}): {line[:120]!r}") from None
    if not isinstance(row, dict) or url_column not in row:
        keys = sorted(row) if isinstance(row, dict) else type(row).__name__
        raise ValueError(f"{input}: a line has no {url_column!r} key ({keys}); set url_column in the config: "
                         f"{line[:120]!r}")
    return row


def strict_json(extra: dict[str, Any]) -> str:
    """``extra`` as strict JSON (sorted keys). NaN and infinities, which JSON has no spelling for, become
    null; null columns are left out, as a manifest's empty cells are."""
    finite = {k: v for k, v in _finite(extra).items() if v is not None}
    return json.dumps(finite, default=str, sort_keys=True, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _source_table(sources: list[str], extras: list[str], roots: list[str]) -> pa.Table:
    """Source rows; a local source outside ``roots`` carries its ``outside_roots`` rejection."""
    reasons: list[str | None] = []
    details: list[str | None] = []
    for source in sources:
        refused = _is_local(source) and not within_roots(source, roots)
        reasons.append("outside_roots" if refused else None)
        details.append(outside_roots_detail(source, roots) if refused else None)
    return pa.table({"source": sources, "extra": extras, "reason": reasons, "detail": details},
                    schema=SOURCE_COLUMNS)


def _is_local(source: str) -> bool:
    scheme = urlparse(source).scheme
    return not scheme or len(scheme) == 1


def _list_local(root: str) -> list[str]:
    """Files under a local directory, sorted, following directory symlinks once each (no loops).

    Unlike a listing that drops what it cannot stat, symlinks that loop or point nowhere are kept:
    the download stage records them as ``broken_link`` rather than have them vanish.
    """
    out: list[str] = []
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        for name in dirs:
            path = os.path.join(folder, name)
            if not os.path.exists(path):  # a broken link os.walk reports as a directory entry
                out.append(path)
        out.extend(os.path.join(folder, name) for name in files)
    return sorted(out)


def _absolute(source: str, base: str) -> str:
    """Canonical spelling of a source: URLs stay as they are; paths and ``file://`` URLs of this machine
    become absolute paths (relative ones are relative to the manifest's folder)."""
    parts = urlsplit(source)
    scheme = parts.scheme.lower()
    if scheme == "file" and parts.netloc in ("", "localhost"):
        path = urllib.request.url2pathname(parts.path)
        if posixpath.isabs(path):
            return Location(path).uri  # an explicit local file, wherever the manifest is
        source = path
    elif scheme and len(scheme) > 1:  # a one-letter "scheme" is a Windows drive
        return source
    if Location(base).is_local:
        return Location(posixpath.join(base, posixpath.expanduser(source))).uri
    return Location(base).uri + "/" + posixpath.normpath(source).lstrip("/")


def assign_ids(batch: pa.Table, partitions: int) -> pa.Table:
    """``source_id`` and ``partition`` of each source row."""
    ids = [source_id(s) for s in batch["source"].to_pylist()]
    return batch.append_column("source_id", pa.array(ids, pa.string())).append_column(
        "partition", pa.array([partition_of(i, partitions) for i in ids], pa.int32()))


def dedupe(table: pa.Table) -> pa.Table:
    """Source rows (``RECORD_SCHEMA``) of one partition's input rows, sorted by id; repeats of an id rejected.

    Of the copies of one source the one with the smallest ``extra`` is kept (a rule that does not
    depend on the order in which a distributed read delivered them); the others get distinct ids
    (``<id>-dup1``, ...) so every row can be told apart downstream.
    """
    columns = ["source_id", "source", "extra", "partition"]
    refusals = {"reason", "detail"} <= set(table.column_names)
    rows = sorted(table.select(columns + (["reason", "detail"] if refusals else [])).to_pylist(),
                  key=lambda r: (r["source_id"], r["extra"] or "", r["source"]))
    out: list[dict[str, Any]] = []
    copies = 0
    for i, row in enumerate(rows):
        repeat = i > 0 and rows[i - 1]["source_id"] == row["source_id"]
        copies = copies + 1 if repeat else 0
        reason, detail = row.pop("reason", None), row.pop("detail", None)
        record = {**row, "stage": "manifest", "extra": row["extra"] or "{}", "status": STATUS_OK}
        if reason and not repeat:
            record.update(status=STATUS_REJECTED, reason=reason, detail=detail)
        if repeat:
            record.update(source_id=f"{row['source_id']}-dup{copies}", status=STATUS_REJECTED, reason="duplicate",
                          detail="the manifest lists this source more than once")
        out.append(record)
    return to_table(out)

