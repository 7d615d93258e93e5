"""Download stage: the source as one complete local file (see ``curation.download`` for the ways in)."""

from __future__ import annotations

from curation.download import fetch
from curation.manifest import local_roots
from curation.stage import Row, Stage, StageContext


class Download(Stage):
    name = "download"
    produces_files = ("local_path",)

    def setup(self) -> None:
        # Checked again when a file is opened (a link changed after ingest must not escape them).
        self.roots = local_roots(self.cfg)

    def process(self, rows: list[Row], ctx: StageContext) -> list[Row]:
        (row,) = rows
        fetched = fetch(row["source"], row["source_id"], ctx.scratch / "downloads", self.cfg.download,
                        roots=self.roots)
        return [{**row, "local_path": fetched.local_path, "download_method": fetched.method,
                 "source_sha256": fetched.sha256, "source_bytes": fetched.size}]


STAGE = Download
