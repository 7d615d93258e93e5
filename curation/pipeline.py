"""The curation job: ingest, the stages as one streaming Ray Data pipeline, partitions written as they finish.

``run_curation`` is what both ``videofactory curate`` and ``python -m jobs.curate`` (under
``ray job submit``) call. The driver only steers:

1. **Ingest** (``curation.ingest``): the input is read, partitioned and de-duplicated by Ray Data
   and written as one sources object per partition.
2. **Stages**: one Ray Data dataset whose input is the list of partitions still to do; a first
   operator expands each into its rows as far as earlier runs took them (``runner.frontier``), in
   blocks of ``resources.sources_per_block`` rows, and the job's stages follow as operators
   (``runner.plan_operators``). Partitions go in order, so they also finish roughly in order.
3. **Write**: the driver sorts the rows leaving the pipeline by partition; as soon as every source
   of a partition is in, a Ray task writes that partition (``curation.write``). The driver holds
   only the rows of partitions still open, never the corpus.
4. **Manifest** (``curation.summary``): the partitions' records summed up.

A job may run any contiguous run of stages: the first reads what the job before it persisted.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import ray
from tqdm import tqdm

from curation.config import STAGES, CurationConfig
from curation.copies import EXACT, find_copies
from curation.ffmpeg import require_tools
from curation.ingest import ingest
from curation.lease import Lease, acquire
from curation.neardup import NEAR, find_near_duplicates
from curation.runner import Operator, OperatorWorker, expand_partitions, is_environment_error, plan_operators, run_block
from curation.stage import JobResources
from curation.stages import stage_class
from curation.stages.caption import read_actor_times
from curation.summary import write_manifest
from curation.workarea import WorkArea
from curation.write import write_partition
from shards.schema import STATUS_OK, STATUS_REJECTED, to_table
from storage import Location, check_access

log = logging.getLogger(__name__)

#: Partition-writing tasks in flight before the driver waits for one (each holds one partition's rows).
MAX_WRITES_IN_FLIGHT = 16


@dataclass
class RunSummary:
    """What a run did, for logs and for the caller."""

    stages: list[str]
    sources: int = 0
    partitions: int = 0  # partitions this run processed (the others were already written)
    rows: Counter = field(default_factory=Counter)  # (stage, status) -> rows seen leaving the pipeline
    corpus: dict[str, Any] = field(default_factory=dict)  # the manifest's counts
    seconds: float = 0.0


def run_curation(cfg: CurationConfig) -> RunSummary:
    """Run the configured stages on the configured input; resume whatever an earlier run left."""
    cfg.check()
    require_tools()
    started, wall_started = time.monotonic(), time.time()
    stages = cfg.ordered_stages()
    _check_contiguous(stages)
    work = WorkArea(Location(cfg.output))
    check_access(work.output, write=True)
    lease = acquire(work)
    try:
        summary = _run(cfg, work, stages, lease, wall_started)
    finally:
        lease.release()
    summary.seconds = time.monotonic() - started
    return summary


def _run(cfg: CurationConfig, work: WorkArea, stages: list[str], lease: Lease, wall_started: float) -> RunSummary:
    """The job itself, while it holds the output's lease."""
    content = [s for s in stages if s != "write"]
    for stage in content:
        stage_class(stage).check(cfg)
    if "download" in stages:
        partitions, count = ingest(cfg, work)
    else:
        partitions = work.read_partition_table()
        count = work.partitions(cfg.write.partitions, int(sum(partitions["sources"].to_pylist())),
                                cfg.write.sources_per_partition)
    cfg.write.partitions = count
    for stage in stages:
        work.check_fingerprint(stage, cfg.fingerprint(stage))
    summary = RunSummary(stages=stages, sources=int(sum(partitions["sources"].to_pylist())))

    writing = "write" in stages
    expected = dict(zip(partitions["partition"].to_pylist(), partitions["sources"].to_pylist(), strict=True))
    sources = dict(zip(partitions["partition"].to_pylist(), partitions["digest"].to_pylist(), strict=True))
    stage_times: dict[str, Any] = {}
    todo = sorted(expected)
    kinds = (EXACT, NEAR)
    for round_ in range(2):  # a second round writes again the partitions whose copies or near-duplicates changed
        records = work.written_records() if writing else {}
        dedup = {kind.name: work.dedup_records(kind.name) if writing else {} for kind in kinds}
        digests = {p: _digest(cfg, sources[p], [dedup[k.name].get(p, ("", None))[0] for k in kinds]) for p in todo}
        todo = [p for p in todo if records.get(p, ("", None))[0] != digests[p]]
        if round_ == 0:
            summary.partitions = len(todo)
            log.info("%d partition(s) of %d to process (%d already written)", len(todo), len(expected),
                     len(expected) - len(todo))
        if todo:
            times = _process(cfg, work, stages, lease, {p: expected[p] for p in todo}, digests,
                             {p: loc.uri for p, (_, loc) in records.items()},
                             {name: {p: loc.uri for p, (_, loc) in found.items()} for name, found in dedup.items()},
                             summary if round_ == 0 else RunSummary(stages=stages))  # rows counted once
            stage_times = stage_times or times
            if "caption" in content and cfg.caption.enabled:
                _log_caption_actors(work, since=wall_started)
        if not writing:
            break
        changed = find_copies(work, sorted(expected), summary.sources)
        changed |= find_near_duplicates(work, sorted(expected), summary.sources,
                                        cfg.filter.near_duplicates if cfg.filter.enabled else None)
        todo = sorted(changed & set(expected))
        if not todo:
            break
    if writing:
        lease.check()
        summary.corpus = write_manifest(cfg, work, partitions, count, stage_times)
    return summary


