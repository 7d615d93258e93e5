"""Running stages on blocks of rows: fusing them into operators, persisting once per task, resuming, capturing errors.

The stages (``curation.stages``) only transform rows. This module gives them the guarantees the
pipeline rests on:

* **Operators.** Consecutive stages that run as plain tasks with equal resources are fused into one
  operator: one Ray task runs a source through download, probe, split, extraction and filtering,
  handing files over on the local scratch disk. A stage with an actor pool (captioning, filtering
  on GPUs) is an operator of its own.
* **State at the granularity of work.** An operator persists what one task produced as *one*
  object, ``work/state/<last stage>/<partition>/<block>.parquet``, before returning it; files it
  made (clips, and downloads a later job needs) are moved into the work area first. With one
  source per task that is one state object per source per job, whatever its clip count.
* **Resume.** ``frontier`` rebuilds, from the state of one partition, each of its rows as far as
  earlier runs took it; an operator takes only rows that are exactly at its input stage, so a
  resubmitted job redoes only the tasks whose state was not written.
* **Errors.** A ``Rejection`` rejects its row. Any other exception of a batch is retried row by
  row, and then costs only its row (``internal_error``). Environment errors (a full disk, an object
  store that fails, memory) are not verdicts on the data: they fail the task, and Ray retries it
  or the job stops, so a rerun redoes the work instead of keeping a wrong rejection.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import traceback
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from curation.config import STAGES, CurationConfig, config_from_dict
from curation.errors import EnvironmentFault, Rejection
from curation.ffmpeg import MACHINE_FAULTS
from curation.stage import JobResources, Resources, Row, Stage, StageContext, reject
from curation.stages import stage_class
from curation.workarea import WorkArea
from shards.schema import STATUS_OK, to_table
from storage import Location, StorageError
from storage.scratch import scratch_dir

log = logging.getLogger(__name__)

#: The stage name of a source row as the input gave it, before any stage ran.
INPUT_STAGE = "manifest"

#: OSError numbers that describe the machine, not the data: the work must be redone, not rejected.
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.EROFS})


def is_environment_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a fault of the machine or the store (retry or fail) rather than of the input."""
    if isinstance(exc, StorageError | MemoryError | EnvironmentFault):
        return True
    # pyarrow's OSErrors carry the errno only in their text ("[errno 28] ... No space left on device")
    return isinstance(exc, OSError) and (exc.errno in ENVIRONMENT_ERRNOS or any(m in str(exc) for m in MACHINE_FAULTS))


def stage_before(stage: str) -> str:
    """The stage whose rows ``stage`` takes (``manifest`` for the first)."""
    index = STAGES.index(stage)
    return STAGES[index - 1] if index else INPUT_STAGE


@dataclass(frozen=True)
class Operator:
    """Consecutive stages run by one Ray Data operator (one task or one actor call per block)."""

    stages: tuple[str, ...]
    resources: Resources
    batch_size: int
    per_clip: bool

    @property
    def name(self) -> str:
        return self.stages[0] if len(self.stages) == 1 else f"{self.stages[0]}-{self.stages[-1]}"

    @property
    def last(self) -> str:
        """The stage under whose name the operator's state is kept."""
        return self.stages[-1]

    @property
    def input_stage(self) -> str:
        return stage_before(self.stages[0])

    @property
    def key_column(self) -> str:
        return "key" if self.per_clip else "source_id"

    def takes(self, row: Row) -> bool:
        return row["status"] == STATUS_OK and row["stage"] == self.input_stage


def plan_operators(cfg: CurationConfig, stages: list[str], job: JobResources) -> list[Operator]:
    """Fuse the job's content stages into operators: plain single-row tasks with equal resources together."""
    operators: list[Operator] = []
    for name in stages:
        cls = stage_class(name)
        resources, batch = cls.resources(cfg, job), cls.batch_size(cfg)
        alone = resources.actors is not None or batch > 1
        previous = operators[-1] if operators else None
        if (previous is not None and not alone and previous.resources == resources and previous.batch_size == 1
                and previous.resources.actors is None):
            operators[-1] = Operator(previous.stages + (name,), resources, 1, previous.per_clip)
        else:
            operators.append(Operator((name,), resources, batch, cls.per_clip))
    return operators


