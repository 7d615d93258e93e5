"""Reading only what the statistics need from a corpus, a column or a batch at a time.

The index of a large corpus holds tens of columns and millions of rows; the statistics need a few
columns, and the text columns (captions, scores) are the heavy ones. Reading one column at a time,
and streaming text columns per record batch, keeps memory to a few hundred bytes per clip.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from shards.layout import INDEX_FILE, MANIFEST_FILE, REJECTIONS_FILE
from shards.reader import read_manifest

#: Rows per streamed batch: large enough for vectorised compute, small enough to bound memory.
BATCH_ROWS = 262_144

#: Columns of ``rejections.parquet`` the funnel needs (``detail`` sentences are left on disk).
REJECTION_COLUMNS = ("source_id", "key", "stage", "reason", "start_time")


class Corpus:
    """A corpus directory, checked to hold an index, with column readers over its files."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"corpus directory {self.root} does not exist; pass the --output directory "
                                    "of a `videofactory curate` run")
        if not (self.root / INDEX_FILE).is_file():
            raise FileNotFoundError(f"{self.root} holds no {INDEX_FILE}: it is not a finished corpus; run the "
                                    "curation job (its write stage) on it first")
        self.index_path = self.root / INDEX_FILE
        self.index_columns = set(pq.read_schema(self.index_path).names)

    @property
    def rows(self) -> int:
        return pq.ParquetFile(self.index_path).metadata.num_rows

    def column(self, name: str, dictionary: bool = False) -> pa.ChunkedArray:
        """One index column; strings dictionary-encoded when asked (repeated values stored once)."""
        if name not in self.index_columns:
            raise ValueError(f"{self.index_path} has no column '{name}': it was not written by this version of "
                             "videofactory; rerun the write stage of the curation job on it")
        table = pq.read_table(self.index_path, columns=[name], read_dictionary=[name] if dictionary else None)
        return table[name]

    def batches(self, name: str) -> Iterator[pa.Array]:
        """One index column streamed a record batch at a time (empty when the index lacks it)."""
        if name not in self.index_columns:
            return
        parquet = pq.ParquetFile(self.index_path)
        total = sum(-(-parquet.metadata.row_group(i).num_rows // BATCH_ROWS) for i in range(parquet.num_row_groups))
        batches = parquet.iter_batches(batch_size=BATCH_ROWS, columns=[name])
        for batch in tqdm(batches, total=total, desc=name, unit="batch", disable=None):  # bar on terminals only
            yield batch.column(0)

    def rejections(self, columns: Sequence[str] = REJECTION_COLUMNS) -> pa.Table:
        """The rejections' funnel columns (an empty table when the corpus has no rejections file)."""
        path = self.root / REJECTIONS_FILE
        if not path.is_file():
            return pa.table({c: pa.array([], pa.string()) for c in columns})
        present = set(pq.read_schema(path).names)
        return pq.read_table(path, columns=[c for c in columns if c in present])

    def manifest(self) -> dict[str, Any]:
        """``manifest.json`` (an empty dict when it is missing)."""
        return read_manifest(self.root) if (self.root / MANIFEST_FILE).is_file() else {}
