"""Filter stage: one decode per clip feeding the quality, motion, text and watermark filters.

What a clip is judged by lives in ``curation.filtering``; this module is how the stage runs.

On CPUs the stage is a plain task: with equal CPUs the runner fuses it with download, probe, split
and extraction into one task per source, so a clip is filtered by the worker that just cut it, with
no hand-over. The text detector still loads only once per worker process (Ray reuses worker
processes across tasks, and the runner keeps set-up stages per process).

With GPUs the stage is a pool of ``filter.actors`` actors, each loading the detector once on its GPU
(a GPU task would get a fresh process, and reload the detector, for every clip). Automatic
(``filter.num_gpus: null``): one GPU, if the cluster has one left after this job's caption actors;
both pools hold their GPUs for the whole job, so on a one-GPU machine a filter actor would keep
the caption actors from ever starting: there the filter detects text on CPUs, unless it runs in a
job of its own (``--stages ...,filter``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from curation.config import CurationConfig
from curation.filtering import ClipFilter
from curation.filters.aesthetic import WEIGHTS_HELP
from curation.filters.aesthetic import availability as aesthetic_availability
from curation.filters.text import model_dir as text_model_dir
from curation.stage import JobResources, Resources, Row, Stage, StageContext

log = logging.getLogger(__name__)


class Filter(Stage):
    name = "filter"
    per_clip = True

    @classmethod
    def check(cls, cfg: CurationConfig) -> None:
        if cfg.filter.enabled and cfg.filter.text.enabled:
            text_model_dir()  # missing OCR weights stop the job here, with the package to install
        near = cfg.filter.near_duplicates
        if cfg.filter.enabled and near.enabled and near.mode == "embedding" and not Path(near.clip_model).is_dir():
            raise ValueError(f"filter.near_duplicates.mode is embedding but filter.near_duplicates.clip_model "
                             f"{near.clip_model!r} is not a directory; {WEIGHTS_HELP}")
        off = aesthetic_availability(cfg.filter.aesthetic)
        if cfg.filter.enabled and cfg.filter.aesthetic.enabled and off:
            log.warning("filter stage: %s", off)  # off by default where the weights are absent, not an error

    @classmethod
    def resources(cls, cfg: CurationConfig, job: JobResources) -> Resources:
        gpus = _filter_gpus(cfg, job)
        if not gpus:
            return super().resources(cfg, job)
        log.info("filter stage: %d actor(s), %s GPU and %s CPU each", cfg.filter.actors, gpus,
                 cfg.resources.filter_cpus)
        return Resources(num_cpus=cfg.resources.filter_cpus, num_gpus=gpus, actors=cfg.filter.actors)

    def setup(self) -> None:
        import torch

        self.filter = ClipFilter(self.cfg.filter, gpu=torch.cuda.is_available())

    def process(self, rows: list[Row], ctx: StageContext) -> list[Row]:
        (row,) = rows
        if not self.cfg.filter.enabled:
            return [{**row, "scores": json.dumps({})}]
        judged = self.filter.judge({**row, "clip_path": str(ctx.local(row["clip_path"]))})
        return [{**r, "clip_path": row["clip_path"]} for r in judged]


def _filter_gpus(cfg: CurationConfig, job: JobResources) -> float:
    """GPUs per filter actor; 0 when the stage runs as plain CPU tasks."""
    if not (cfg.filter.enabled and cfg.filter.text.enabled):
        return 0
    if cfg.filter.num_gpus is not None:
        return job.gpus(cfg.filter.num_gpus, "filter.num_gpus")
    captioning = "caption" in job.stages and cfg.caption.enabled
    held = cfg.caption.actors * job.gpus(cfg.caption.num_gpus, "caption.num_gpus") if captioning else 0
    free = job.cluster_gpus - held
    if job.cluster_gpus and free < 1:
        log.info("filter stage: the cluster's GPUs go to the caption actors, so text detection runs on CPUs; run "
                 "the filter in a job of its own, or set filter.num_gpus, to detect text on a GPU")
    return 1 if free >= 1 else 0


STAGE = Filter
