"""Frame samples of the shared test videos for the filter tests, decoded once per test session.

The text and watermark tests look at the same few videos; decoding each once (with the stage's own
sampler) and keeping the result keeps those tests fast. ``shot_sample`` cuts one shot out of a
multi-shot file first, as the split and extract stages would: the filters see single-shot clips.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path

from curation.frames import FrameSample, sample_clip


@functools.lru_cache(maxsize=32)
def shared_sample(path: Path, count: int, width: int) -> FrameSample:
    """``count`` evenly spaced frames (plus the middle one when ``count`` is even) of ``path``, ``width`` wide."""
    return sample_clip(str(path), count, {"frames": width})["frames"]


@functools.lru_cache(maxsize=16)
def shot_sample(path: Path, start: float, end: float, count: int, width: int) -> FrameSample:
    """The same sample of the shot from ``start`` to ``end`` s of ``path``, re-encoded as a clip (H.264, CRF 20)."""
    with tempfile.TemporaryDirectory(prefix="shot_") as tmp:
        clip = Path(tmp) / "clip.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(start), "-to", str(end), "-i", str(path), "-an",
                        "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", str(clip)], check=True)
        return sample_clip(str(clip), count, {"frames": width})["frames"]
