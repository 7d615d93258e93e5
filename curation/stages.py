"""Running one stage on rows, with every result persisted so that a rerun resumes.

Each stage is a pure function from an input row to output rows (one, many, or a rejection). The
runner wraps it with the two guarantees the pipeline rests on:

* nothing crashes the job: a ``Rejection`` or any unexpected exception becomes a rejected row
  with a readable reason;
* nothing is done twice: results are written atomically under ``work/stages/<stage>/`` keyed by
  source (or by clip for per-clip stages) before they are returned, and a result already on disk
  is returned instead of recomputed. A job killed at any point and resubmitted therefore redoes
  only the rows whose results were not yet written.

Writing one small parquet file per source (per clip for extraction, filtering and captioning) is deliberate:
it is the granularity of resume, and Ray Data's own writers write whole blocks under random names,
which cannot tell a later run what was finished. Captioning computes a batch of clips at once
(``resume_or_compute``) but still persists one file per clip.
"""

from __future__ import annotations

import functools
import logging
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from curation.caption import uncaptioned
from curation.config import STAGES, CurationConfig, config_from_dict
from curation.download import fetch
from curation.errors import Rejection
from curation.extract import extract
from curation.filtering import filter_row
from curation.probe import probe
from curation.split import split
from shards.schema import RECORD_SCHEMA, STATUS_OK, STATUS_REJECTED, to_table

log = logging.getLogger(__name__)

#: Stages whose results are stored per clip rather than per source.
PER_CLIP_STAGES = {"extract", "filter", "caption"}


class WorkArea:
    """Where a corpus directory keeps downloads, clips and per-stage results."""

    def __init__(self, output: str | Path) -> None:
        self.root = Path(output)
        self.work = self.root / "work"
        self.downloads = self.work / "downloads"
        self.clips = self.work / "clips"
        self.sources = self.work / "sources.parquet"

    def stage_dir(self, stage: str) -> Path:
        return self.work / "stages" / stage

    def result_path(self, stage: str, row: dict[str, Any]) -> Path:
        """Where the results of ``stage`` for ``row`` are stored."""
        if stage in PER_CLIP_STAGES:
            return self.stage_dir(stage) / row["source_id"] / f"{row['key']}.parquet"
        return self.stage_dir(stage) / f"{row['source_id']}.parquet"

    def check_fingerprint(self, stage: str, fingerprint: str) -> None:
        """Refuse to mix results made under a different config into the same stage directory."""
        marker = self.stage_dir(stage) / "_fingerprint"
        if marker.exists() and marker.read_text().strip() != fingerprint:
            raise ValueError(
                f"{self.stage_dir(stage)} holds results made with a different configuration of the "
                f"'{stage}' stage or an earlier one. Use a new --output directory, or delete that "
                "directory and the ones of the later stages to redo them with the new settings."
            )
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(fingerprint)

    def read_stage(self, stage: str) -> pa.Table:
        """Every row persisted by ``stage`` (empty table when it has not run)."""
        directory = self.stage_dir(stage)
        if not directory.exists():
            return RECORD_SCHEMA.empty_table()
        return pads.dataset(directory, format="parquet", schema=RECORD_SCHEMA).to_table()


def write_atomically(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` so that readers see either nothing or the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    pq.write_table(table, partial)
    os.replace(partial, path)


def _worker() -> str:
    """The Ray node this code runs on, as ``ip/node-id-prefix`` (empty outside Ray)."""
    try:
        import ray

        if not ray.is_initialized():
            return ""
        return f"{ray.util.get_node_ip_address()}/{ray.get_runtime_context().get_node_id()[:8]}"
    except Exception:  # provenance must never fail a row
        return ""


def apply_stage(stage: str, row: dict[str, Any], cfg: CurationConfig, work: WorkArea) -> list[dict[str, Any]]:
    """The stage's own work on one row, before persistence and error capture."""
    if stage == "download":
        fetched = fetch(row["source"], row["source_id"], work.downloads, cfg.download)
        return [{**row, "local_path": fetched.local_path, "download_method": fetched.method,
                 "source_sha256": fetched.sha256, "source_bytes": fetched.size}]
    if stage == "probe":
        return [{**row, **probe(row["local_path"], cfg.probe)}]
    if stage == "split":
        return split(row, cfg.split)
    if stage == "extract":
        return [{**row, **extract(row, cfg.extract, work.clips)}]
    if stage == "filter":  # with GPUs it runs in filter actors (curation.filter_stage) instead
        return filter_row(row, cfg.filter)
    if stage == "caption" and not cfg.caption.enabled:  # enabled, it runs batched in caption actors
        return [{**row, **uncaptioned()}]
    raise ValueError(f"stage {stage!r} does not process rows")


def run_guarded(stage: str, row: dict[str, Any], work_fn: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Run ``work_fn``; any failure becomes one rejected row of ``row`` instead of an exception."""
    worker = _worker()
    try:
        produced = work_fn()
    except Rejection as exc:
        produced = [{**row, "status": STATUS_REJECTED, "reason": exc.reason, "detail": exc.detail}]
    except Exception as exc:  # a bug or an unforeseen input must cost one row, not the job
        log.error("stage %s failed on %s:\n%s", stage, row.get("key") or row.get("source"), traceback.format_exc())
        produced = [{**row, "status": STATUS_REJECTED, "reason": "internal_error",
                     "detail": f"{type(exc).__name__}: {exc} (a bug: please report it with this row)"}]
    return [{**r, "stage": stage, "worker": worker, "status": r.get("status") or STATUS_OK} for r in produced]


#: Computes the results of pending rows: one list of produced rows per input row, in order.
RowsFn = Callable[[list[dict[str, Any]]], list[list[dict[str, Any]]]]


def resume_or_compute(batch: pa.Table, stage: str, work: WorkArea, compute: RowsFn) -> pa.Table:
    """Rows of ``batch`` after ``stage``: passed through, read back from disk, or computed and persisted.

    Rows rejected by an earlier stage pass through untouched (they are already persisted there);
    rows whose results are on disk are not recomputed; ``compute`` gets all the others at once (so
    a stage may batch them, as captioning does) and each row's results are written atomically.
    """
    rows = batch.to_pylist()
    results: list[list[dict[str, Any]]] = [[] for _ in rows]
    pending: list[int] = []
    for i, row in enumerate(rows):
        path = work.result_path(stage, row) if row.get("status") != STATUS_REJECTED else None
        if path is None:
            results[i] = [row]
        elif path.exists():
            results[i] = pq.read_table(path).to_pylist()
        else:
            pending.append(i)
    if pending:
        for i, produced in zip(pending, compute([rows[i] for i in pending]), strict=True):
            write_atomically(to_table(produced), work.result_path(stage, rows[i]))
            results[i] = produced
    return to_table(r for produced in results for r in produced)


def run_stage(batch: pa.Table, stage: str, config: dict[str, Any]) -> pa.Table:
    """Ray Data batch function: apply ``stage`` to the ok rows of ``batch`` one by one, resuming from disk."""
    cfg = config_from_dict(config)
    work = WorkArea(cfg.output)

    def compute(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        return [run_guarded(stage, row, functools.partial(apply_stage, stage, row, cfg, work)) for row in rows]

    return resume_or_compute(batch, stage, work, compute)


def previous_stage(stage: str) -> str:
    """The stage whose persisted output ``stage`` reads when it runs on its own."""
    return STAGES[STAGES.index(stage) - 1]
