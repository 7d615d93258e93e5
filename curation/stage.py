"""The one contract every curation stage fulfils, and the context it works in.

A stage is a class (the Ray Data callable-class pattern, as video2dataset's subsamplers are one
contract): built from the config, ``setup()`` once per worker or actor to load what is expensive (before
the first row that reaches the stage: one whose rows were all rejected upstream never loads it), then
``process(rows)`` on batches of rows. It knows nothing of Ray, of persistence or of resume;
``curation.runner`` owns those. A stage

* takes rows of one granularity (``per_clip``: clips, or sources) that the stage before it produced,
* returns the rows it produces, each carrying ``source_id`` (and ``key`` for clips): one per input
  row, several (the split), or a rejected row (``reject``),
* rejects one input by raising ``Rejection`` when it processes a single row; the runner turns any
  other exception of a batch into a retry row by row, so a failure costs only the row that causes it,
* declares its resources for the scheduler (``resources``), and checks at the job's start what
  would otherwise fail every row (missing weights: ``check``).

Adding a stage is one module under ``curation/stages/`` plus its config section and its place in
``curation.config.STAGES``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from curation.config import CurationConfig
from curation.workarea import WorkArea
from shards.schema import STATUS_REJECTED
from storage.scratch import local_copy

Row = dict[str, Any]


@dataclass(frozen=True)
class Resources:
    """What one task or actor of a stage asks Ray for."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int | None = None  # bytes to reserve (a model held in RAM); None: Ray's default
    actors: int | None = None  # a pool of this many actors, each set up once; None: plain tasks


@dataclass(frozen=True)
class JobResources:
    """What the job has to share out, as the runner learnt it from the cluster."""

    cluster_gpus: float = 0.0
    stages: tuple[str, ...] = ()  # the stages this job runs

    def gpus(self, requested: float | None, option: str) -> float:
        """GPUs per actor: ``requested``, or (None) one when the cluster has GPUs; refused if it has none."""
        if requested is None:
            return 1 if self.cluster_gpus else 0
        if requested > 0 and not self.cluster_gpus:
            raise ValueError(f"{option} is {requested} but the Ray cluster has no GPU; the actors could never "
                             f"start. Set {option}: 0 (or null) to run on CPUs, or add GPU nodes.")
        return requested


@dataclass
class StageContext:
    """Where a stage's task may put files, and how it reads files that live in the work area or a store."""

    work: WorkArea
    scratch: Path  # private to this task, removed when it ends
    cache: dict[str, Path] = field(default_factory=dict)

    def local(self, uri: str) -> Path:
        """A local file with the content of ``uri`` (a local path, or a copy of an object in the scratch)."""
        if uri not in self.cache:
            self.cache[uri] = local_copy(uri, self.scratch)
        return self.cache[uri]


class Stage:
    """Base class of the stages; see the module docstring for the contract."""

    name: ClassVar[str]
    per_clip: ClassVar[bool] = False
    #: ``process`` gets all the rows of one source at once (a per-clip stage that shares work between a
    #: source's clips, such as one decode); a failing call is redone row by row, as any batch is.
    whole_source: ClassVar[bool] = False
    #: Columns holding files the stage writes into the scratch directory, and where the work area keeps them.
    produces_files: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: CurationConfig) -> None:
        self.cfg = cfg

    @classmethod
    def resources(cls, cfg: CurationConfig, job: JobResources) -> Resources:
        """Resources of one task (the stage's ``resources.<name>_cpus``), overridden by stages with actors."""
        return Resources(num_cpus=getattr(cfg.resources, f"{cls.name}_cpus"))

    @classmethod
    def batch_size(cls, cfg: CurationConfig) -> int:
        """Rows per ``process`` call."""
        return 1

    @classmethod
    def check(cls, cfg: CurationConfig) -> None:
        """Fail the job at its start when the stage could not work at all (the default: nothing to check)."""

    def setup(self) -> None:
        """Load what is expensive, once per worker process or actor, before its first rows."""

    def process(self, rows: list[Row], ctx: StageContext) -> list[Row]:
        raise NotImplementedError


def reject(row: Row, reason: str, detail: str) -> Row:
    """``row`` rejected, for stages that return rejections instead of raising (batched stages)."""
    return {**row, "status": STATUS_REJECTED, "reason": reason, "detail": detail}