def _digest(cfg: CurationConfig, sources: str, dedup: list[str]) -> str:
    """What a written partition must match to be skipped: the config, its sources, its exact copies and
    near-duplicates (the digests of their decisions, "" where it has none)."""
    if not any(dedup):
        return f"{cfg.fingerprint('write')}{sources}"[:32]
    return hashlib.sha256(f"{cfg.fingerprint('write')}{sources}{''.join(dedup)}".encode()).hexdigest()[:32]


def _process(cfg: CurationConfig, work: WorkArea, stages: list[str], lease: Lease, expected: dict[int, int],
             digests: dict[int, str], records: dict[int, str], dedup: dict[str, dict[int, str]],
             summary: RunSummary) -> dict[str, Any]:
    """Run the job's stages over the partitions of ``expected`` and write each as it completes."""
    content = [s for s in stages if s != "write"]
    operators = plan_operators(cfg, content, JobResources(ray.cluster_resources().get("GPU", 0), tuple(stages)))
    log.info("operators: %s", ", ".join(f"{op.name} ({_describe(op)})" for op in operators) or "none")
    dataset = _dataset(cfg, work, operators, sorted(expected), stages[0])
    writer = _PartitionWriter(cfg, expected, digests, records, dedup) if "write" in stages else None
    try:
        stage_times = _consume(dataset, summary, writer, lease)
        if writer is not None:
            stage_times["write"] = writer.finish()
    except Exception as exc:
        fault = _machine_fault(exc)
        if fault is None:
            raise
        raise RuntimeError(f"the job stopped on a fault of the machine or the store, not of the data: {fault}. "
                           "Nothing was recorded against the input; fix it and rerun the job, which resumes "
                           "where it stopped.") from None
    return stage_times


