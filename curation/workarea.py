"""The work area of a curation job (``<output>/work``): what a rerun reads to resume, and nothing more.

Its objects, on a local disk or in an object store alike::

    work/layout.json                        the corpus's partition count, fixed at its first run
    work/sources/p00042.parquet             the input's sources of partition 42 (rewritten by each ingest)
    work/sources/_partitions.parquet        per partition: its source count and a digest of its sources
    work/state/<stage>/_fingerprint         the config fingerprint the stage's results were made with
    work/state/<stage>/p00042/<block>.parquet   results of one task: the rows its block of input produced
    work/downloads/<source_id>.<ext>        a download kept for a later job (only when the job ends before extract)
    work/clips/<source_id>/<key>.mp4        a clip until its shard is written and verified
    work/written/p00042-<digest>.json       a written partition: what it holds, for the manifest and for skipping
    work/hashes/p00042.parquet              the partition's downloaded sources and their sha256 (curation.copies)
    work/copies/p00042-<digest>.parquet     its sources that copy another source's bytes (only where there are)
    work/phashes/p00042.parquet             its finished clips' perceptual hashes (curation.neardup)
    work/near_duplicates/p00042-<digest>.parquet   its clips that are near-duplicates of another clip

State is kept at the granularity of work, not of clips: one object per task (one source, or one
batch of clips for a batched stage such as captioning), under the partition of the rows it holds,
so that resuming a partition reads that partition's objects only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pyarrow as pa

from shards.layout import partition_name
from shards.schema import RECORD_SCHEMA
from storage import Location

LAYOUT_FILE = "layout.json"
PARTITIONS_TABLE = "_partitions.parquet"


@dataclass(frozen=True)
class WorkArea:
    """Names of everything under ``<output>/work`` and the few reads and writes of it that several modules share."""

    output: Location

    @classmethod
    def of(cls, output: str | Location) -> WorkArea:
        return cls(Location(str(output)))

    @property
    def root(self) -> Location:
        return self.output / "work"

    @property
    def sources(self) -> Location:
        return self.root / "sources"

    @property
    def downloads(self) -> Location:
        return self.root / "downloads"

    @property
    def clips(self) -> Location:
        return self.root / "clips"

    @property
    def written(self) -> Location:
        return self.root / "written"

    def scratch_parent(self) -> str | None:
        """Where task scratch directories go: beside the output on a local disk (so finished files are
        moved into place, not copied), the system's temporary directory otherwise."""
        if self.output.is_local:
            return os.path.join(self.root.path, "scratch")
        return None

    def stage_dir(self, stage: str) -> Location:
        return self.root / "state" / stage

    def state_dir(self, stage: str, partition: int) -> Location:
        return self.stage_dir(stage) / partition_name(partition)

    def partition_sources(self, partition: int) -> Location:
        return self.sources / f"{partition_name(partition)}.parquet"

    def clip_location(self, source_id: str, key: str) -> Location:
        return self.clips / source_id / f"{key}.mp4"

    # -- state ----------------------------------------------------------------------------------
    def read_state(self, stage: str, partition: int) -> pa.Table:
        """Every row that tasks ending at ``stage`` persisted for ``partition`` (empty when none did)."""
        parts = [f.read_table(schema=RECORD_SCHEMA) for f in self.state_dir(stage, partition).files()
                 if f.name.endswith(".parquet")]
        return pa.concat_tables(parts) if parts else RECORD_SCHEMA.empty_table()

    def read_sources(self, partition: int) -> pa.Table:
        """The sources of ``partition`` as the last ingest recorded them."""
        return self.partition_sources(partition).read_table(schema=RECORD_SCHEMA)

    def read_partition_table(self) -> pa.Table:
        """``partition``, ``sources``, ``digest`` of every non-empty partition of the current input."""
        location = self.sources / PARTITIONS_TABLE
        if not location.exists():
            raise ValueError(f"{self.output} has no ingested input ({location} is missing): run a job that "
                             "starts with the download stage first")
        return location.read_table()

    def written_records(self) -> dict[int, tuple[str, Location]]:
        """Partition -> (digest, record location) of every written partition."""
        return _digest_records(self.written, ".json")

    def written_record(self, partition: int, digest: str) -> Location:
        return self.written / f"{partition_name(partition)}-{digest}.json"

    def dedup_records(self, kind: str) -> dict[int, tuple[str, Location]]:
        """Partition -> (digest, location) of the ``kind`` duplicates (``copies``, ``near_duplicates``) of every
        partition that holds any (``curation.copies``)."""
        return _digest_records(self.root / kind, ".parquet")

    def dedup_record(self, kind: str, partition: int, digest: str) -> Location:
        return self.root / kind / f"{partition_name(partition)}-{digest}.parquet"

    def dedup_input(self, inputs: str, partition: int) -> Location:
        """What the partition's writer leaves for a corpus-wide duplicate search (``hashes``, ``phashes``)."""
        return self.root / inputs / f"{partition_name(partition)}.parquet"

    # -- settings that must not change under a corpus -------------------------------------------
    def check_fingerprint(self, stage: str, fingerprint: str) -> None:
        """Refuse to mix results made under a different config into the same stage's results."""
        marker = self.stage_dir(stage) / "_fingerprint"
        if marker.exists() and marker.read_text().strip() != fingerprint:
            raise ValueError(
                f"{self.stage_dir(stage)} holds results made with a different configuration of the "
                f"'{stage}' stage or an earlier one. Use a new --output, or delete that directory and the "
                "ones of the later stages (and work/written/) to redo them with the new settings."
            )
        if not marker.exists():
            marker.write_text(fingerprint)

    def partitions(self, requested: int | None, sources: int, sources_per_partition: int) -> int:
        """The corpus's partition count: fixed at its first run (so partitions stay stable as sources are added)."""
        layout = self.root / LAYOUT_FILE
        if layout.exists():
            fixed = int(json.loads(layout.read_text())["partitions"])
            if requested is not None and requested != fixed:
                raise ValueError(f"{self.output} was made with write.partitions: {fixed}; a corpus keeps its "
                                 f"partition count (you asked for {requested}). Use a new --output to repartition.")
            return fixed
        count = requested or _power_of_two_at_least(-(-sources // max(1, sources_per_partition)))
        layout.write_text(json.dumps({"partitions": count}))
        return count


def _digest_records(folder: Location, suffix: str) -> dict[int, tuple[str, Location]]:
    """``p00042-<digest><suffix>`` objects of ``folder`` (one listing) by partition."""
    out: dict[int, tuple[str, Location]] = {}
    for record in folder.files():
        name, _, digest = record.name.removesuffix(suffix).partition("-")
        if record.name.endswith(suffix) and name.startswith("p") and name[1:].isdigit():
            out[int(name[1:])] = (digest, record)
    return out


def _power_of_two_at_least(n: int) -> int:
    return 1 << max(0, (max(1, n) - 1).bit_length())

