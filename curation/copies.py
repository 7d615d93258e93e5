"""Exact copies: sources with the same bytes under different names keep their clips once.

The manifest already makes one source of every spelling of one name (``curation.manifest``). Copies
under other names (a re-upload, a mirrored file, the same video in two folders) are only known once
downloaded, by ``source_sha256``, and two copies are usually in different partitions. So they are
found across the corpus after its partitions are written:

1. each partition writer leaves ``work/hashes/p00042.parquet``: ``source_id``, ``partition`` and
   ``source_sha256`` of each of its downloaded sources (one small object per partition);
2. ``find_copies`` groups every partition's hashes by ``source_sha256`` (in the driver for a small
   corpus, with a Ray Data shuffle for a large one) and, of each group, keeps the source with the
   lowest ``source_id`` (a rule independent of input order and of which ran first); the others are
   its copies, written per partition as ``work/copies/p00042-<digest>.parquet`` (only partitions
   that hold a copy have one);
3. the partitions whose copies changed are written again (their rows come from the work area; no
   video is processed twice): each clip of a copy becomes a ``dedup/exact_copy`` rejection whose
   ``duplicate_of`` is the key of the same clip of the kept source. The copy's other rejections stay,
   and so do its clips in ``work/clips``: they return to the corpus if the original leaves the input.

A partition's copies are part of its digest, so a rerun that finds the same copies rewrites
nothing, and a copy whose original leaves the input gets its clips back.

Near-duplicates (``curation.neardup``) run on the same mechanism: a ``DedupKind`` names the per-partition
inputs the writer leaves and the per-partition decisions grouping records, and a ``Grouper`` turns the
corpus's inputs into decisions (in the driver, or on Ray Data); ``find_in_corpus`` does the rest for both.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray

from curation.ids import clip_key
from curation.ingest import DRIVER_INGEST_MAX_SOURCES, MAX_SHUFFLE_PARTITIONS, WRITE_THREADS
from curation.workarea import WorkArea
from shards.layout import partition_name
from shards.schema import STATUS_OK, STATUS_REJECTED
from storage import Location

log = logging.getLogger(__name__)

#: Corpora of up to this many sources are grouped in the driver (a few MB of hashes); larger ones by a
#: shuffle, as ingest decides for the input.
DRIVER_MAX_SOURCES = DRIVER_INGEST_MAX_SOURCES

HASHES_SCHEMA = pa.schema([pa.field("source_id", pa.string()), pa.field("partition", pa.int32()),
                           pa.field("source_sha256", pa.string())])
COPIES_SCHEMA = pa.schema([*HASHES_SCHEMA, pa.field("original", pa.string())])


@dataclass(frozen=True)
class DedupKind:
    """One kind of duplicate found across the corpus after its partitions are written."""

    name: str  # work/<name>/p00042-<digest>.parquet: a partition's decisions (only where it has any)
    inputs: str  # work/<inputs>/p00042.parquet: what the partition's writer left for the grouping
    reason: str  # the rejection reason (stage ``dedup``)
    input_schema: pa.Schema
    decision_schema: pa.Schema
    pair: tuple[str, str]  # the decision's duplicate and what is kept instead: what its digest covers
    stage: str = "dedup"

    @dataclass(frozen=True)
    class Grouper:
        """How a corpus's inputs become decisions (each with its ``partition``): in the driver, or on Ray Data."""

        driver: Callable[[pa.Table], pa.Table]
        distributed: Callable[[ray.data.Dataset, int], ray.data.Dataset]  # the dataset and its shuffle partitions


EXACT = DedupKind("copies", "hashes", "exact_copy", HASHES_SCHEMA, COPIES_SCHEMA, ("source_id", "original"))
STAGE, REASON = EXACT.stage, EXACT.reason


def source_hashes(rows: list[dict[str, Any]]) -> pa.Table:
    """One row per downloaded source among ``rows`` (a partition's final rows), sorted by id."""
    seen = {(r["source_id"], r["partition"], r["source_sha256"]) for r in rows if r.get("source_sha256")}
    ordered = sorted(seen)
    return pa.table({name: [row[i] for row in ordered] for i, name in enumerate(HASHES_SCHEMA.names)},
                    schema=HASHES_SCHEMA)


def apply_copies(rows: list[dict[str, Any]], copies: pa.Table | None) -> list[dict[str, Any]]:
    """``rows`` with every finished clip of a copy turned into a ``dedup/exact_copy`` rejection."""
    if copies is None or copies.num_rows == 0:
        return rows
    originals = dict(zip(copies["source_id"].to_pylist(), copies["original"].to_pylist(), strict=True))
    return reject_duplicates(
        rows, EXACT,
        lambda row: clip_key(originals[row["source_id"]], int(row["clip_index"])) if row["source_id"] in originals
        else None,
        lambda row, kept: f"source {originals[row['source_id']]} has the same bytes (sha256 "
                          f"{row['source_sha256'][:16]}…); its clip is kept instead")


def reject_duplicates(rows: list[dict[str, Any]], kind: DedupKind, kept_of: Callable[[dict[str, Any]], str | None],
                      detail: Callable[[dict[str, Any], str], str]) -> list[dict[str, Any]]:
    """``rows`` with every finished clip that ``kept_of`` says another clip replaces turned into a rejection of
    ``kind``, whose ``duplicate_of`` is that clip's key; other rows (and rows already rejected) as they are."""
    out = []
    for row in rows:
        kept = kept_of(row) if row["status"] == STATUS_OK and row.get("key") else None
        if kept is not None:
            row = {**row, "status": STATUS_REJECTED, "stage": kind.stage, "reason": kind.reason, "duplicate_of": kept,
                   "detail": detail(row, kept)}
        out.append(row)
    return out


