"""Screen stage: the checks that depend on the source alone, right after the probe, before any decoding.

A source they reject is never split, cut or filtered: its probe already says it cannot give a clip
of the corpus. Two kinds of check run here:

* the split's: a source shorter than ``split.min_duration`` can make no clip (``no_clips``, the
  reason the split gives when no scene is long enough), whatever the filters;
* the filter's source rules (``curation.filtering``, group ``source``: ``low_resolution`` and
  ``aspect_ratio`` on the display size from the probe), when ``filter.enabled`` and
  ``filter.quality.enabled``. The rejection has the reason, detail and decision record (``scores``)
  the filter stage gives a clip of that source; a source that passes keeps the record in its row,
  and its clips' records continue it. In ``filter.score_only`` mode they are recorded, never rejected.

The stage takes the probe's CPUs, so the runner always fuses it with the probe: it costs no task of
its own, and no file is read.
"""

from __future__ import annotations

from curation.config import CurationConfig
from curation.errors import Rejection
from curation.filtering import screen_source, screens
from curation.stage import JobResources, Resources, Row, Stage, StageContext


class Screen(Stage):
    name = "screen"

    @classmethod
    def resources(cls, cfg: CurationConfig, job: JobResources) -> Resources:
        return Resources(num_cpus=cfg.resources.probe_cpus)  # the probe's: fused with it

    def process(self, rows: list[Row], ctx: StageContext) -> list[Row]:
        (row,) = rows
        duration, shortest = float(row["duration"]), self.cfg.split.min_duration
        if duration < shortest:
            raise Rejection("no_clips", f"the source lasts {duration:.2f} s, less than split.min_duration "
                                        f"({shortest:g} s): no scene of it can make a clip")
        if not screens(self.cfg.filter):
            return [row]
        return [screen_source(row, self.cfg.filter)]


STAGE = Screen
