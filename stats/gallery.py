"""The report's gallery: thumbnail strips of sample kept clips and of sample rejected clips per reason.

People judge a filter by looking at what it dropped, so the report shows a few frames of each. What is
looked at stays bounded and deterministic, whatever the size of the corpus:

* **kept clips**: the first clip of ``kept`` shards spread evenly over the corpus's shards (in name order,
  so over its partitions). A shard is read from its start only until that first sample is complete, so
  the cost is one clip per shard, never a scan of the corpus. Partitions are a hash of the source id and
  keys are sorted inside them, so these are sources drawn evenly from the whole corpus.
* **rejected clips and scenes**: per ``stage/reason``, the ``per_reason`` rejections with a span (a clip,
  or a scene dropped before cutting) of the lowest source ids (ids are a hash of the source, so this is
  an unbiased sample), found by streaming the rejections a record batch at a time. Their pictures come
  from the clip file while the work area holds it (``work/clips/<source_id>/<key>.mp4``: the job deletes
  a partition's clips once its shards are written, unless ``write.keep_clips: true``), else from the span
  of the source itself when it is a local file (one seek, ``curation.frames.sample_span``). Sources on
  the web or in an object store are not fetched for a report: a reason whose sampled clips have no
  media left is listed with a note saying so, never with invented pictures. Sources rejected whole
  (``screen``, ``probe``, ``download``; no span) are counted.

Each strip is ``frames`` evenly spaced frames of the clip (``curation.frames.sample_clip``, one decode),
``width`` pixels wide each, joined side by side and stored as one inline JPEG data URI, so the report
stays one self-contained file of a few kB per clip. Kept clips carry their decision record's checks
(score, threshold, passed); rejected clips the rejection's detail, which states the score that failed.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import tarfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from curation.errors import Rejection
from curation.frames import sample_clip, sample_span
from curation.workarea import WorkArea
from shards.layout import manifest_location, rejections_location, shard_locations
from shards.reader import BATCH_ROWS, dataset, read_manifest, shard_samples
from shards.schema import REJECTION_SCHEMA
from shards.scores import DecisionRecord
from storage import Location
from storage.location import translated
from storage.scratch import local_copy, scratch_dir

log = logging.getLogger(__name__)

#: Defaults: clips of each kind shown, frames per strip, pixels per frame, JPEG quality, decoding threads.
KEPT = 12
PER_REASON = 4
FRAMES = 5
WIDTH = 160
QUALITY = 75
THREADS = 4

NO_MEDIA = "no media: the clip file is gone and the source is not a local file"

#: Columns of the sampling scan; the heavy ``detail`` sentences are read afterwards for the sampled sources only.
_REJECTION_COLUMNS = ["source_id", "source", "key", "stage", "reason", "start_time", "end_time"]
_ORDER = [("source_id", "ascending"), ("start_time", "ascending")]


@dataclass
class Thumb:
    """One clip of the gallery: its strip (a data URI, or None with ``note`` saying why) and what it was judged on."""

    key: str  # the clip's key, or "<source_id> <start>-<end> s" for a scene that was never cut
    strip: str | None = None
    note: str | None = None  # why there is no strip
    caption: str = ""
    checks: list[tuple[str, Any, Any, bool]] = field(default_factory=list)  # (rule, score, threshold, passed)
    detail: str = ""  # the rejection's sentence
    origin: str = ""  # where a rejected clip's frames came from: "clip file" or "source"


@dataclass
class ReasonSample:
    """The sampled rejected clips of one ``stage/reason`` and how many clips it rejected in all."""

    reason: str
    rejected: int
    thumbs: list[Thumb] = field(default_factory=list)
    note: str | None = None  # why no clip of this reason can be shown


@dataclass
class Gallery:
    kept: list[Thumb]
    rejected: list[ReasonSample]
    whole: dict[str, int]  # stage/reason -> sources rejected whole (no span to show)
    keep_clips: bool | None  # write.keep_clips of the corpus's config (None: not recorded)


def collect_gallery(root: str | Location, kept: int = KEPT, per_reason: int = PER_REASON, frames: int = FRAMES,
                    width: int = WIDTH) -> Gallery:
    """Sample the corpus at ``root`` and draw the strips (decoding on a few threads)."""
    root = Location(str(root))
    manifest = read_manifest(root) if manifest_location(root).is_file() else {}
    keep_clips = manifest.get("config", {}).get("write", {}).get("keep_clips")
    reasons, whole = _rejection_sample(root, per_reason)
    with scratch_dir("gallery") as scratch, ThreadPoolExecutor(THREADS) as pool:
        kept_thumbs = list(pool.map(lambda sample: _kept_thumb(sample, scratch, frames, width),
                                    list(_kept_samples(root, kept))))
        work = WorkArea.of(root)
        samples = []
        for name, (total, rows) in reasons.items():
            thumbs = list(pool.map(lambda row: _rejected_thumb(row, work, scratch, frames, width), rows))
            gone = thumbs and all(t.strip is None and t.note == NO_MEDIA for t in thumbs)
            note = _no_media_note(keep_clips) if gone else None
            samples.append(ReasonSample(reason=name, rejected=total, thumbs=thumbs, note=note))
    return Gallery(kept=kept_thumbs, rejected=samples, whole=whole, keep_clips=keep_clips)


def _no_media_note(keep_clips: bool | None) -> str:
    if keep_clips:
        return ("the sampled clips are no longer in work/clips (removed by hand, or by an incremental run) and their "
                "sources are not local files")
    return ("their clip files were deleted when their partitions were written and their sources are not local files "
            "(the report fetches nothing); curate with write.keep_clips: true to see rejected clips here")


# --- sampling -------------------------------------------------------------------------------------

def _kept_samples(root: Location, count: int) -> Iterator[dict[str, Any]]:
    """The first sample of ``count`` shards spread evenly over the corpus's shards (fewer when it has fewer)."""
    shards = shard_locations(root)
    if not shards or count <= 0:
        return
    taken = min(count, len(shards))
    picks = sorted({round(i * (len(shards) - 1) / max(taken - 1, 1)) for i in range(taken)})
    for pick in picks:
        try:
            with closing(shard_samples([shards[pick]])) as samples:
                sample = next(samples, None)
        except tarfile.TarError as exc:  # `videofactory validate` reports it; the report goes on without it
            log.warning("gallery: %s is not a readable tar (%s); skipped", shards[pick], exc)
            continue
        if sample is not None and "mp4" in sample:
            yield sample


