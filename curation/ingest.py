"""Ingest: the job's input, partitioned and de-duplicated, as one sources object per partition.

The input is streamed through Ray Data (``curation.manifest``), each source given its id and
partition, and grouped by partition in a distributed shuffle, so no process ever holds the whole
input. Each partition's sources are written to ``work/sources/pNNNNN.parquet``; the driver keeps
one small row per partition (its source count and a digest of its sources), which is what tells a
rerun which partitions changed.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import ray

from curation.config import CurationConfig
from curation.manifest import assign_ids, dedupe, source_dataset
from curation.workarea import PARTITIONS_TABLE, WorkArea

log = logging.getLogger(__name__)

#: Inputs up to this many sources are partitioned in the driver (tens of MB); larger ones by a distributed
#: shuffle, whose start-up (about 15 s on two cores) would dominate a small job.
DRIVER_INGEST_MAX_SOURCES = 100_000

#: Partition sources objects written at once by the driver.
WRITE_THREADS = 16

#: Ray Data's own default partition count for a groupby; fewer when the corpus has fewer partitions.
MAX_SHUFFLE_PARTITIONS = 200

PARTITION_TABLE_SCHEMA = pa.schema([pa.field("partition", pa.int32()), pa.field("sources", pa.int64()),
                                    pa.field("digest", pa.string())])


def ingest(cfg: CurationConfig, work: WorkArea) -> tuple[pa.Table, int]:
    """Write the input's sources by partition; return the partition table and the partition count."""
    dataset = source_dataset(cfg).materialize()
    count = dataset.count()
    if count == 0:
        raise ValueError(f"input {cfg.input} lists no source (an empty manifest?): nothing to curate")
    partitions = work.partitions(cfg.write.partitions, count, cfg.write.sources_per_partition)
    if count <= DRIVER_INGEST_MAX_SOURCES:
        table = _partition_in_driver(dataset, partitions, work)
    else:
        written = (
            dataset.map_batches(assign_ids, fn_kwargs={"partitions": partitions}, batch_format="pyarrow")
            .groupby("partition", num_partitions=min(partitions, MAX_SHUFFLE_PARTITIONS))
            .map_groups(_write_partition_sources, fn_kwargs={"output": work.output.uri}, batch_format="pyarrow")
            .take_all()
        )
        table = pa.Table.from_pylist(written, schema=PARTITION_TABLE_SCHEMA)
    table = table.sort_by("partition")
    _remove_emptied(work, set(table["partition"].to_pylist()))
    (work.sources / PARTITIONS_TABLE).write_table(table)
    log.info("input %s: %d sources in %d of %d partitions", cfg.input, count, table.num_rows, partitions)
    return table, partitions


def _partition_in_driver(dataset: ray.data.Dataset, partitions: int, work: WorkArea) -> pa.Table:
    """The same partitioning, done here: a small input is a few MB, and a shuffle's start-up would cost more."""
    sources = assign_ids(pa.concat_tables(ray.get(dataset.to_arrow_refs())), partitions).sort_by("partition")
    column = sources["partition"].to_numpy()
    starts = [0, *(i for i in range(1, len(column)) if column[i] != column[i - 1]), len(column)]
    groups = [sources.slice(a, b - a) for a, b in zip(starts, starts[1:]) if b > a]
    with ThreadPoolExecutor(WRITE_THREADS) as pool:  # object-store PUTs are latency-bound
        return pa.concat_tables(pool.map(lambda g: _write_partition_sources(g, work.output.uri), groups))


def _write_partition_sources(group: pa.Table, output: str) -> pa.Table:
    """Ray Data group function: one partition's sources, de-duplicated, written; its row of the partition table."""
    sources = dedupe(group)
    partition = sources["partition"][0].as_py()
    WorkArea.of(output).partition_sources(partition).write_table(sources)
    return pa.table({"partition": [partition], "sources": [sources.num_rows], "digest": [sources_digest(sources)]},
                    schema=PARTITION_TABLE_SCHEMA)


def sources_digest(sources: pa.Table) -> str:
    """What decides a partition's content on the input side: its sources and their extra columns."""
    digest = hashlib.sha256()
    for sid, source, extra in zip(*(sources[c].to_pylist() for c in ("source_id", "source", "extra")), strict=True):
        digest.update(f"{sid}\t{source}\t{extra}\n".encode())
    return digest.hexdigest()[:16]


def _remove_emptied(work: WorkArea, present: set[int]) -> None:
    """Drop the sources objects of partitions the current input no longer has any source in."""
    for f in work.sources.files():
        name = f.name.removesuffix(".parquet")
        if f.name.endswith(".parquet") and name.startswith("p") and name[1:].isdigit() and int(name[1:]) not in present:
            f.delete()


