"""Per-stage wall time and throughput, from the ``stage_times`` the curation job records in the manifest.

The pipeline fuses stages into one task per source and streams sources through them concurrently,
so a stage's own busy time is not recorded; what is recorded, per stage, is how many rows left the
pipeline at that stage (clips at the last stage, rejections at the stage that rejected them) and the
window in which they did, plus the partition writers' summed time. A stage's throughput is its rows
over its window; the corpus's is its clip-seconds over the span from the first row to the end of the
write.
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
