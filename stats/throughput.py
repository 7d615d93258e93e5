"""Per-stage wall time and throughput, from the ``stage_times`` the write stage records in the manifest.

The pipeline fuses stages and streams sources through them concurrently, so a stage's own busy time
is not recorded; what is recorded is the window in which each stage wrote its persisted results (first
and last result file, and how many: one per source, or per clip for stages on clips) and the write
stage's own wall time. A stage's throughput is its results over its window; the corpus's is its
clip-seconds over the span from the first result to the end of the write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from stats.funnel import stage_order


def throughput(manifest: dict[str, Any], clip_seconds: float) -> dict[str, Any]:
    """Stage windows and rates, or ``recorded: False`` with the reason when the manifest has none."""
    times = manifest.get("stage_times")
    if not times:
        return {"recorded": False, "note": "the manifest records no stage times (the corpus was written before "
                                           "they were recorded); rerun the write stage to record them"}
    stages: dict[str, Any] = {}
    for stage in stage_order(list(times)):
        entry = times[stage]
        seconds, results = entry.get("seconds"), entry.get("results")
        rate = results / seconds if results and seconds else None
        stages[stage] = {**entry, "results_per_s": rate}
    firsts = [datetime.fromisoformat(e["first"]) for e in times.values() if e.get("first")]
    lasts = [datetime.fromisoformat(e["last"]) for e in times.values() if e.get("last")]
    processing = (max(lasts) - min(firsts)).total_seconds() if firsts else 0.0
    total = processing + (times.get("write", {}).get("seconds") or 0.0)
    return {"recorded": True, "stages": stages, "processing_window_s": processing, "wall_s": total,
            "clip_seconds_per_s": clip_seconds / total if total else None}