def _rejection_sample(root: Location, per_reason: int,
                      ) -> tuple[dict[str, tuple[int, list[dict[str, Any]]]], dict[str, int]]:
    """Per ``stage/reason`` of rejections with a span (clips, dropped scenes): the total and the rows (with
    ``detail``) of the ``per_reason`` lowest source ids; and per ``stage/reason`` the sources rejected whole.
    Streams the rejections a record batch at a time, then reads the details of the sampled sources only."""
    location = rejections_location(root)
    totals: dict[str, int] = {}
    lowest: dict[str, pa.Table] = {}
    whole: dict[str, int] = {}
    with translated(location):
        rejections = dataset(location, REJECTION_SCHEMA)
        for batch in rejections.to_batches(columns=_REJECTION_COLUMNS, batch_size=BATCH_ROWS):
            table = pa.Table.from_batches([batch])
            label = pc.binary_join_element_wise(pc.fill_null(table["stage"], "?"), pc.fill_null(table["reason"], "?"),
                                                "/")
            table = table.append_column("label", label)
            spanned = pc.or_(pc.is_valid(table["key"]), pc.is_valid(table["start_time"]))
            for row in table.filter(pc.invert(spanned)).group_by("label").aggregate([("label", "count")]).to_pylist():
                whole[row["label"]] = whole.get(row["label"], 0) + row["label_count"]
            clips = table.filter(spanned)
            for name in pc.unique(clips["label"]).to_pylist():
                group = clips.filter(pc.equal(clips["label"], name))
                totals[name] = totals.get(name, 0) + group.num_rows
                merged = pa.concat_tables([t for t in (lowest.get(name), group) if t is not None])
                lowest[name] = merged.take(pc.select_k_unstable(merged, per_reason, _ORDER))
        ids = sorted({sid for table in lowest.values() for sid in table["source_id"].to_pylist()})
        found = rejections.to_table(columns=["source_id", "key", "start_time", "reason", "detail"],
                                    filter=pc.field("source_id").isin(ids)) if ids else None
    details = {(r["source_id"], r["key"], r["start_time"], r["reason"]): r["detail"]
               for r in (found.to_pylist() if found is not None else [])}
    sampled = {name: (totals[name], [{**row, "detail": details.get((row["source_id"], row["key"], row["start_time"],
                                                                    row["reason"]))}
                                     for row in lowest[name].sort_by(_ORDER).to_pylist()])
               for name in sorted(totals)}
    return sampled, dict(sorted(whole.items()))


