"""Split stage: the source's scenes (PySceneDetect or TransNetV2), as one row per clip and a rejected row per dropped
span."""

from __future__ import annotations

from curation.config import CurationConfig
from curation.split import split
from curation.stage import JobResources, Resources, Row, Stage, StageContext


class Split(Stage):
    name = "split"

    @classmethod
    def check(cls, cfg: CurationConfig) -> None:
        if cfg.split.detector == "transnetv2":
            from curation.transnetv2 import load_state_dict

            load_state_dict()  # a missing package or altered weights stop the job here, not every source

    @classmethod
    def resources(cls, cfg: CurationConfig, job: JobResources) -> Resources:
        tn = cfg.split.transnetv2
        if cfg.split.detector != "transnetv2" or not tn.num_gpus:
            return super().resources(cfg, job)
        gpus = job.gpus(tn.num_gpus, "split.transnetv2.num_gpus")
        return Resources(num_cpus=cfg.resources.split_cpus, num_gpus=gpus)

    def process(self, rows: list[Row], ctx: StageContext) -> list[Row]:
        (row,) = rows
        local = {**row, "local_path": str(ctx.local(row["local_path"]))}
        return [{**clip, "local_path": row["local_path"]} for clip in split(local, self.cfg.split)]


STAGE = Split