def _machine_fault(exc: BaseException) -> BaseException | None:
    """The environment error at the root of a failed task (Ray wraps it several times), if that is what it was."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if is_environment_error(exc):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
    return None


def _describe(op: Operator) -> str:
    r = op.resources
    pool = f"{r.actors} actor(s)" if r.actors is not None else "tasks"
    return f"{pool}, {r.num_cpus} CPU, {r.num_gpus} GPU, {op.batch_size} row(s) a call"


def _dataset(cfg: CurationConfig, work: WorkArea, operators: list[Operator], todo: list[int],
             first_stage: str) -> ray.data.Dataset:
    """The pipeline: partitions expanded into resumed rows, then every operator of the job."""
    context = ray.data.DataContext.get_current()
    # A task's own exception reaches the driver (not Ray Data's wrapper of it), so a fault of the machine
    # is told from a bug and reported as such.
    context.raise_original_map_exception = True
    config = cfg.to_dict()
    dataset = ray.data.from_items([{"partition": p} for p in todo]).map_batches(
        expand_partitions, batch_size=1, batch_format="pyarrow", num_cpus=0.25,
        fn_kwargs={"output": work.output.uri, "first_stage": first_stage,
                   "operators": [{"stages": list(op.stages), "per_clip": op.per_clip} for op in operators]})
    if operators:
        # A partition expands into one block; split it (streaming, no barrier) so that every block of
        # ``sources_per_block`` rows is a task of its own and the cluster stays busy. Blocks made by the
        # stages stay whole: one per source, however many clips it has. (Rows resumed from state are
        # split too: a resumed job hands the driver one block per finished row.)
        dataset = dataset.repartition(target_num_rows_per_block=cfg.resources.sources_per_block)
    for op in operators:
        r = op.resources
        remote = {"num_cpus": r.num_cpus, "num_gpus": r.num_gpus or None}
        if r.memory is not None:
            remote["memory"] = r.memory
        args = {"config": config, "stages": op.stages, "per_clip": op.per_clip}
        if r.actors is not None:
            dataset = dataset.map_batches(OperatorWorker, fn_constructor_kwargs=args, batch_size=op.batch_size,
                                          batch_format="pyarrow", concurrency=r.actors, **remote)
        else:
            dataset = dataset.map_batches(_named(op.name), fn_kwargs=args, batch_size=op.batch_size,
                                          batch_format="pyarrow", **remote)
    return dataset


def _named(name: str) -> Callable[..., pa.Table]:
    """``run_block`` under the operator's name, so Ray Data's progress bars and logs say which is which."""

    def block_fn(batch: pa.Table, **kwargs: Any) -> pa.Table:
        return run_block(batch, **kwargs)

    block_fn.__name__ = block_fn.__qualname__ = name
    return block_fn


class _PartitionWriter:
    """Collects the pipeline's rows by partition; writes each partition in a Ray task once all its sources are in."""

    def __init__(self, cfg: CurationConfig, expected: dict[int, int], digests: dict[int, str],
                 previous: dict[int, str], dedup: dict[str, dict[int, str]]) -> None:
        self.config = cfg.to_dict()
        self.expected, self.digests, self.previous, self.dedup = expected, digests, previous, dedup
        self.task = ray.remote(write_partition).options(num_cpus=cfg.write.write_cpus)
        self.rows: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.seen: Counter = Counter()  # rows seen of each source still open
        self.done: Counter = Counter()  # finished sources of each partition
        self.in_flight: list[ray.ObjectRef] = []
        self.seconds = 0.0
        self.progress = tqdm(total=len(expected), desc="partitions written", unit="partition", leave=True)

    def add(self, batch: pa.Table) -> None:
        for row in batch.to_pylist():
            partition, source = row["partition"], row["source_id"]
            self.rows[partition].append(row)
            self.seen[source] += 1
            if self.seen[source] >= (row["source_rows"] or 1):
                del self.seen[source]
                self.done[partition] += 1
                if self.done[partition] == self.expected[partition]:
                    self._submit(partition)

    def _submit(self, partition: int) -> None:
        rows = to_table(self.rows.pop(partition, []))
        self.in_flight.append(self.task.remote(self.config, partition, rows, self.digests[partition],
                                                 self.previous.get(partition),
                                                 {name: found[partition] for name, found in self.dedup.items()
                                                  if partition in found}))
        while len(self.in_flight) > MAX_WRITES_IN_FLIGHT:
            self._collect(1)

    def _collect(self, n: int) -> None:
        ready, self.in_flight = ray.wait(self.in_flight, num_returns=n)
        for record in ray.get(ready):
            self.seconds += record["seconds"]
            self.progress.update(1)
            self.progress.set_postfix_str(f"p{record['partition']:05d}: {record['clips']} clips, "
                                          f"{len(record['shards'])} shard(s)")

    def finish(self) -> dict[str, Any]:
        """Write the partitions still open (sources without a full result become ``no_result``); wait for all."""
        for partition in [p for p in self.expected if p not in self.done or self.done[p] < self.expected[p]]:
            log.warning("partition %d: %d of %d sources finished; writing it with the others as no_result",
                        partition, self.done[partition], self.expected[partition])
            self._submit(partition)
        self._collect(len(self.in_flight))
        self.progress.close()
        return {"seconds": round(self.seconds, 3), "results": len(self.expected)}


def _consume(dataset: ray.data.Dataset, summary: RunSummary, writer: _PartitionWriter | None,
             lease: Lease) -> dict[str, Any]:
    """Pull rows through the pipeline, hand them to the writer, and time when each stage's rows left it."""
    first: dict[str, datetime] = {}
    last: dict[str, datetime] = {}
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        lease.check()
        now = datetime.now(UTC)
        for stage, status in zip(batch["stage"].to_pylist(), batch["status"].to_pylist(), strict=True):
            summary.rows[(stage, status)] += 1
            first.setdefault(stage, now)
            last[stage] = now
        if writer is not None:
            writer.add(batch)
    ok = sum(n for (_, status), n in summary.rows.items() if status == STATUS_OK)
    rejected = {stage: n for (stage, status), n in summary.rows.items() if status == STATUS_REJECTED}
    log.info("pipeline done: %d clips ready, rejections by stage: %s", ok, rejected or "none")
    results: Counter = Counter()
    for (stage, _), n in summary.rows.items():
        results[stage] += n
    return {stage: {"results": results[stage], "first": first[stage].isoformat(timespec="seconds"),
                    "last": last[stage].isoformat(timespec="seconds"),
                    "seconds": round((last[stage] - first[stage]).total_seconds(), 3)} for stage in first}


def _log_caption_actors(work: WorkArea, since: float) -> None:
    """How busy this run's caption actors were: time spent waiting means the upstream stages starve them."""
    records = [r for r in read_actor_times(work) if r["clips"] and r["updated"] >= since]
    busy, wait = sum(r["busy_s"] for r in records), sum(r["wait_s"] for r in records)
    if records:
        log.info("caption actors: %d clips in %.1f s captioning, %.1f s waiting for input (%.0f%% busy)",
                 sum(r["clips"] for r in records), busy, wait, 100 * busy / max(busy + wait, 1e-9))


def _check_contiguous(stages: list[str]) -> None:
    indices = [STAGES.index(s) for s in stages]
    if indices != list(range(indices[0], indices[0] + len(indices))):
        raise ValueError(f"stages {stages} skip a stage in between; run a contiguous range of {', '.join(STAGES)}")
