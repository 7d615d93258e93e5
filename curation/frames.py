"""Reading the frames a clip is judged by: one decode per clip for every filter and for captioning.

HD-VG-130M captions each clip from its middle frame; the filters look at evenly spaced frames plus
that middle one. ``sample_clip`` is the one sampler: it decodes the clip ONCE, front to back, and
converts only the wanted frames, to every size asked for (small for motion and blank frames,
larger for text detection) from the same decoded picture. Decoding forward beats seeking here:
extracted clips have one keyframe every 10 s (x264's default), so a seek per frame would decode the
start of the clip again for every frame wanted.

Frames are display-oriented: the sample aspect ratio is applied by the scaler and the display
matrix's rotation by a 90-degree turn, so a stream-copied (``extract.mode: copy``) clip looks as a
viewer sees it, like a re-encoded one. For motion, each sampled frame can come with a "following"
frame a short gap later: the flow between the two measures motion at that moment, which a flow
between samples a second apart cannot (a slideshow changes completely between its samples).
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import av
import numpy as np
from PIL import Image

from curation.errors import Rejection

#: How far before a wanted time a frame may start and still count as at that time (float rounding).
TIME_EPSILON = 1e-6


@dataclass(frozen=True)
class Frame:
    """One decoded frame and where it sits in its clip."""

    time: float  # seconds from the clip's first frame
    image: Image.Image


@dataclass
class FrameSample:
    """Frames of one clip at one size (the contract between the sampler and every filter)."""

    frames: list[np.ndarray]  # RGB uint8 (H, W, 3), display-oriented, at the size asked for
    times: list[float]  # seconds from clip start, one per frame
    middle_index: int  # index of the middle frame in `frames`
    full_size: tuple[int, int]  # (width, height) of the clip's frames before downscaling (display-oriented)
    following: list[np.ndarray] = field(default_factory=list)  # when asked: the frame `gap_s` after each frame
    following_times: list[float] = field(default_factory=list)
    wanted: int = 0  # frames asked for (evenly spaced plus the middle); fewer in `frames` means decoding stopped


def frame_times(duration: float, count: int) -> list[float]:
    """``count`` times splitting ``duration`` into equal parts, each at the centre of its part.

    One frame is the exact middle; with an odd count the middle is always among them.
    """
    return [duration * (i + 0.5) / count for i in range(count)]


def middle_index(count: int) -> int:
    """Which of ``frame_times(d, count)`` is (or, for an even count, is just after) the middle."""
    return count // 2


def sample_times(duration: float, count: int) -> tuple[list[float], int]:
    """``count`` evenly spaced times plus the exact middle (added when ``count`` is even); and its index."""
    times = frame_times(duration, count)
    middle = middle_index(count)
    if count % 2:
        times[middle] = duration / 2
    else:
        times.insert(middle, duration / 2)
    return times, middle


def sample_clip(clip_path: str, count: int, widths: Mapping[str, int], gap_s: float | None = None,
                threads: int = 1) -> dict[str, FrameSample]:
    """One decode of ``clip_path``: ``count`` evenly spaced frames plus the middle one, at each of ``widths``.

    ``widths`` names each size wanted (say ``{"small": 160, "detail": 960}``); a width of 0, or one
    wider than the clip, keeps the clip's own size. ``gap_s`` adds, to every size, the first frame at
    least that long after each sampled one. ``threads`` bounds the decoder (Ray gives a task one CPU).
    Frames past the point where decoding stops are missing, not invented (``len(frames) < wanted``);
    a clip with no decodable frame at all is a ``frame_unreadable`` rejection.
    """
    return _sample(clip_path, functools.partial(sample_times, count=count), widths, gap_s, threads)


def sample_frames(clip_path: str, count: int) -> list[Frame]:
    """``count`` evenly spaced RGB frames of the clip at full size (captioning), from the same one decode.

    A clip whose decoding stops before the last of them is a ``frame_unreadable`` rejection.
    """
    sample = _sample(clip_path, lambda d: (frame_times(d, count), middle_index(count)), {"full": 0}, None, 1)["full"]
    if len(sample.frames) < sample.wanted:
        raise Rejection("frame_unreadable", f"decoding {clip_path} stopped after {len(sample.frames)} of the "
                                            f"{sample.wanted} frames wanted, at {sample.times[-1]:.3f} s")
    return [Frame(time=t, image=Image.fromarray(f)) for f, t in zip(sample.frames, sample.times, strict=True)]


def sample_span(path: str, start_s: float, end_s: float, count: int,
                widths: Mapping[str, int]) -> dict[str, FrameSample]:
    """``count`` evenly spaced frames of the span ``start_s`` to ``end_s`` (seconds from the first frame) of a long
    file, a source: one seek to the keyframe at or before ``start_s``, then forward as in ``sample_clip``.

    How a clip can be looked at once its own file is gone (the report's gallery); times are from the file's start.
    """
    times = [start_s + t for t in frame_times(end_s - start_s, count)]
    return _sample(path, lambda _: (times, middle_index(count)), widths, None, 1, seek_s=start_s)


#: The times to sample in a clip of the given duration, and which of them is the middle.
TimesFn = Callable[[float], tuple[list[float], int]]


def _sample(clip_path: str, times_for: TimesFn, widths: Mapping[str, int], gap_s: float | None,
            threads: int, seek_s: float = 0.0) -> dict[str, FrameSample]:
    try:
        with av.open(clip_path) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = max(1, threads)
            sar = stream.codec_context.sample_aspect_ratio
            start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            times, middle = times_for(_duration(container, stream))
            if seek_s > 0:
                container.seek(int((start + seek_s) / stream.time_base), stream=stream, backward=True)
            picked, following = _decode(container, stream, start, times, gap_s,
                                        _Converter(widths, float(sar) if sar else 1.0))
    except (av.FFmpegError, IndexError, OSError) as exc:
        raise Rejection("frame_unreadable", f"no frame could be decoded from the clip {clip_path}: {exc}") from exc
    if not picked:
        raise Rejection("frame_unreadable", f"the clip {clip_path} has no decodable frame")
    return {name: FrameSample(frames=[p[1][name] for p in picked], times=[p[0] for p in picked],
                              middle_index=min(middle, len(picked) - 1), full_size=picked[0][2], wanted=len(times),
                              following=[f[1][name] for f in following], following_times=[f[0] for f in following])
            for name in widths}


class _Converter:
    """Turns a decoded frame into display-oriented RGB arrays at every requested width."""

    def __init__(self, widths: Mapping[str, int], sar: float) -> None:
        self.widths = widths
        self.sar = sar

    def __call__(self, frame: av.VideoFrame) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
        turned = (frame.rotation or 0) % 180 == 90
        full = (max(1, round(frame.width * self.sar)), frame.height)
        if turned:
            full = (full[1], full[0])
        out = {}
        for name, width in self.widths.items():
            w, h = full if not 0 < width < full[0] else (width, max(1, round(full[1] * width / full[0])))
            array = frame.reformat(width=h if turned else w, height=w if turned else h, format="rgb24",
                                   interpolation="AREA").to_ndarray()
            if frame.rotation:
                array = np.ascontiguousarray(np.rot90(array, k=(frame.rotation // 90) % 4))
            out[name] = array
        return out, full


#: A converted frame: (time from the clip start, arrays by size name, display size of the clip).
Picked = tuple[float, dict[str, np.ndarray], tuple[int, int]]


def _decode(container: av.container.InputContainer, stream: av.video.stream.VideoStream, start: float,
            times: list[float], gap_s: float | None, convert: _Converter) -> tuple[list[Picked], list[Picked]]:
    """Decode forward once, converting the first frame at or after each wanted time (and its follower).

    Stops as soon as every wanted frame is in, so a middle frame alone costs half a clip's decoding.
    """
    picked: list[Picked] = []
    following: list[Picked] = []
    targets: deque[float] = deque()  # times the followers of picked frames must reach
    for frame in _frames_until_error(container, stream):
        t = round(float(frame.time if frame.time is not None else start) - start, 6)
        converted: Picked | None = None
        while targets and t >= targets[0] - TIME_EPSILON:
            converted = converted or (t, *convert(frame))
            following.append(converted)
            targets.popleft()
        while len(picked) < len(times) and t >= times[len(picked)] - TIME_EPSILON:
            converted = converted or (t, *convert(frame))
            picked.append(converted)
            if gap_s:
                targets.append(t + gap_s)
        if len(picked) == len(times) and not targets:
            break
    return picked, following


def _frames_until_error(container: av.container.InputContainer,
                        stream: av.video.stream.VideoStream) -> Iterator[av.VideoFrame]:
    """The clip's frames in order, ending early (not failing) at a decoding error after the first frame.

    A clip damaged half-way still yields its first frames, so callers can tell "decoding stopped at
    2.3 s" (fewer frames than wanted) from "nothing decodes at all".
    """
    decoded = 0
    try:
        for frame in container.decode(stream):
            decoded += 1
            yield frame
    except av.FFmpegError:
        if not decoded:
            raise


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    raise Rejection("frame_unreadable", "the clip has no duration to find its middle in")
