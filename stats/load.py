"""Reading only what the statistics need from a corpus (a directory or ``s3://...``), a column or a batch at a time.

The index of a large corpus holds tens of columns and millions of rows in thousands of partition
files; the statistics need a few columns, and the text columns (captions, scores) are the heavy
ones. Reading one column at a time over the ``index/`` dataset, and streaming text columns per
record batch, keeps memory to a few hundred bytes per clip.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
from tqdm import tqdm

from shards.layout import INDEX_DIR, MANIFEST_FILE, index_location, manifest_location
from shards.reader import index_batches, index_dataset, partition_files, read_manifest, read_rejections
from shards.schema import INDEX_SCHEMA
from storage import Location

#: Columns of the rejections the funnel needs (``detail`` sentences are left in the store).
REJECTION_COLUMNS = ("source_id", "key", "stage", "reason", "start_time")


class Corpus:
    """A finished corpus (it has a manifest or index files), with column readers over its index."""

    def __init__(self, root: str | Location) -> None:
        self.root = Location(str(root))
        if not self.root.exists():
            raise FileNotFoundError(f"corpus {self.root} does not exist; pass the --output of a "
                                    "`videofactory curate` run")
        if not manifest_location(self.root).is_file() and not partition_files(index_location(self.root)):
            raise FileNotFoundError(f"{self.root} holds no {MANIFEST_FILE} and no {INDEX_DIR}/: it is not a finished "
                                    "corpus; run the curation job on it first")

    @property
    def rows(self) -> int:
        """Clips in the index (from the parquet footers: no data is read)."""
        return index_dataset(self.root).count_rows()

    def column(self, name: str, dictionary: bool = False) -> pa.ChunkedArray:
        """One index column over every partition; strings dictionary-encoded when asked (repeats stored once)."""
        self._check(name)
        return index_dataset(self.root, [name] if dictionary else ()).to_table(columns=[name])[name]

    def batches(self, name: str) -> Iterator[pa.Array]:
        """One index column streamed a record batch at a time, with a progress bar on terminals."""
        self._check(name)
        for batch in tqdm(index_batches(self.root, [name]), desc=name, unit="batch", disable=None):
            yield batch.column(0)

    def rejections(self, columns: Sequence[str] = REJECTION_COLUMNS) -> pa.Table:
        """The rejections' funnel columns (an empty table when the corpus has no rejections)."""
        return read_rejections(self.root, columns)

    def manifest(self) -> dict[str, Any]:
        """``manifest.json`` (an empty dict when it is missing)."""
        return read_manifest(self.root) if manifest_location(self.root).is_file() else {}

    @staticmethod
    def _check(name: str) -> None:
        if name not in INDEX_SCHEMA.names:
            raise ValueError(f"the index has no column '{name}' (see shards.schema.INDEX_SCHEMA)")
