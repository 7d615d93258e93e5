"""Extract stage: each clip cut out of its source with ffmpeg, frame-exact, and checked."""

from __future__ import annotations

from curation.errors import Rejection
from curation.extract import extract_source
from curation.stage import Row, Stage, StageContext, reject


class Extract(Stage):
    name = "extract"
    per_clip = True
    whole_source = True  # a source's consecutive clips share one decode
    produces_files = ("clip_path",)

    def process(self, rows: list[Row], ctx: StageContext) -> list[Row]:
        source = str(ctx.local(rows[0]["local_path"]))
        results = extract_source([{**row, "local_path": source} for row in rows], self.cfg.extract,
                                 ctx.scratch / "clips")
        return [reject(row, result.reason, result.detail) if isinstance(result, Rejection) else {**row, **result}
                for row, result in zip(rows, results, strict=True)]


STAGE = Extract
