"""Extract stage: each clip cut out of its source with ffmpeg, frame-exact, and checked."""

from __future__ import annotations

from curation.extract import extract
from curation.stage import Row, Stage, StageContext


class Extract(Stage):
    name = "extract"
    per_clip = True
    produces_files = ("clip_path",)

    def process(self, rows: list[Row], ctx: StageContext) -> list[Row]:
        (row,) = rows
        local = {**row, "local_path": str(ctx.local(row["local_path"]))}
        return [{**row, **extract(local, self.cfg.extract, ctx.scratch / "clips")}]


STAGE = Extract
