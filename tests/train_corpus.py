"""Small corpora for the training tests, in the published layout, from ffmpeg-made clips.

Each clip is a distinct lavfi pattern (so a model can tell them apart), 25 fps, 320x180 (so the
loader has to resize and crop to the training size); clips shorter than the loader asks for test
the skipping of short samples. All clips of a corpus come from one source, so they share one
partition and its shards.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch

from demo.sample_videos import run_ffmpeg
from tests.layout_corpus import Clip
from tests.layout_corpus import write_corpus as write_layout

PATTERNS = ["testsrc2", "smptebars", "rgbtestsrc", "mandelbrot", "testsrc", "yuvtestsrc", "smptehdbars", "pal75bars"]


def make_clip(path: Path, pattern: str, frames: int, size: str = "320x180") -> Path:
    run_ffmpeg(["-f", "lavfi", "-i", f"{pattern}=s={size}:r=25", "-frames:v", str(frames), "-c:v", "libx264",
                "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)])
    return path


def write_corpus(root: Path, frames: list[int], shards: int, name: str = "corpus",
                 patterns: list[str] | None = None, sizes: list[tuple[int, int]] | None = None) -> list[str]:
    """A corpus of one clip per entry of ``frames`` (its length) and of ``sizes`` (width, height; default 320x180),
    in key order over ``shards`` shards; the index rows carry what extraction records (clip size, fps, frames).

    Returns the sample keys (``<name>_<n:04d>``); the caption of each is ``"<pattern> clip <n>"``.
    """
    patterns = patterns or PATTERNS
    sizes = sizes or [(320, 180)] * len(frames)
    clips = []
    with tempfile.TemporaryDirectory() as scratch:
        for n, (count, (width, height)) in enumerate(zip(frames, sizes, strict=True)):
            pattern = patterns[n % len(patterns)]
            mp4 = make_clip(Path(scratch) / f"{n}.mp4", pattern, count, f"{width}x{height}").read_bytes()
            clips.append(Clip({"key": f"{name}_{n:04d}", "source_id": name, "caption": f"{pattern} clip {n}",
                               "clip_frames": count, "clip_width": width, "clip_height": height, "clip_fps": 25.0},
                              mp4))
    write_layout(root, clips, partitions=1, shard_samples=math.ceil(len(clips) / shards), name=name)
    return [c.row["key"] for c in clips]


def assert_same_last_checkpoint(a: Path, b: Path, step: int) -> dict:
    """The last checkpoints of the runs in ``a`` and ``b`` are both at ``step`` and hold the same weights and EMA
    bit for bit, and the same data position; returns ``a``'s state (for checks of its own)."""
    from safetensors.torch import load_file

    from training.checkpoint import list_checkpoints, load_state

    last_a, last_b = list_checkpoints(a)[-1], list_checkpoints(b)[-1]
    assert last_a.name == last_b.name == f"step-{step:08d}"
    for name in ("model.safetensors", "ema.safetensors"):
        wa, wb = load_file(last_a / name), load_file(last_b / name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    sa, sb = load_state(last_a), load_state(last_b)
    assert sa["data"] == sb["data"] and sa["step"] == sb["step"] == step
    return {"a": sa, "b": sb}