# --- strips ---------------------------------------------------------------------------------------

def _kept_thumb(sample: dict[str, Any], scratch: Path, frames: int, width: int) -> Thumb:
    row = json.loads(sample["json"]) if "json" in sample else {}
    record = DecisionRecord.from_json(row.get("scores"))
    thumb = Thumb(key=sample["__key__"], caption=sample.get("txt", b"").decode("utf-8", "replace"),
                  checks=[(rule, c.score, c.threshold, c.passed) for rule, c in record.checks.items()])
    clip = scratch / f"kept-{thumb.key}.mp4"
    clip.write_bytes(sample["mp4"])
    try:
        thumb.strip, thumb.note = _strip(clip, frames, width)
    finally:
        clip.unlink(missing_ok=True)
    return thumb


def _rejected_thumb(row: dict[str, Any], work: WorkArea, scratch: Path, frames: int, width: int) -> Thumb:
    """The strip of a rejected clip from its file in the work area, else of its span in a local source."""
    span = (row["start_time"], row["end_time"])
    label = row["key"] or f"{row['source_id']} {span[0]:.2f}-{span[1]:.2f} s"
    thumb = Thumb(key=label, detail=row.get("detail") or "")
    clip = work.clip_location(row["source_id"], row["key"]) if row["key"] else None
    if clip is not None and clip.is_file():
        thumb.strip, thumb.note = _strip(local_copy(clip.uri, scratch), frames, width)
        thumb.origin = "clip file"
        return thumb
    source = _local_source(row.get("source") or "")
    if source is None or None in span or not span[1] > span[0]:
        thumb.note = NO_MEDIA
        return thumb
    thumb.strip, thumb.note = _strip(source, frames, width, span)
    thumb.origin = f"source {span[0]:.2f}-{span[1]:.2f} s"
    return thumb


def _local_source(source: str) -> Path | None:
    """The regular local file a source names (a path or a ``file://`` URL), or None (a URL, an object, gone)."""
    if source.startswith("file://"):
        source = urllib.request.url2pathname(urllib.parse.urlsplit(source).path)
    elif "://" in source:
        return None
    path = Path(source)
    return path if path.is_absolute() and path.is_file() else None


def _strip(clip: Path, frames: int, width: int,
           span: tuple[float, float] | None = None) -> tuple[str | None, str | None]:
    """``frames`` evenly spaced frames of ``clip`` (of its ``span`` only, for a source), ``width`` px wide each, side
    by side: a JPEG data URI.

    A file that cannot be decoded gives no strip and the decoder's reason (the report is still written).
    """
    try:
        sample = (sample_span(str(clip), span[0], span[1], frames, {"thumb": width}) if span
                  else sample_clip(str(clip), frames, {"thumb": width}))["thumb"]
    except Rejection as exc:
        return None, f"no frame decoded: {exc.detail}"
    # An even count gets the exact middle added by the sampler; the strip keeps the evenly spaced ones.
    pictures = [f for i, f in enumerate(sample.frames) if span or frames % 2 or i != sample.middle_index]
    gap = 2
    strip = Image.new("RGB", (sum(p.shape[1] for p in pictures) + gap * (len(pictures) - 1),
                              max(p.shape[0] for p in pictures)), "white")
    x = 0
    for picture in pictures:
        strip.paste(Image.fromarray(picture), (x, 0))
        x += picture.shape[1] + gap
    buffer = io.BytesIO()
    strip.save(buffer, format="JPEG", quality=QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), None
