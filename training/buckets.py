"""Buckets of size and length: each clip trains at the bucket that suits it, each batch holds one bucket.

Cropping every clip to one fixed size throws away most of a portrait or square clip, and training one
frame count wastes long clips. The bucket table (``data.buckets``, as Open-Sora's) lists the sizes
and lengths a run trains at. A clip's bucket is decided from its index metadata alone (``clip_width``,
``clip_height``, ``clip_frames``, ``clip_fps`` in the sample's JSON), never by decoding it:

1. the buckets it can fill: at least the bucket's width and height (the clip is scaled to cover the
   bucket, never up), enough frames for the bucket's frame count at ``data.stride`` (or ``data.fps``),
   and, for a corpus with its own ``frames``, that frame count;
2. of those, the one whose aspect ratio is closest to the clip's (least cropped), then the largest
   area times frames, then the first in the table.

A clip that fits no bucket (too small, too short, no metadata) is skipped and counted (``no_bucket``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from training.config import DataConfig


@dataclass(frozen=True)
class Bucket:
    """One row of the table: the training size, frame count and batch size of its clips."""

    width: int
    height: int
    frames: int
    batch_size: int


def frames_needed(frames: int, stride: int | None, fps: float | None, source_fps: float) -> int:
    """Frames a clip of ``source_fps`` must have to give ``frames`` frames at ``stride`` (or resampled to ``fps``)."""
    step = float(stride) if fps is None else source_fps / fps
    return 1 + round((frames - 1) * step)


class BucketTable:
    """``data.buckets`` and the rule that gives a clip its bucket."""

    def __init__(self, buckets: list[Bucket], stride: int | None, fps: float | None) -> None:
        self.buckets, self.stride, self.fps = buckets, stride, fps

    @classmethod
    def of(cls, cfg: DataConfig) -> BucketTable | None:
        """The table of ``cfg`` (None when it has no buckets: every clip at width x height x frames)."""
        if not cfg.buckets:
            return None
        return cls([Bucket(b.width, b.height, b.frames, b.batch_size or cfg.batch_size) for b in cfg.buckets],
                   cfg.stride, cfg.fps)

    def __len__(self) -> int:
        return len(self.buckets)

    def __getitem__(self, index: int) -> Bucket:
        return self.buckets[index]

    def assign(self, meta: Mapping[str, Any], corpus_frames: int | None = None) -> int | None:
        """The bucket (index) of the clip the index row ``meta`` describes, or None when it fits none."""
        try:
            width, height = int(meta["clip_width"]), int(meta["clip_height"])
            available, source_fps = int(meta["clip_frames"]), float(meta["clip_fps"])
        except (KeyError, TypeError, ValueError):  # a row without the extraction's columns cannot be placed
            return None
        if width <= 0 or height <= 0 or source_fps <= 0:
            return None
        fits = [i for i, b in enumerate(self.buckets)
                if (corpus_frames is None or b.frames == corpus_frames) and width >= b.width and height >= b.height
                and available >= frames_needed(b.frames, self.stride, self.fps, source_fps)]
        if not fits:
            return None
        aspect = math.log(width / height)

        def rank(i: int) -> tuple[float, int, int]:
            b = self.buckets[i]
            return round(abs(aspect - math.log(b.width / b.height)), 9), -b.width * b.height * b.frames, i

        return min(fits, key=rank)
