"""The funnel: how many sources and clips entered and left each stage, and why the others were rejected.

Units change at the scene split: stages before it handle sources, stages after it handle clips.
The rejections tell them apart by their columns: a row without ``key`` and without a span
(``start_time``) rejects a whole source; a row with a span but no key is a scene dropped by the split
(too short); a row with a key rejects one clip. Stage names are taken from the data, so stages added
to the pipeline later (filters, captioning) appear without change here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

#: The order stages run in; a stage not listed here is placed before ``write`` in order of appearance.
KNOWN_ORDER = ("manifest", "download", "probe", "screen", "split", "extract", "filter", "caption", "write")
#: The stage that turns sources into clips: the ones before it handle whole sources.
SPLIT_STAGE = "split"


def stage_order(seen: list[str]) -> list[str]:
    """``seen`` stage names in pipeline order: known stages by ``KNOWN_ORDER``, others just before write."""
    known = [s for s in KNOWN_ORDER if s in seen and s != "write"]
    others = [s for s in dict.fromkeys(seen) if s not in KNOWN_ORDER]
    return known + others + (["write"] if "write" in seen else [])


def handles_sources(stage: str) -> bool:
    """Whether ``stage`` runs before the scene split, on whole sources."""
    return stage in KNOWN_ORDER and KNOWN_ORDER.index(stage) < KNOWN_ORDER.index(SPLIT_STAGE)


def rejection_counts(rejections: pa.Table) -> dict[str, dict[str, Any]]:
    """Per stage: rejected sources, dropped scenes and rejected clips, each with counts per reason."""
    kind = _row_kind(rejections)
    out: dict[str, dict[str, Any]] = defaultdict(lambda: {"sources": Counter(), "scenes": Counter(),
                                                          "clips": Counter()})
    stages = rejections["stage"].to_pylist() if rejections.num_rows else []
    reasons = rejections["reason"].to_pylist() if rejections.num_rows else []
    grouped = Counter(zip(stages, kind, reasons))
    for (stage, what, reason), n in grouped.items():
        out[stage or "unknown"][what][reason or "unknown"] += n
    return {stage: {what: dict(sorted(c.items())) for what, c in parts.items()} for stage, parts in out.items()}


def _row_kind(rejections: pa.Table) -> list[str]:
    """``sources`` / ``scenes`` / ``clips`` for each rejection row (see the module docstring)."""
    if rejections.num_rows == 0:
        return []
    has_key = pc.is_valid(rejections["key"]) if "key" in rejections.column_names else pa.repeat(False, 0)
    has_span = (pc.is_valid(rejections["start_time"]) if "start_time" in rejections.column_names
                else pc.and_(has_key, pc.invert(has_key)))
    kind = pc.if_else(has_key, "clips", pc.if_else(has_span, "scenes", "sources"))
    return kind.to_pylist()


def funnel(listed: int, rejections: dict[str, dict[str, Any]], stages: list[str], index_rows: int,
           captioned: int, in_shards: int, sources_with_clips: int, sources_cut: int) -> dict[str, Any]:
    """The funnel's steps and the accounting of every listed source.

    ``listed`` is the number of input rows (the manifest's ``counts.sources``); each ends either
    with clips cut from it (``sources_cut``: distinct sources in the index or in clip rejections;
    ``sources_with_clips`` of them still have clips in the index) or with exactly one whole-source
    rejection (a duplicate listing is such a rejection, though its source may have clips).
    """
    clip_rejections = sum(sum(r.get("clips", {}).values()) for r in rejections.values())
    clips_cut = index_rows + clip_rejections
    steps: list[dict[str, Any]] = [{"step": "listed", "unit": "sources", "count": listed}]
    sources, clips = listed, clips_cut
    for stage in stages:
        rejected = {"sources": {}, "scenes": {}, "clips": {}, **rejections.get(stage, {})}
        sources -= sum(rejected["sources"].values())
        clips -= sum(rejected["clips"].values())
        step = {"stage": stage, "reasons": dict(Counter(rejected["sources"]) + Counter(rejected["clips"])),
                "sources_rejected": sum(rejected["sources"].values()),
                "scenes_dropped": sum(rejected["scenes"].values()),
                "clips_rejected": sum(rejected["clips"].values())}
        if handles_sources(stage):
            steps.append({"step": f"after {stage}", "unit": "sources", "count": sources, **step})
            continue
        if not any(s.get("step") == "clips cut" for s in steps):
            steps.append({"step": "clips cut", "unit": "clips", "count": clips_cut})
        steps.append({"step": f"after {stage}", "unit": "clips", "count": clips, **step})
    if not any(s.get("step") == "clips cut" for s in steps):
        steps.append({"step": "clips cut", "unit": "clips", "count": clips_cut})
    steps.append({"step": "captioned", "unit": "clips", "count": captioned})
    steps.append({"step": "in shards", "unit": "clips", "count": in_shards})
    whole_source = sum(sum(r.get("sources", {}).values()) for r in rejections.values())
    return {
        "steps": steps,
        "sources": {"listed": listed, "with_clips": sources_with_clips,
                    "all_clips_rejected": sources_cut - sources_with_clips, "rejected_whole": whole_source,
                    "unaccounted": listed - sources_cut - whole_source},
        "clips": {"cut": clips_cut, "rejected": clip_rejections, "in_index": index_rows},
    }
