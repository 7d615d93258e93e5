"""Filter stage: a plain fused task per clip on CPUs, an actor pool when text detection gets GPUs.

What a clip is judged by lives in ``curation.filtering``; this module is how the stage runs.

On CPUs the stage is a plain function (``curation.stages.apply_stage`` calls
``curation.filtering.filter_row``): with equal CPUs Ray Data fuses it with download, probe, split
and extraction into one task per source, so a clip is filtered by the worker that just cut it, with
no hand-over, and on two cores both stay busy. An actor pool cannot fuse with tasks and would pin a
core for its whole life, starving the stages upstream. The text detector still loads only once per
worker process: Ray reuses worker processes across tasks, and ``filtering.cached_filter`` keeps it.

GPU tasks, however, get a fresh worker process each time in Ray (their ``max_calls`` is 1, to free
GPU memory), which would reload the detector for every clip: so when the stage holds GPUs it runs
as a pool of ``FilterActor``s, each loading the detector once on its GPU, with the same per-clip
persistence and resume as every stage (``curation.stages.resume_or_compute``).
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa

from curation.config import config_from_dict
from curation.filtering import ClipFilter
from curation.stages import WorkArea, resume_or_compute, run_guarded

log = logging.getLogger(__name__)

STAGE = "filter"


class FilterActor:
    """Ray Data callable class for GPU filtering: the text detector loads once per actor, on its GPU."""

    def __init__(self, config: dict[str, Any]) -> None:
        import torch

        cfg = config_from_dict(config)
        self.work = WorkArea(cfg.output)
        self.filter = ClipFilter(cfg.filter, gpu=torch.cuda.is_available())
        log.info("filter actor: text detection on %s", "GPU" if self.filter.gpu else "CPU")

    def __call__(self, batch: pa.Table) -> pa.Table:
        return resume_or_compute(batch, STAGE, self.work, self._compute)

    def _compute(self, rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        return [run_guarded(STAGE, row, lambda r=row: self.filter.judge(r)) for row in rows]
