"""Writing one partition: its shards, its index and rejection files, its record; then its clips leave the work area.

A worker runs this as soon as the driver has seen every row of every source of the partition, so
shards appear while the job runs. Everything it writes is decided by the partition's rows alone:

* clips sorted by key and planned into shards by size, named ``<name>-p00042-000000.tar``; a shard
  whose content (keys, clip sha256s, captions, metadata) equals what the partition's previous record
  says it holds is kept as it is, so a rerun rewrites nothing and an incremental run rewrites only
  the partitions its new sources fall in;
* ``index/p00042.parquet`` and ``rejections/p00042.parquet``, rows sorted;
* ``work/written/p00042-<digest>.json``, the record the manifest is aggregated from and by which a
  rerun skips the partition (the digest covers the partition's sources and the configuration).

Each clip is checked against its sha256 as it goes into its shard, and the shard's size once
stored; only then are the partition's clips removed from ``work/clips`` (unless
``write.keep_clips``). A clip that is no longer in the work area (an incremental run) is read back
from the shard that held it before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tarfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from curation.config import STAGES, config_from_dict
from curation.copies import EXACT, apply_copies, read_decisions, write_hashes
from curation.neardup import NEAR, apply_near_duplicates, write_phashes
from curation.workarea import WorkArea
from shards.hashing import file_sha256
from shards.layout import SHARDS_DIR, index_location, partition_name, rejections_location, shard_name
from shards.schema import INDEX_SCHEMA, REJECTION_SCHEMA, STATUS_OK, STATUS_REJECTED, to_table
from shards.writer import content_digest, plan_shards, sample_from_row, write_shard
from storage import Location
from storage.scratch import scratch_dir

log = logging.getLogger(__name__)

#: The stage whose rows are a finished clip.
FINAL_STAGE = STAGES[STAGES.index("write") - 1]

#: Clips read at once while a shard is built.
READ_AHEAD = 16

NO_RESULT_DETAIL = ("no stage recorded a result for this source (its worker died, or an earlier stage has not run on "
                    "it yet); rerun the job to retry it")


def write_partition(config: dict[str, Any], partition: int, rows: pa.Table, digest: str,
                    previous_record: str | None, dedup: dict[str, str] | None = None) -> dict[str, Any]:
    """Write ``partition`` from its final ``rows``; return its record (what the manifest aggregates).

    ``previous_record`` is the location of the partition's last record, and ``dedup`` those of its exact
    copies and near-duplicates by kind (``curation.copies``), as the driver listed them once at the job's
    start (listing them here, per partition, would cost every partition all the others).
    """
    started = time.monotonic()
    cfg = config_from_dict(config)
    work = WorkArea.of(cfg.output)
    root = work.output
    dedup = dedup or {}
    final, copied = rows.to_pylist(), read_decisions(dedup.get(EXACT.name), EXACT)
    write_hashes(work, partition, final)
    if cfg.filter.enabled and cfg.filter.near_duplicates.enabled:
        write_phashes(work, partition, final, FINAL_STAGE)
    decided = apply_near_duplicates(apply_copies(final, copied), read_decisions(dedup.get(NEAR.name), NEAR))
    clips, rejections = _split_outcomes(decided + _missing_sources(work, partition, rows))
    previous = _previous_record(previous_record)
    with scratch_dir(f"write-{partition_name(partition)}", work.scratch_parent()) as scratch:
        old_clips = _OldClips(root, previous, scratch)
        _keep_copied_clips(rejections, old_clips)
        shards = _write_shards(cfg.write.name, cfg.write.target_shard_bytes, partition, clips, previous, root,
                               old_clips)
    index_rows = [{**row, "shard": shard["name"]} for shard in shards for row in shard.pop("rows")]
    (index_location(root) / f"{partition_name(partition)}.parquet").write_table(to_table(index_rows, INDEX_SCHEMA))
    (rejections_location(root) / f"{partition_name(partition)}.parquet").write_table(
        to_table(rejections, REJECTION_SCHEMA))
    for name in {s["name"] for s in previous.get("shards", [])} - {s["name"] for s in shards}:
        (root / SHARDS_DIR / name).delete()
    complete = not any(r["reason"] == "no_result" for r in rejections)
    record = {
        "partition": partition, "digest": digest if complete else "incomplete", "complete": complete,
        "sources": len({r["source_id"] for r in clips} | {r["source_id"] for r in rejections}),
        "sources_with_clips": len({r["source_id"] for r in clips}),
        "clips": len(clips),
        "clip_seconds": round(sum(r["end_time"] - r["start_time"] for r in clips), 6),
        "rejections": len(rejections),
        "rejections_by_reason": dict(Counter(f"{r['stage']}/{r['reason']}" for r in rejections)),
        "workers": _workers(rows),
        "shards": shards,
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - started, 3),
    }
    location = work.written_record(partition, record["digest"])
    location.write_text(json.dumps(record, indent=1, sort_keys=True))
    if previous.get("location") and previous["location"] != location.uri:
        Location(previous["location"]).delete()
    if not cfg.write.keep_clips:  # one listing and one batch delete per source, not a request per clip
        unfinished = {r["source_id"] for r in rejections if r["reason"] == "no_result"}  # a rerun continues them
        done = {r["source_id"] for r in (*clips, *rejections) if r.get("clip_path")}  # clips kept, or rejected late
        if copied is not None:  # a copy's clips come back into the corpus if its original leaves the input
            unfinished |= set(copied["source_id"].to_pylist())
        unfinished |= {r["source_id"] for r in rejections if r["stage"] == NEAR.stage and r["reason"] == NEAR.reason}
        with ThreadPoolExecutor(READ_AHEAD) as pool:
            list(pool.map(lambda sid: (work.clips / sid).delete_tree(), sorted(done - unfinished)))
    return record


def _missing_sources(work: WorkArea, partition: int, rows: pa.Table) -> list[dict[str, Any]]:
    """The partition's sources that have no row at all (their tasks failed for good), as rows to record."""
    present = set(rows["source_id"].to_pylist())
    return [row for row in work.read_sources(partition).to_pylist() if row["source_id"] not in present]


