"""The curation job: the selected stages as one streaming Ray Data pipeline, then the shard writer.

``run_curation`` is what both ``videofactory curate`` and ``python -m jobs.curate`` (under
``ray job submit``) call. Stages run as ``map_batches`` operators with the CPUs the config declares,
so Ray Data streams sources through download, probe, split and extraction concurrently and spreads
the tasks over every node of whatever cluster the job was submitted to.

A job may run any contiguous run of stages: the first reads the persisted output of the stage
before it, which is how users split on CPU nodes in one job and caption on GPU nodes in another.
The caption stage is an operator that is not a plain function: a pool of actors that each load
BLIP-2 once (``curation.caption_stage``); so is the filter stage when its text detector gets GPUs
(``curation.filter_stage``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from curation.caption import check_weights, weights_bytes
from curation.caption_stage import CaptionActor, read_actor_times
from curation.config import STAGES, CurationConfig
from curation.ffmpeg import require_tools
from curation.filter_stage import FilterActor
from curation.filters.text import model_dir as text_model_dir
from curation.manifest import read_sources
from curation.stages import WorkArea, previous_stage, run_stage, write_atomically
from curation.write import write_corpus
from shards.schema import STATUS_OK, STATUS_REJECTED

log = logging.getLogger(__name__)

#: Memory of a caption actor besides its model's weights: Python, torch, transformers, a batch of frames
#: (Ray Data measured 0.6 GiB for the tiny model).
ACTOR_RUNTIME_BYTES = 1024**3

#: Upper bound on the number of input blocks, so huge manifests still make a sane number of tasks.
MAX_INPUT_BLOCKS = 10_000


@dataclass
class RunSummary:
    """What a run did, for logs and for the caller."""

    stages: list[str]
    sources: int = 0
    rows: Counter = field(default_factory=Counter)  # (stage, status) -> rows seen leaving the pipeline
    corpus: dict[str, Any] = field(default_factory=dict)  # the write stage's manifest counts
    seconds: float = 0.0


def run_curation(cfg: CurationConfig) -> RunSummary:
    """Run the configured stages on the configured input; resume whatever an earlier run left."""
    cfg.validate()
    require_tools()
    started, wall_started = time.monotonic(), time.time()
    stages = cfg.ordered_stages()
    _check_contiguous(stages)
    work = WorkArea(cfg.output)
    if "filter" in stages and cfg.filter.enabled and cfg.filter.text.enabled:
        text_model_dir()  # missing OCR weights stop the job here, with the package to install
    for stage in stages:
        work.check_fingerprint(stage, cfg.fingerprint(stage))
    summary = RunSummary(stages=stages)

    sources = _sources(cfg, work, fresh="download" in stages)
    summary.sources = sources.num_rows
    processing = [s for s in stages if s != "write"]
    if processing:
        dataset = _input_dataset(processing[0], sources, cfg, work)
        for stage in processing:
            if stage == "caption" and cfg.caption.enabled:
                dataset = _caption_operator(dataset, cfg)
                continue
            filter_gpus = _filter_gpus(cfg, processing) if stage == "filter" else 0
            if filter_gpus:
                dataset = _filter_operator(dataset, cfg, filter_gpus)
                continue
            dataset = dataset.map_batches(
                _named_stage(stage, cfg.to_dict()),
                batch_size=1,
                batch_format="pyarrow",
                num_cpus=getattr(cfg.resources, f"{stage}_cpus"),
            )
        _consume(dataset, summary)
        if "caption" in processing and cfg.caption.enabled:
            _log_caption_actors(work, since=wall_started)
    if "write" in stages:
        summary.corpus = write_corpus(cfg, work, sources)
    summary.seconds = time.monotonic() - started
    return summary


def _caption_operator(dataset: ray.data.Dataset, cfg: CurationConfig) -> ray.data.Dataset:
    """The caption stage: a pool of ``caption.actors`` actors, each holding one copy of the model.

    The model directory is checked here, before any work starts, and handed to the actors as an
    absolute path (they may run in another working directory than the driver).
    """
    config = cfg.to_dict()
    model_dir = check_weights(cfg.caption.model_path)
    config["caption"]["model_path"] = str(model_dir)
    num_gpus = _stage_gpus(cfg.caption.num_gpus, "caption.num_gpus")
    remote_args = {}
    if not num_gpus:
        # A CPU actor holds the model in RAM for its life: declared, Ray never packs more actors on a
        # node than fit. It also keeps Ray Data from fusing the CPU stages upstream into the actors
        # (equal resources would), which would run them on only ``caption.actors`` workers.
        remote_args["memory"] = weights_bytes(model_dir) + ACTOR_RUNTIME_BYTES
    log.info("caption stage: %d actor(s), %s GPU and %s CPU each, %d clips per batch", cfg.caption.actors,
             num_gpus, cfg.resources.caption_cpus, cfg.caption.batch_size)
    return dataset.map_batches(
        CaptionActor,
        fn_constructor_kwargs={"config": config},
        batch_size=cfg.caption.batch_size,
        batch_format="pyarrow",
        concurrency=cfg.caption.actors,
        num_cpus=cfg.resources.caption_cpus,
        num_gpus=num_gpus,
        **remote_args,
    )


def _stage_gpus(requested: float | None, option: str) -> float:
    """GPUs per actor of a stage: ``requested``, or (None) one when the cluster has GPUs; refused if it has none."""
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    if requested is None:
        return 1 if cluster_gpus else 0
    if requested > 0 and not cluster_gpus:
        raise ValueError(f"{option} is {requested} but the Ray cluster has no GPU; the actors could never start. "
                         f"Set {option}: 0 (or null) to run on CPUs, or add GPU nodes.")
    return requested


def _filter_gpus(cfg: CurationConfig, stages: list[str]) -> float:
    """GPUs per filter actor; 0 when the stage runs as plain CPU tasks (see ``curation.filter_stage``).

    Automatic (``filter.num_gpus: null``): one GPU, if the cluster has one left after the caption
    actors of the same job took theirs. Both pools hold their GPUs for the whole job, so on a
    one-GPU machine a filter actor would keep the caption actors from ever starting: there the
    filter detects text on CPUs, unless it runs in a job of its own (``--stages ...,filter``).
    """
    if not (cfg.filter.enabled and cfg.filter.text.enabled):
        return 0
    if cfg.filter.num_gpus is not None:
        return _stage_gpus(cfg.filter.num_gpus, "filter.num_gpus")
    captioning = "caption" in stages and cfg.caption.enabled
    held = cfg.caption.actors * _stage_gpus(cfg.caption.num_gpus, "caption.num_gpus") if captioning else 0
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    free = cluster_gpus - held
    if cluster_gpus and free < 1:
        log.info("filter stage: the cluster's GPUs go to the caption actors, so text detection runs on CPUs; run "
                 "the filter in a job of its own, or set filter.num_gpus, to detect text on a GPU")
    return 1 if free >= 1 else 0


def _filter_operator(dataset: ray.data.Dataset, cfg: CurationConfig, num_gpus: float) -> ray.data.Dataset:
    """The filter stage on GPUs: ``filter.actors`` actors, each loading the text detector once on its GPU."""
    log.info("filter stage: %d actor(s), %s GPU and %s CPU each", cfg.filter.actors, num_gpus,
             cfg.resources.filter_cpus)
    return dataset.map_batches(FilterActor, fn_constructor_kwargs={"config": cfg.to_dict()}, batch_size=1,
                               batch_format="pyarrow", concurrency=cfg.filter.actors,
                               num_cpus=cfg.resources.filter_cpus, num_gpus=num_gpus)


def _log_caption_actors(work: WorkArea, since: float) -> None:
    """How busy this run's caption actors (those that recorded after ``since``, a ``time.time()``) were.

    Time spent waiting for input means the upstream stages starve them: add CPUs or split the job.
    """
    records = [r for r in read_actor_times(work) if r["clips"] and r["updated"] >= since]
    busy, wait = sum(r["busy_s"] for r in records), sum(r["wait_s"] for r in records)
    if records:
        log.info("caption actors: %d clips in %.1f s captioning, %.1f s waiting for input (%.0f%% busy)",
                 sum(r["clips"] for r in records), busy, wait, 100 * busy / max(busy + wait, 1e-9))


def _named_stage(stage: str, config: dict[str, Any]) -> Callable[[pa.Table], pa.Table]:
    """``run_stage`` for one stage, named after it so Ray Data's progress bars and logs say which is which."""

    def batch_fn(batch: pa.Table) -> pa.Table:
        return run_stage(batch, stage, config)

    batch_fn.__name__ = batch_fn.__qualname__ = stage
    return batch_fn