def decisions_digest(decisions: pa.Table, kind: DedupKind) -> str:
    """What a partition's decisions add to its digest: which of its rows are duplicates of what."""
    pairs = sorted(zip(*(decisions[c].to_pylist() for c in kind.pair), strict=True))
    return hashlib.sha256("".join(f"{c}\t{o}\n" for c, o in pairs).encode()).hexdigest()[:16]


def read_decisions(location: str | None, kind: DedupKind) -> pa.Table | None:
    """The decisions recorded for a partition (``location`` as the driver listed it), or None when it has none."""
    return None if location is None else Location(location).read_table(schema=kind.decision_schema)


def write_hashes(work: WorkArea, partition: int, rows: list[dict[str, Any]]) -> None:
    work.dedup_input(EXACT.inputs, partition).write_table(source_hashes(rows))


def find_copies(work: WorkArea, partitions: list[int], sources: int) -> set[int]:
    """Group the corpus's hashes, record each partition's copies; return the partitions whose copies changed."""
    grouper = DedupKind.Grouper(
        driver=_copies_in,
        distributed=lambda data, shuffle: data.groupby("source_sha256", num_partitions=shuffle).map_groups(
            _copies_in, batch_format="pyarrow"))
    return find_in_corpus(work, EXACT, partitions, sources, grouper, enabled=True,
                          driver_max_sources=DRIVER_MAX_SOURCES)


def find_in_corpus(work: WorkArea, kind: DedupKind, partitions: list[int], sources: int, grouper: DedupKind.Grouper,
                   enabled: bool, driver_max_sources: int) -> set[int]:
    """Group the inputs of ``partitions``, record each partition's decisions; the partitions whose decisions changed.

    A corpus of up to ``driver_max_sources`` sources is grouped in the driver; a larger one on Ray Data.
    Disabled, it records nothing, so the decisions an earlier run recorded are withdrawn.
    """
    wanted = {f"{partition_name(p)}.parquet" for p in partitions}
    inputs = [h for h in (work.root / kind.inputs).files() if h.name in wanted] if enabled else []  # one listing
    old = work.dedup_records(kind.name)  # before any is written
    new: dict[int, str] = {}
    if inputs and sources <= driver_max_sources:
        with ThreadPoolExecutor(WRITE_THREADS) as pool:
            found = grouper.driver(pa.concat_tables(pool.map(lambda h: h.read_table(schema=kind.input_schema),
                                                             inputs)))
            groups = [found.filter(pc.equal(found["partition"], p)) for p in set(found["partition"].to_pylist())]
            for digest in pool.map(lambda g: record_decisions(g, work.output.uri, kind), groups):
                new.update(zip(digest["partition"].to_pylist(), digest["digest"].to_pylist(), strict=True))
    elif inputs:
        shuffle = min(len(partitions), MAX_SHUFFLE_PARTITIONS)
        data = ray.data.read_parquet([h.path for h in inputs], filesystem=work.output.fs, schema=kind.input_schema)
        rows = (grouper.distributed(data, shuffle).groupby("partition", num_partitions=shuffle)
                .map_groups(record_decisions, fn_kwargs={"output": work.output.uri, "kind": kind},
                            batch_format="pyarrow")
                .take_all())
        new = {int(r["partition"]): r["digest"] for r in rows}
    for partition, (digest, location) in old.items():
        if new.get(partition) != digest:
            location.delete()
    changed = {p for p in set(old) | set(new) if old.get(p, ("", None))[0] != new.get(p)}
    if new or changed:
        log.info("%s: %d partition(s) hold %s rows; %d changed", kind.name, len(new), kind.reason, len(changed))
    return changed


def _copies_in(hashes: pa.Table) -> pa.Table:
    """Every source of ``hashes`` whose bytes a source with a lower id has too, with that original."""
    rows = sorted(zip(hashes["source_sha256"].to_pylist(), hashes["source_id"].to_pylist(),
                      hashes["partition"].to_pylist(), strict=True))
    out: dict[str, list[Any]] = {name: [] for name in COPIES_SCHEMA.names}
    original: tuple[str, str] | None = None
    for sha, sid, partition in rows:
        if original is not None and original[0] == sha:
            if sid != original[1]:
                for name, value in zip(COPIES_SCHEMA.names, (sid, partition, sha, original[1]), strict=True):
                    out[name].append(value)
        else:
            original = (sha, sid)
    return pa.table(out, schema=COPIES_SCHEMA)


def record_decisions(decisions: pa.Table, output: str, kind: DedupKind) -> pa.Table:
    """Write one partition's decisions, each once (unless that very record exists); its partition and digest."""
    decisions = decisions.select(kind.decision_schema.names).cast(kind.decision_schema)
    decisions = decisions.group_by(kind.decision_schema.names).aggregate([]).select(kind.decision_schema.names)
    partition, digest = decisions["partition"][0].as_py(), decisions_digest(decisions, kind)
    record = WorkArea.of(output).dedup_record(kind.name, partition, digest)
    if not record.exists():
        record.write_table(decisions.sort_by(kind.pair[0]))
    return pa.table({"partition": [partition], "digest": [digest]})