class OperatorWorker:
    """One operator's stages, each set up once, when a row first reaches it; Ray Data calls it per block (as an
    actor, or through ``run_block``)."""

    def __init__(self, config: dict[str, Any], stages: tuple[str, ...], per_clip: bool) -> None:
        self.cfg = config_from_dict(config)
        self.work = WorkArea.of(self.cfg.output)
        self.operator = Operator(stages, Resources(), 1, per_clip)
        self.stages: list[Stage] = [stage_class(name)(self.cfg) for name in stages]
        self.set_up: set[str] = set()

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        mine = [r for r in rows if self.operator.takes(r)]
        if not mine:
            return batch
        others = [r for r in rows if not self.operator.takes(r)]
        with scratch_dir(self.operator.name, self.work.scratch_parent()) as scratch:
            ctx = StageContext(self.work, scratch)
            produced = mine
            for stage in self.stages:
                if any(r["status"] == STATUS_OK for r in produced):
                    self._set_up(stage)
                produced = run_stage(stage, produced, ctx)
            produced = [self._publish(row, ctx) for row in produced]
        self._persist(produced, [r[self.operator.key_column] for r in mine])
        return to_table(others + produced)

    def _set_up(self, stage: Stage) -> None:
        """``stage.setup()`` before the first row that reaches it: a worker whose sources are all rejected
        upstream (or an actor that gets no clip) never loads the text detector, torch or a captioning model.
        Outside the per-row guard: a stage that cannot set up fails the task, it rejects no row."""
        if stage.name not in self.set_up:
            stage.setup()
            self.set_up.add(stage.name)

    def _publish(self, row: Row, ctx: StageContext) -> Row:
        """Move the files the operator made into the work area (those a later stage or job still needs)."""
        scratch = str(ctx.scratch)
        local_path = row.get("local_path")
        if local_path and local_path.startswith(scratch):
            if row["status"] != STATUS_OK or STAGES.index(self.operator.last) >= STAGES.index("extract"):
                row = {**row, "local_path": None}  # cut, or rejected: the download has served
            else:  # a later job extracts: keep the download for it
                dest = self.work.downloads / f"{row['source_id']}{Path(local_path).suffix}"
                dest.upload_from(Path(local_path))
                row = {**row, "local_path": dest.uri}
        clip_path = row.get("clip_path")
        if clip_path and clip_path.startswith(scratch) and row["status"] != STATUS_OK:
            row = {**row, "clip_path": None}  # a rejected clip is not kept: it goes with the scratch
        elif clip_path and clip_path.startswith(scratch) and row.get("key"):
            dest = self.work.clip_location(row["source_id"], row["key"])
            if Path(clip_path).exists():
                dest.upload_from(Path(clip_path))
            row = {**row, "clip_path": dest.uri}
        return row

    def _persist(self, rows: list[Row], input_keys: list[str]) -> None:
        """One state object per partition the rows belong to, named after the block of input."""
        block = input_keys[0] if len(input_keys) == 1 else hashlib.sha256(
            "\n".join(sorted(input_keys)).encode()).hexdigest()[:24]
        by_partition: dict[int, list[Row]] = defaultdict(list)
        for row in rows:
            by_partition[row["partition"]].append(row)
        for partition, part in by_partition.items():
            (self.work.state_dir(self.operator.last, partition) / f"{block}.parquet").write_table(to_table(part))


#: Set-up operator workers of this process, so a Ray worker process reused across tasks sets up once.
_WORKERS: dict[tuple[str, tuple[str, ...]], OperatorWorker] = {}


def run_block(batch: pa.Table, config: dict[str, Any], stages: tuple[str, ...], per_clip: bool) -> pa.Table:
    """Ray Data task function: the operator's stages on one block, with this process's set-up worker."""
    key = (repr(sorted(config.items())), stages)
    if key not in _WORKERS:
        _WORKERS.clear()
        _WORKERS[key] = OperatorWorker(config, stages, per_clip)
    return _WORKERS[key](batch)


