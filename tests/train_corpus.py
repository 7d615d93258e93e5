"""Small corpora for the training tests, written with the project's shard writer from ffmpeg-made clips.

Each clip is a distinct lavfi pattern (so a model can tell them apart), 25 fps, 320x180 (so the
loader has to resize and crop to the training size); clips shorter than the loader asks for test
the skipping of short samples.
"""

from __future__ import annotations

from pathlib import Path

from curation.sample_videos import run_ffmpeg
from shards.layout import SHARDS_DIR, shard_name
from shards.writer import Sample, write_shard

PATTERNS = ["testsrc2", "smptebars", "rgbtestsrc", "mandelbrot", "testsrc", "yuvtestsrc", "smptehdbars", "pal75bars"]


def make_clip(path: Path, pattern: str, frames: int, size: str = "320x180") -> Path:
    run_ffmpeg(["-f", "lavfi", "-i", f"{pattern}=s={size}:r=25", "-frames:v", str(frames), "-c:v", "libx264",
                "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)])
    return path


def write_corpus(root: Path, frames: list[int], shards: int, name: str = "corpus",
                 patterns: list[str] | None = None) -> list[str]:
    """A corpus of one clip per entry of ``frames`` (its length), dealt round-robin into ``shards`` shards.

    Returns the sample keys; the caption of each is ``"<pattern> clip <n>"``.
    """
    clips = root / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    patterns = patterns or PATTERNS
    samples = []
    for n, count in enumerate(frames):
        pattern = patterns[n % len(patterns)]
        path = make_clip(clips / f"{name}{n}.mp4", pattern, count)
        samples.append(Sample(key=f"{name}_{n:04d}", video_path=str(path), caption=f"{pattern} clip {n}",
                              metadata={"key": f"{name}_{n:04d}", "clip_frames": count}))
    for s in range(shards):
        write_shard(root / SHARDS_DIR / shard_name(name, s), samples[s::shards])
    return [s.key for s in samples]
