"""Frame samples of the shared test videos for the filter tests, decoded once per test session.

The text and watermark tests look at the same few videos; decoding each once (with the stage's own
sampler) and keeping the result keeps those tests fast.
"""

from __future__ import annotations

import functools
from pathlib import Path

from curation.frames import FrameSample, sample_clip


@functools.lru_cache(maxsize=32)
def shared_sample(path: Path, count: int, width: int) -> FrameSample:
    """``count`` evenly spaced frames (plus the middle one when ``count`` is even) of ``path``, ``width`` wide."""
    return sample_clip(str(path), count, {"frames": width})["frames"]