def _split_outcomes(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Finished clips (sorted by key) and rejections (sorted); a row stopped short of the end is ``no_result``."""
    clips, rejections = [], []
    for row in rows:
        if row["status"] == STATUS_OK and row["stage"] == FINAL_STAGE:
            clips.append(row)
        elif row["status"] == STATUS_REJECTED:
            rejections.append(row)
        else:
            rejections.append({**row, "status": STATUS_REJECTED, "stage": "write", "reason": "no_result",
                               "detail": NO_RESULT_DETAIL})
    clips.sort(key=lambda r: r["key"])
    rejections.sort(key=lambda r: (r["source_id"], r["start_time"] if r["start_time"] is not None else -1.0,
                                   r["key"] or ""))
    return clips, rejections


def _previous_record(location: str | None) -> dict[str, Any]:
    """The partition's last record (with its location), or {} when it was never written."""
    if location is None:
        return {}
    return {**json.loads(Location(location).read_text()), "location": location}


def _keep_copied_clips(rejections: list[dict[str, Any]], old_clips: _OldClips) -> None:
    """Put back into the work area the clips just found to be copies or near-duplicates, before their shards change.

    They left the work area when their shard was written; the shard is about to be rewritten without
    them, and they return to the corpus if what is kept in their place leaves the input.
    """
    for row in rejections:
        if row["reason"] in (EXACT.reason, NEAR.reason) and row["stage"] == EXACT.stage and row.get("clip_path"):
            clip = Location(row["clip_path"])
            if not clip.exists():
                clip.write_bytes(old_clips.video(row))


def _write_shards(name: str, target_bytes: int, partition: int, clips: list[dict[str, Any]],
                  previous: dict[str, Any], root: Location, old_clips: _OldClips) -> list[dict[str, Any]]:
    """Write (or keep) each planned shard of the partition; return their entries, each with its ``rows``."""
    plan = plan_shards([r["clip_bytes"] for r in clips], target_bytes)
    planned: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for number, row in zip(plan, clips, strict=True):
        planned[number].append(row)
    kept = {s["name"]: s for s in previous.get("shards", [])}
    scratch = old_clips.scratch
    entries = []
    for number in sorted(planned):
        rows = planned[number]
        shard = shard_name(name, partition, number)
        samples = [sample_from_row({**r, "shard": shard}) for r in rows]
        content = content_digest(samples, [r["clip_sha256"] for r in rows])
        dest = root / SHARDS_DIR / shard
        old = kept.get(shard)
        if not (old and old.get("content") == content and dest.exists() and dest.size() == old["bytes"]):
            local = scratch / shard
            write_shard(local, zip(samples, old_clips.videos(rows), strict=True))
            old = {"bytes": local.stat().st_size, "sha256": file_sha256(local)}
            dest.upload_from(local)
            if dest.size() != old["bytes"]:
                raise OSError(f"{dest.uri}: stored {dest.size()} bytes of {old['bytes']}; rerun the job")
        entries.append({"name": shard, "partition": partition, "samples": len(rows), "bytes": old["bytes"],
                        "sha256": old["sha256"], "content": content, "rows": rows})
    return entries


class _OldClips:
    """Clip bytes, from the work area, or from the partition's previous shards for clips already moved out."""

    def __init__(self, root: Location, previous: dict[str, Any], scratch: Path) -> None:
        self.root, self.previous, self.scratch = root, previous, scratch
        self.extracted: dict[str, Path] | None = None
        self.lock = threading.Lock()

    def videos(self, rows: list[dict[str, Any]]) -> Iterator[bytes]:
        """The clips of ``rows`` in order, read ``READ_AHEAD`` at a time (object-store GETs are latency-bound)."""
        with ThreadPoolExecutor(READ_AHEAD) as pool:
            for start in range(0, len(rows), READ_AHEAD):
                yield from pool.map(self.video, rows[start:start + READ_AHEAD])

    def video(self, row: dict[str, Any]) -> bytes:
        try:
            data = Location(row["clip_path"]).read_bytes() if row.get("clip_path") else None
        except FileNotFoundError:
            data = None
        if data is None:
            with self.lock:
                data = self._from_previous_shards(row["key"])
        if hashlib.sha256(data).hexdigest() != row["clip_sha256"]:
            raise OSError(f"clip {row['key']} read back with a sha256 other than its extraction's; rerun the job")
        return data

    def _from_previous_shards(self, key: str) -> bytes:
        if self.extracted is None:  # once: every previous shard's videos into the scratch directory
            self.extracted = {}
            for shard in self.previous.get("shards", []):
                with (self.root / SHARDS_DIR / shard["name"]).open() as handle, tarfile.open(fileobj=handle) as tar:
                    for member in tar:
                        sample, _, ext = member.name.partition(".")
                        if ext == "mp4":
                            path = self.scratch / "previous" / f"{sample}.mp4"
                            path.parent.mkdir(parents=True, exist_ok=True)
                            path.write_bytes(tar.extractfile(member).read())
                            self.extracted[sample] = path
        if key not in self.extracted:
            raise FileNotFoundError(f"clip {key} is neither in the work area nor in the partition's shards; delete "
                                    "its state under work/state/ and rerun to extract it again")
        return self.extracted[key].read_bytes()


def _workers(rows: pa.Table) -> dict[str, dict[str, int]]:
    """Which Ray node produced how many of the partition's final rows, by stage (provenance)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for row in rows.select(["stage", "worker"]).to_pylist():
        if row["worker"]:
            counts[row["stage"]][row["worker"]] += 1
    return {stage: dict(c) for stage, c in counts.items()}
