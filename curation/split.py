"""Split stage: PySceneDetect (or TransNetV2) finds the cuts, then scenes become clips of bounded duration.

Detection uses PySceneDetect's own detectors and ``SceneManager``, with its PyAV backend, so our cuts
can be checked against its release goldens frame for frame. One thing differs: where PySceneDetect
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
from dataclasses import dataclass
from typing import Any

import numpy as np
from av.video.reformatter import VideoReformatter
from scenedetect import AdaptiveDetector, ContentDetector, SceneManager, open_video
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
class Detection:
    """Scenes of one video and the frame rate their frame numbers refer to."""

    scenes: list[Span]
    fps: float

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


def detect_scenes(path: str, cfg: SplitConfig) -> Detection:
    """Run the configured detector (PySceneDetect's, or TransNetV2) over the whole video."""
    if cfg.detector == "transnetv2":
        return detect_transnetv2(path, cfg)
    try:
        video, manager = open_detection_stream(path, cfg)
    except (VideoOpenFailure, OSError, ValueError) as exc:
        raise Rejection("unreadable", f"PySceneDetect cannot open the video: {exc}") from exc
    params = cfg.adaptive if cfg.detector == "adaptive" else cfg.content
    manager.add_detector(DETECTORS[cfg.detector](**params))
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
    return Detection(scenes=scenes, fps=fps)


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


def plan_clips(detection: Detection, cfg: SplitConfig) -> tuple[list[Span], list[tuple[Span, str]]]:
    """Turn scenes into clips: trim at cuts, drop short scenes, cut long ones into equal chunks.

    Returns the clips and the dropped spans with the reason each was dropped. Long scenes are cut
    into ``ceil(duration / max_duration)`` equal chunks rather than max-length chunks plus a runt,
    so no footage is wasted and every chunk is at least half of ``max_duration`` long.
    """
    clips: list[Span] = []
    dropped: list[tuple[Span, str]] = []
    last = len(detection.scenes) - 1
    for i, scene in enumerate(detection.scenes):
        start = scene.start_frame + (cfg.trim_frames if i > 0 else 0)
        end = scene.end_frame - (cfg.trim_frames if i < last else 0)
        span = _frames_to_span(scene, start, end, detection.fps)
        if end <= start or span.duration < cfg.min_duration:
            dropped.append((span, f"scene of {max(span.duration, 0):.2f} s is shorter than {cfg.min_duration} s"))
            continue
        bounds = _chunk_bounds(start, end, detection.fps, cfg)
        if bounds[-1] < end:
            remainder = _frames_to_span(scene, bounds[-1], end, detection.fps)
            dropped.append((remainder, f"remainder of {remainder.duration:.2f} s is shorter than {cfg.min_duration} s"))
        clips.extend(_frames_to_span(scene, a, b, detection.fps) for a, b in zip(bounds, bounds[1:]))
    return clips, dropped


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


def _frames_to_span(scene: Span, start: int, end: int, fps: float) -> Span:
    """Span for frames [start, end) of ``scene``, with times offset from the scene's own timecodes.

    Times are taken relative to the scene's start time (which comes from presentation timestamps)
    so that variable-frame-rate sources keep PTS-accurate boundaries.
    """
    offset = scene.start_time - scene.start_frame / fps
    return Span(start, end, start / fps + offset, end / fps + offset)


def split(row: dict[str, Any], cfg: SplitConfig) -> list[dict[str, Any]]:
    """Split stage for one source row: a row per clip plus a rejected row per dropped span."""
    detection = detect_scenes(row["local_path"], cfg)
    _check_decoded_length(detection, float(row["duration"]))
    clips, dropped = plan_clips(detection, cfg)
    if not clips:
        reasons = "; ".join(sorted({why for _, why in dropped})) or "no scene found"
        raise Rejection("no_clips", f"no scene is long enough to make a clip ({reasons})")
    out = []
    for index, span in enumerate(clips):
        out.append({**row, **_span_columns(span), "key": clip_key(row["source_id"], index),
                    "clip_index": index, "detector": cfg.detector, "status": "ok"})
    for span, why in dropped:
        out.append({**row, **_span_columns(span), "detector": cfg.detector, "status": "rejected",
                     "reason": "too_short", "detail": why})
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


def _span_columns(span: Span) -> dict[str, Any]:
    return {
        "start_frame": span.start_frame,
        "end_frame": span.end_frame,
        "start_time": round(span.start_time, 6),
        "end_time": round(span.end_time, 6),
    }
