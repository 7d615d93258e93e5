"""Write stage: turn the persisted clip results into WebDataset shards, the index and the manifest.

It reads what the stages persisted (not what one job happened to stream), so it gives the same
corpus whether the stages ran in one job, in several, or across a crash and a resume. Its
accounting closes the promise that nothing disappears: every source of the input ends with at
least one clip or at least one rejection, and a source with neither (its worker died every time)
is recorded as ``no_result`` so a rerun retries it.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import subprocess
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import ray

from curation.config import STAGES, CurationConfig
from curation.stages import WorkArea
from shards.layout import SHARDS_DIR, shard_name
from shards.schema import RECORD_SCHEMA, STATUS_OK, STATUS_REJECTED, to_table
from shards.writer import plan_shards, remove_stale_shards, sample_from_row, write_index, write_manifest, write_shard

log = logging.getLogger(__name__)

#: Ray Data's own default partition count for a groupby; fewer when there are fewer shards.
MAX_SHUFFLE_PARTITIONS = 200

VERSIONED_PACKAGES = ("videofactory", "ray", "scenedetect-headless", "av", "pyarrow", "webdataset", "yt-dlp", "torch",
                      "transformers")


def write_corpus(cfg: CurationConfig, work: WorkArea, sources: pa.Table) -> dict[str, Any]:
    """Write shards, ``index.parquet``, ``rejections.parquet`` and ``manifest.json``; return the counts."""
    started = time.monotonic()
    content_stages = list(STAGES[: STAGES.index("write")])
    current = sources["source_id"]
    per_stage = {s: _restrict(work.read_stage(s), current) for s in content_stages}
    final = per_stage[content_stages[-1]]
    clips = final.filter(pc.equal(final["status"], STATUS_OK)).sort_by("key")
    rejections = _rejections(sources, per_stage, clips)

    plan = plan_shards(clips["clip_bytes"].to_pylist(), cfg.write.target_shard_bytes)
    shard_of = [shard_name(cfg.write.name, n) for n in plan]
    clips = clips.set_column(clips.schema.get_field_index("shard"), "shard", pa.array(shard_of, pa.string()))
    shards = _write_shards(clips, work.root / SHARDS_DIR)
    stale = remove_stale_shards(work.root, {s["name"] for s in shards})
    if stale:
        log.info("removed %d shard(s) of an earlier write that the current plan no longer has", len(stale))
    write_index(work.root, clips, rejections)

    counts = _counts(sources, clips, rejections)
    write_manifest(work.root, {
        "format": "videofactory-webdataset/1",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": cfg.to_dict(),
        "versions": _versions(),
        "counts": counts,
        "shards": shards,
        "workers": _workers(per_stage),
        "stage_times": {**_stage_windows(work, content_stages),
                        "write": {"seconds": round(time.monotonic() - started, 3)}},
    })
    log.info("corpus written to %s: %d clips in %d shards, %d rejections",
             work.root, counts["clips"], len(shards), counts["rejections"])
    return counts


def _restrict(table: pa.Table, source_ids: pa.ChunkedArray) -> pa.Table:
    """Rows of the current input only (a work area may hold results of sources since removed)."""
    return table.filter(pc.is_in(table["source_id"], value_set=source_ids))


def _rejections(sources: pa.Table, per_stage: dict[str, pa.Table], clips: pa.Table) -> pa.Table:
    """Every rejection of every stage, plus ``no_result`` for sources that ended with nothing."""
    parts = [sources.filter(pc.equal(sources["status"], STATUS_REJECTED))]
    parts += [t.filter(pc.equal(t["status"], STATUS_REJECTED)) for t in per_stage.values()]
    rejected = pa.concat_tables([p.select(RECORD_SCHEMA.names).cast(RECORD_SCHEMA) for p in parts])
    accounted = set(clips["source_id"].to_pylist()) | set(rejected["source_id"].to_pylist())
    lost = [
        {**row, "status": STATUS_REJECTED, "stage": "write", "reason": "no_result",
         "detail": "no stage recorded a result for this source (its worker died, or an earlier stage has not "
                   "run on it yet); rerun the job to retry it"}
        for row in sources.to_pylist() if row["source_id"] not in accounted
    ]
    if lost:
        log.warning("%d source(s) have no result from any stage; recorded as no_result", len(lost))
    everything = pa.concat_tables([rejected, to_table(lost)])
    return everything.sort_by([("source_id", "ascending"), ("start_time", "ascending")])


def _write_shards(clips: pa.Table, shards_dir: Path) -> list[dict[str, Any]]:
    """Write every shard with Ray Data, one task per shard; return the manifest entries in order."""
    if clips.num_rows == 0:
        return []
    written = (
        ray.data.from_arrow(clips)
        .groupby("shard", num_partitions=min(len(set(clips["shard"].to_pylist())), MAX_SHUFFLE_PARTITIONS))
        .map_groups(_write_shard_group, batch_format="pyarrow", fn_kwargs={"shards_dir": str(shards_dir)})
        .take_all()
    )
    return sorted(written, key=lambda s: s["name"])


def _write_shard_group(group: pa.Table, shards_dir: str) -> pa.Table:
    """Ray Data group function: write the shard whose rows ``group`` holds."""
    rows = sorted(group.to_pylist(), key=lambda r: r["key"])
    entry = write_shard(Path(shards_dir) / rows[0]["shard"], [sample_from_row(r) for r in rows])
    return pa.Table.from_pylist([entry])


def _counts(sources: pa.Table, clips: pa.Table, rejections: pa.Table) -> dict[str, Any]:
    by_reason = Counter(f"{r['stage']}/{r['reason']}" for r in rejections.select(["stage", "reason"]).to_pylist())
    with_clips = set(clips["source_id"].to_pylist())
    return {
        "sources": sources.num_rows,
        "sources_with_clips": len(with_clips),
        "sources_without_clips": sources.num_rows - len(with_clips),
        "clips": clips.num_rows,
        "clip_seconds": round(pc.sum(pc.subtract(clips["end_time"], clips["start_time"])).as_py() or 0.0, 3),
        "rejections": rejections.num_rows,
        "rejections_by_reason": dict(sorted(by_reason.items())),
    }


def _workers(per_stage: dict[str, pa.Table]) -> dict[str, dict[str, int]]:
    """Which Ray node ran how many rows of each stage (the job's own record of where work ran)."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for stage, table in per_stage.items():
        out[stage] = dict(Counter(w for w in table["worker"].to_pylist() if w))
    return dict(out)


def _stage_windows(work: WorkArea, stages: list[str]) -> dict[str, dict[str, Any]]:
    """When each stage wrote its persisted results: first and last file time, and how many files.

    Stages run fused and concurrently (and possibly in several jobs), so a stage's own CPU time is not
    observable here; the window in which its results appeared is, from one listing of the work area.
    """
    fs = pafs.LocalFileSystem()
    windows: dict[str, dict[str, Any]] = {}
    for stage in stages:
        directory = work.stage_dir(stage)
        if not directory.is_dir():
            continue
        infos = fs.get_file_info(pafs.FileSelector(str(directory), recursive=True))
        times = [i.mtime for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")]
        if times:
            first, last = min(times), max(times)
            windows[stage] = {"results": len(times), "first": first.isoformat(timespec="seconds"),
                              "last": last.isoformat(timespec="seconds"),
                              "seconds": round((last - first).total_seconds(), 3)}
    return windows


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
