"""The sample schema shared by curation (which writes it) and training (which reads it).

One wide record describes a source video as it moves through the curation stages and, after the
split, each clip cut from it. Every stage fills in more columns; a rejected row keeps what was known
when it was rejected plus ``stage``, ``reason`` and ``detail``. Keeping a single explicit Arrow schema
means every persisted stage file, every Ray block and the final ``index.parquet`` agree on types,
so files written by different workers (or different jobs) can always be read back together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

STATUS_OK = "ok"
STATUS_REJECTED = "rejected"

#: Columns describing where a clip came from (known once the manifest is read).
SOURCE_FIELDS: list[pa.Field] = [
    pa.field("source_id", pa.string()),
    pa.field("source", pa.string()),
    pa.field("extra", pa.string()),  # JSON object of the manifest's extra columns
    pa.field("partition", pa.int32()),  # shards.layout.partition_of(source_id): where its clips are written
]

#: Columns filled in by the download stage.
DOWNLOAD_FIELDS: list[pa.Field] = [
    pa.field("local_path", pa.string()),
    pa.field("download_method", pa.string()),  # local | http | yt-dlp
    pa.field("source_sha256", pa.string()),
    pa.field("source_bytes", pa.int64()),
]

#: Columns filled in by the probe stage (ffprobe).
PROBE_FIELDS: list[pa.Field] = [
    pa.field("container", pa.string()),
    pa.field("video_codec", pa.string()),
    pa.field("pix_fmt", pa.string()),
    pa.field("width", pa.int32()),  # stored (coded) width
    pa.field("height", pa.int32()),
    pa.field("sar", pa.string()),
    pa.field("rotation", pa.int32()),  # degrees, from the display matrix
    pa.field("display_width", pa.int32()),  # after sample aspect ratio and rotation
    pa.field("display_height", pa.int32()),
    pa.field("display_aspect", pa.float64()),
    pa.field("fps", pa.float64()),  # nominal (r_frame_rate)
    pa.field("avg_fps", pa.float64()),
    pa.field("vfr", pa.bool_()),
    pa.field("duration", pa.float64()),
    pa.field("nb_frames", pa.int64()),
    pa.field("has_audio", pa.bool_()),
    pa.field("audio_codec", pa.string()),
]

#: Columns filled in by the scene split: one row per clip from here on.
CLIP_FIELDS: list[pa.Field] = [
    pa.field("key", pa.string()),  # <source_id>_<n:04d>, the WebDataset sample key
    pa.field("clip_index", pa.int32()),
    pa.field("scene_index", pa.int32()),  # the scene of the source it was cut from (chunks of one scene share it)
    pa.field("chunk_index", pa.int32()),  # which chunk of that scene: a boundary between chunks is no cut
    pa.field("start_time", pa.float64()),  # seconds from the first presentation timestamp
    pa.field("end_time", pa.float64()),
    pa.field("start_frame", pa.int64()),  # on the detector's (nominal frame rate) timeline
    pa.field("end_frame", pa.int64()),  # exclusive
    pa.field("detector", pa.string()),
    pa.field("source_rows", pa.int32()),  # rows the source's split produced: how a consumer knows it has them all
]

#: Columns filled in by clip extraction.
EXTRACT_FIELDS: list[pa.Field] = [
    pa.field("clip_path", pa.string()),
    pa.field("clip_sha256", pa.string()),
    pa.field("clip_bytes", pa.int64()),
    pa.field("clip_width", pa.int32()),
    pa.field("clip_height", pa.int32()),
    pa.field("clip_fps", pa.float64()),
    pa.field("clip_frames", pa.int64()),
    pa.field("clip_duration", pa.float64()),
    pa.field("extract_mode", pa.string()),  # reencode | copy | smart | smart_copy | reencode (fallback: <why>)
    pa.field("keyframe_snapped", pa.bool_()),  # copy mode: the start moved to a keyframe
]

#: Columns filled in by the caption stage (BLIP-2; see curation/caption.py).
CAPTION_FIELDS: list[pa.Field] = [
    pa.field("caption", pa.string()),  # the caption of the clip's middle frame ("" when captioning is off)
    # JSON list: BLIP-2, one {"time": s from the clip start, "text": ...} per frame; a VLM (caption.model: vlm),
    # one {"times": [its frames' times], "text": ..., "sections": {...} with caption.template: sections}.
    pa.field("captions", pa.string()),
    pa.field("caption_model", pa.string()),  # model name; "none" when captioning is off
    pa.field("caption_revision", pa.string()),  # Hub commit of the weights when known, else "unknown"
]

#: Columns filled in by the shard writer and later stages.
OUTPUT_FIELDS: list[pa.Field] = [
    pa.field("scores", pa.string()),  # the filter's decision record: shards.scores.DecisionRecord as JSON
    pa.field("shard", pa.string()),
]

#: Outcome of the row.
STATUS_FIELDS: list[pa.Field] = [
    pa.field("status", pa.string()),  # ok | rejected
    pa.field("stage", pa.string()),  # the stage that produced this row
    pa.field("reason", pa.string()),  # short machine-readable reason of a rejection
    pa.field("detail", pa.string()),  # sentence a person can act on
    pa.field("duplicate_of", pa.string()),  # a dedup rejection: key of the clip kept in this one's place
    pa.field("worker", pa.string()),  # Ray node (ip/node id) that ran the stage: provenance, not content
]

RECORD_SCHEMA = pa.schema(
    SOURCE_FIELDS
    + DOWNLOAD_FIELDS
    + PROBE_FIELDS
    + CLIP_FIELDS
    + EXTRACT_FIELDS
    + CAPTION_FIELDS
    + OUTPUT_FIELDS
    + STATUS_FIELDS
)

#: Internal columns that do not belong in the published index (they point into the work area).
INTERNAL_COLUMNS = ("local_path", "clip_path", "status", "worker", "source_rows", "duplicate_of")

#: ``index.parquet``: one row per published clip.
INDEX_SCHEMA = pa.schema([f for f in RECORD_SCHEMA if f.name not in INTERNAL_COLUMNS])

#: ``rejections.parquet``: one row per rejected source or clip.
REJECTION_SCHEMA = pa.schema(
    [RECORD_SCHEMA.field(n) for n in ("source_id", "source", "key", "stage", "reason", "detail", "duplicate_of")]
    + [RECORD_SCHEMA.field(n) for n in ("start_time", "end_time", "start_frame", "end_frame", "extra")]
)

#: ``availability/p00042.parquet`` (``videofactory verify-sources``): one row per source of partition 42, as
#: re-checked at ``checked_at``. ``status``: available | gone (404/410, no such file) | forbidden (401/403/451,
#: unreadable) | error (after retries, or a bad URL) | changed (size or sha256 differs from the record) |
#: unchanged (sha256 equal; only with --hash).
AVAILABILITY_SCHEMA = pa.schema([
    pa.field("source_id", pa.string()),
    pa.field("source", pa.string()),
    pa.field("status", pa.string()),
    pa.field("http_status", pa.int32()),  # the last HTTP answer (null for files and object stores)
    pa.field("size", pa.int64()),  # bytes now: Content-Length, Content-Range's total, the file's size or the download's
    pa.field("sha256", pa.string()),  # of the bytes now (only with --hash)
    pa.field("recorded_bytes", pa.int64()),  # source_bytes when the corpus was made (null when never downloaded)
    pa.field("recorded_sha256", pa.string()),
    pa.field("content_type", pa.string()),
    pa.field("method", pa.string()),  # head | range (HEAD refused: GET of byte 0) | yt-dlp | download | file | store
    pa.field("attempts", pa.int32()),  # requests made (retries included)
    pa.field("reason", pa.string()),  # machine-readable cause of gone/forbidden/error/changed
    pa.field("detail", pa.string()),
    pa.field("checked_at", pa.timestamp("ms", tz="UTC")),
])

#: Extensions of the files in one sample.
SAMPLE_EXTENSIONS = ("mp4", "txt", "json")


def normalise(row: Mapping[str, Any], schema: pa.Schema = RECORD_SCHEMA) -> dict[str, Any]:
    """Return ``row`` restricted to ``schema``'s columns, with missing ones set to None."""
    return {name: row.get(name) for name in schema.names}


def to_table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema = RECORD_SCHEMA) -> pa.Table:
    """Build a table with exactly ``schema`` (so blocks from any worker concatenate)."""
    return pa.Table.from_pylist([normalise(r, schema) for r in rows], schema=schema)


def sample_metadata(row: Mapping[str, Any]) -> dict[str, Any]:
    """The ``<key>.json`` of a sample: the index row of the clip."""
    return normalise(row, INDEX_SCHEMA)
