"""Reading the frames a clip is judged by: the middle frame, or several evenly spaced ones.

HD-VG-130M captions each clip from its middle frame; more frames give a caption per moment. This
is the one place that decides which frames are read and how, so the shared frame sampler of the
filter stages can replace it without touching captioning: callers only need ``sample_frames``.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
from PIL import Image

from curation.errors import Rejection


@dataclass(frozen=True)
class Frame:
    """One decoded frame and where it sits in its clip."""

    time: float  # seconds from the clip's first frame
    image: Image.Image


def frame_times(duration: float, count: int) -> list[float]:
    """``count`` times splitting ``duration`` into equal parts, each at the centre of its part.

    One frame is the exact middle; with an odd count the middle is always among them.
    """
    return [duration * (i + 0.5) / count for i in range(count)]


def middle_index(count: int) -> int:
    """Which of ``frame_times(d, count)`` is (or, for an even count, is just after) the middle."""
    return count // 2


def sample_frames(clip_path: str, count: int) -> list[Frame]:
    """Decode ``count`` evenly spaced RGB frames of the clip at ``clip_path``.

    Seeks to the keyframe before each wanted time and decodes forward to the first frame at or
    after it, so the frame is exact whatever the GOP. A clip that cannot be decoded is a rejection.
    """
    try:
        with av.open(clip_path) as container:
            stream = container.streams.video[0]
            start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            duration = _duration(container, stream)
            frames = [_frame_at(container, stream, start, t) for t in frame_times(duration, count)]
    except (av.FFmpegError, IndexError, OSError) as exc:
        raise Rejection("frame_unreadable", f"no frame could be decoded from the clip {clip_path}: {exc}") from exc
    return frames


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    raise Rejection("frame_unreadable", "the clip has no duration to find its middle in")


def _frame_at(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
              start: float, time: float) -> Frame:
    """The first frame presented at or after ``time`` seconds into the clip (the last one if none is)."""
    container.seek(int((start + time) / stream.time_base), stream=stream, backward=True, any_frame=False)
    last = None
    for frame in container.decode(stream):
        last = frame
        if frame.time is not None and frame.time - start >= time - 1e-6:
            break
    if last is None:
        raise Rejection("frame_unreadable", f"the clip has no frame near {time:.3f} s")
    return Frame(time=round(float((last.time or start) - start), 6), image=last.to_image())
