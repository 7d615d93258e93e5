"""Probe stage: what ffprobe says of the source (streams, sizes, rotation, rates, duration)."""

from __future__ import annotations

from curation.probe import probe
from curation.stage import Row, Stage, StageContext


class Probe(Stage):
    name = "probe"

    def process(self, rows: list[Row], ctx: StageContext) -> list[Row]:
        (row,) = rows
        return [{**row, **probe(str(ctx.local(row["local_path"])), self.cfg.probe)}]


STAGE = Probe