def _check_contiguous(stages: list[str]) -> None:
    indices = [STAGES.index(s) for s in stages]
    if indices != list(range(indices[0], indices[0] + len(indices))):
        raise ValueError(f"stages {stages} skip a stage in between; run a contiguous range of {', '.join(STAGES)}")


def _sources(cfg: CurationConfig, work: WorkArea, fresh: bool) -> pa.Table:
    """The job's sources: read from the input when downloading, else the ones a download job recorded."""
    if fresh or not work.sources.exists():
        table = read_sources(cfg)
        write_atomically(table, work.sources)
        log.info("input %s: %d sources", cfg.input, table.num_rows)
        return table
    return pq.read_table(work.sources)


def _input_dataset(first: str, sources: pa.Table, cfg: CurationConfig, work: WorkArea) -> ray.data.Dataset:
    """Rows the first stage of this job starts from, in enough blocks to keep the cluster busy."""
    if first == "download":
        table = sources.filter(pc.equal(sources["status"], STATUS_OK))
    else:
        table = work.read_stage(previous_stage(first))
        table = table.filter(pc.and_(pc.equal(table["status"], STATUS_OK),
                                     pc.is_in(table["source_id"], value_set=sources["source_id"])))
        if table.num_rows == 0:
            raise ValueError(f"stage '{previous_stage(first)}' has no results in {work.root}; run it first")
    rows_per_block = max(cfg.resources.sources_per_block, math.ceil(table.num_rows / MAX_INPUT_BLOCKS))
    blocks = [table.slice(i, rows_per_block) for i in range(0, table.num_rows, rows_per_block)]
    return ray.data.from_arrow(blocks or [table])


def _consume(dataset: ray.data.Dataset, summary: RunSummary) -> None:
    """Pull rows through the pipeline, logging what leaves it."""
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        for stage, status in zip(batch["stage"].to_pylist(), batch["status"].to_pylist()):
            summary.rows[(stage, status)] += 1
    ok = sum(n for (_, status), n in summary.rows.items() if status == STATUS_OK)
    rejected = {stage: n for (stage, status), n in summary.rows.items() if status == STATUS_REJECTED}
    log.info("pipeline done: %d clips ready, rejections by stage: %s", ok, rejected or "none")
