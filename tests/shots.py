"""Synthetic shots for the scene split: videos whose every frame, and so every true cut, is known.

A shot is a smooth random landscape (bicubically enlarged noise, a tint of its own) panning one pixel a
frame, so consecutive frames differ a little, as real footage does, and another shot differs a lot. A
flash is frames of pure white inside a shot. Frames are written with PyAV (libx264, near-lossless), so
the frame numbers below are the decoded frames' numbers.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

WIDTH, HEIGHT, FPS = 320, 180, 25


def shot(seed: int, frames: int) -> list[np.ndarray]:
    """``frames`` RGB frames of one panning shot; another ``seed`` is another shot."""
    rng = np.random.default_rng(seed)
    grain = rng.integers(0, 256, (HEIGHT // 20 + 1, (WIDTH + frames) // 20 + 1, 3), dtype=np.uint8)
    land = cv2.resize(grain, (grain.shape[1] * 20, grain.shape[0] * 20), interpolation=cv2.INTER_CUBIC)
    tint = rng.integers(0, 256, 3)
    return [((land[:HEIGHT, i:i + WIDTH].astype(np.int32) + tint) // 2).astype(np.uint8) for i in range(frames)]


def white(frames: int) -> list[np.ndarray]:
    return [np.full((HEIGHT, WIDTH, 3), 255, np.uint8)] * frames


def write(path: Path, frames: list[np.ndarray]) -> Path:
    """Encode ``frames`` at ``FPS`` into ``path``."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "12", "preset": "ultrafast"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path