def run_stage(stage: Stage, rows: list[Row], ctx: StageContext) -> list[Row]:
    """``stage`` on the ok rows of ``rows`` (rejected ones pass), in its batches, with errors captured."""
    cfg = stage.cfg
    todo = [r for r in rows if r["status"] == STATUS_OK]
    out = [r for r in rows if r["status"] != STATUS_OK]
    worker = _worker()
    for batch in _batches(type(stage), cfg, todo):
        for row in _guarded(stage, batch, ctx):
            out.append({**row, "stage": stage.name, "worker": worker, "status": row.get("status") or STATUS_OK})
    return out


def _batches(stage: type[Stage], cfg: CurationConfig, rows: list[Row]) -> list[list[Row]]:
    """The ``process`` calls of ``rows``: a source's rows together (``whole_source``), else ``batch_size`` rows."""
    if stage.whole_source:
        by_source: dict[str, list[Row]] = defaultdict(list)
        for row in rows:
            by_source[row["source_id"]].append(row)
        return list(by_source.values())
    size = stage.batch_size(cfg)
    return [rows[start:start + size] for start in range(0, len(rows), size)]


def _guarded(stage: Stage, rows: list[Row], ctx: StageContext) -> list[Row]:
    """``stage.process(rows)``; a failing batch is redone row by row, and a failing row becomes its rejection."""
    try:
        return stage.process(rows, ctx)
    except Exception as exc:
        if is_environment_error(exc):
            raise
        if len(rows) > 1:
            log.warning("stage %s failed on a batch of %d rows (%s); processing them one by one", stage.name,
                        len(rows), exc)
            return [r for row in rows for r in _guarded(stage, [row], ctx)]
        (row,) = rows
        if isinstance(exc, Rejection):
            return [reject(row, exc.reason, exc.detail)]
        log.error("stage %s failed on %s:\n%s", stage.name, row.get("key") or row.get("source"),
                  traceback.format_exc())
        return [reject(row, "internal_error", f"{type(exc).__name__}: {exc} (a bug: please report it with this row)")]


@functools.cache
def _worker() -> str:
    """The Ray node this code runs on, as ``ip/node-id-prefix`` (empty outside Ray): provenance of each row."""
    try:
        import ray

        if not ray.is_initialized():
            return ""
        return f"{ray.util.get_node_ip_address()}/{ray.get_runtime_context().get_node_id()[:8]}"
    except Exception:  # provenance must never fail a row
        return ""


# -- resume -----------------------------------------------------------------------------------------


def frontier(work: WorkArea, partition: int, operators: list[Operator], first_stage: str) -> list[Row]:
    """Every row of ``partition`` as far as earlier runs took it, for a job whose first stage is ``first_stage``.

    The partition's sources, overlaid with what the previous job persisted (when this job does not
    start at the download), then with each operator's own state: an input row whose results are
    persisted is replaced by them, so its operator passes it by.
    """
    rows = work.read_sources(partition).to_pylist()
    before = stage_before(first_stage)
    if before != INPUT_STAGE:
        rows = _overlay(rows, work.read_state(before, partition), "source_id",
                        lambda r: r["status"] == STATUS_OK and r["stage"] == INPUT_STAGE)
    for op in operators:
        rows = _overlay(rows, work.read_state(op.last, partition), op.key_column, op.takes)
    return rows


def _overlay(rows: list[Row], state: pa.Table, key: str, applies: Any) -> list[Row]:
    if state.num_rows == 0:
        return rows
    results: dict[str, list[Row]] = defaultdict(list)
    for row in state.to_pylist():
        results[row[key]].append(row)
    out: list[Row] = []
    for row in rows:
        done = results.get(row[key]) if applies(row) else None
        out.extend(done or [row])
    return out


def expand_partitions(batch: pa.Table, output: str, operators: list[dict[str, Any]],
                      first_stage: str) -> Iterator[pa.Table]:
    """Ray Data generator: the rows of each partition in ``batch`` (one row per partition), resumed."""
    work = WorkArea(Location(output))
    ops = [Operator(tuple(o["stages"]), Resources(), 1, o["per_clip"]) for o in operators]
    for partition in batch["partition"].to_pylist():
        yield to_table(frontier(work, partition, ops, first_stage))

