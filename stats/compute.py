"""All the numbers of the report, as one JSON-ready dict, from a corpus's index, rejections and manifest.

Each index column is read on its own and released before the next (text columns are streamed), and
everything is Arrow compute, so a ten-million-clip index is summarised within a few GB of memory.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation.config import QualityFilterConfig
from stats.captions import caption_stats
from stats.describe import describe, top_values
from stats.funnel import funnel, rejection_counts, stage_order
from stats.load import Corpus
from stats.scores import collect_scores
from stats.throughput import throughput
from storage import Location

log = logging.getLogger(__name__)

#: Short side of a high-definition clip, as HD-VG-130M defines its corpus.
HD_SHORT_SIDE = 720


def compute_stats(root: str | Location) -> dict[str, Any]:
    """The statistics of the corpus at ``root`` (raises FileNotFoundError when it is not a corpus)."""
    started = time.monotonic()
    corpus = Corpus(root)
    manifest = corpus.manifest()
    rows = corpus.rows
    log.info("summarising %s: %d clips", corpus.root, rows)
    stats: dict[str, Any] = {
        "corpus": corpus.root.uri,
        "computed": datetime.now(UTC).isoformat(timespec="seconds"),
        "manifest_created": manifest.get("created"),
    }
    stats["distributions"], totals = _distributions(corpus, widescreen(manifest))
    log.info("distributions done (%.1f s); parsing filter scores", time.monotonic() - started)
    stats["scores"] = _scores(corpus)
    log.info("scores done (%.1f s); counting caption words", time.monotonic() - started)
    stats["captions"] = caption_stats(corpus.batches("caption"), rows)
    stats["totals"] = {**totals, "clips": rows, "shards": len(manifest.get("shards", [])),
                       "shard_bytes": sum(s.get("bytes", 0) for s in manifest.get("shards", []))}
    stats["funnel"] = _funnel(corpus, manifest, rows, stats["captions"]["captioned"], totals)
    stats["throughput"] = throughput(manifest, totals["hours"] * 3600)
    stats["seconds"] = round(time.monotonic() - started, 3)
    log.info("statistics of %d clips computed in %.1f s", rows, stats["seconds"])
    return stats


def widescreen(manifest: dict[str, Any]) -> dict[str, float]:
    """The aspect and tolerance the quality filter judged "widescreen" by: the corpus's config, else its defaults.

    The share reported is then the share the filter would let through, not a second definition.
    """
    defaults = QualityFilterConfig()
    quality = manifest.get("config", {}).get("filter", {}).get("quality", {})
    return {"aspect": quality.get("aspect", defaults.aspect),
            "tolerance": quality.get("aspect_tolerance", defaults.aspect_tolerance)}


def _distributions(corpus: Corpus, wide: dict[str, float]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Duration, resolution, aspect, fps, bitrate and clips per source; and the totals they give."""
    out: dict[str, Any] = {}
    duration = corpus.column("clip_duration")
    size = corpus.column("clip_bytes")
    out["duration_s"] = describe(duration)
    totals = {"hours": (out["duration_s"].get("sum") or 0.0) / 3600,
              "bytes": pc.sum(size).as_py() or 0}
    out["bitrate_mbps"] = describe(pc.divide(pc.multiply(pc.cast(size, pa.float64()), 8e-6), duration))
    del duration, size
    width, height = corpus.column("clip_width"), corpus.column("clip_height")
    short_side = pc.min_element_wise(width, height)
    out["short_side_px"] = describe(short_side)
    resolution = pc.binary_join_element_wise(pc.cast(width, pa.string()), pc.cast(height, pa.string()), "x")
    out["resolution"] = {"top": top_values(resolution), "hd_share": _share(pc.greater_equal(short_side, HD_SHORT_SIDE))}
    del width, height, short_side, resolution
    aspect = corpus.column("display_aspect")
    out["display_aspect"] = describe(aspect)
    out["display_aspect"]["top"] = top_values(pc.round(aspect, 2))
    out["display_aspect"]["widescreen"] = wide
    out["display_aspect"]["widescreen_share"] = _share(
        pc.less_equal(pc.abs(pc.subtract(pc.divide(aspect, wide["aspect"]), 1.0)), wide["tolerance"]))
    fps = corpus.column("clip_fps")
    out["fps"] = describe(fps)
    out["fps"]["top"] = top_values(pc.round(fps, 3))
    del aspect, fps
    per_source = pc.value_counts(corpus.column("source_id", dictionary=True)).field("counts")
    out["clips_per_source"] = describe(per_source, integer=True)
    totals["sources_with_clips"] = len(per_source)
    return out, totals


def _share(mask: pa.ChunkedArray) -> float | None:
    """Share of true values among the non-null ones."""
    valid = pc.drop_null(mask)
    return pc.sum(pc.cast(valid, pa.int64())).as_py() / len(valid) if len(valid) else None


def _scores(corpus: Corpus) -> dict[str, Any]:
    """Per filter rule (``checks.<rule>`` of the decision records): its scores' distribution, its threshold and
    how many clips score at or above it."""
    scores, thresholds = collect_scores(corpus.batches("scores"))
    out: dict[str, Any] = {}
    for name, values in scores.items():
        threshold = thresholds.get(name)
        summary = describe(values, extra_edges=() if threshold is None else (threshold,))
        if threshold is not None:
            summary.update(threshold=threshold, at_or_above=pc.sum(pc.cast(
                pc.greater_equal(values, threshold), pa.int64())).as_py() or 0)
        out[name] = summary
    return out


def _funnel(corpus: Corpus, manifest: dict[str, Any], rows: int, captioned: int,
            totals: dict[str, Any]) -> dict[str, Any]:
    rejections = corpus.rejections()
    counts = rejection_counts(rejections)
    configured = manifest.get("config", {}).get("stages", [])
    stages = stage_order([*configured, *counts, *manifest.get("stage_times", {})])
    in_shards = rows - corpus.column("shard", dictionary=True).null_count
    listed = manifest.get("counts", {}).get("sources")
    if listed is None:  # no manifest: every distinct source seen is one listed source
        ids = corpus.column("source_id").chunks + rejections["source_id"].chunks
        listed = len(pc.unique(pa.chunked_array(ids, pa.string())))
    index_ids = pc.unique(corpus.column("source_id", dictionary=True)).cast(pa.string())
    clip_rejected = rejections.filter(pc.is_valid(rejections["key"]))["source_id"].cast(pa.string())
    cut = len(pc.unique(pa.chunked_array([index_ids, *clip_rejected.chunks], pa.string())))
    result = funnel(listed, counts, stages, rows, captioned, in_shards, totals["sources_with_clips"], cut)
    result["rejections"] = rejections.num_rows
    return result
