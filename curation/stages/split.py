"""Split stage: the source's scenes (PySceneDetect), as one row per clip and a rejected row per dropped span."""

from __future__ import annotations

from curation.split import split
from curation.stage import Row, Stage, StageContext


class Split(Stage):
    name = "split"

    def process(self, rows: list[Row], ctx: StageContext) -> list[Row]:
        (row,) = rows
        local = {**row, "local_path": str(ctx.local(row["local_path"]))}
        return [{**clip, "local_path": row["local_path"]} for clip in split(local, self.cfg.split)]


STAGE = Split
