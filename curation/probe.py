"""Probe stage: what a source really is, from ffprobe, before anything decodes it.

Sizes are reported both as stored and as displayed: the display size honours the sample aspect
ratio (anamorphic broadcast video) and the display-matrix rotation (phone video), because the HD and
16:9 promise of the corpus is about what a viewer sees, not about how the pixels are stored.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from curation.config import ProbeConfig
from curation.errors import Rejection
from curation.ffmpeg import ToolError, ffprobe_json, parse_rate

#: Demuxers that read still images or terminal text: ffprobe opens them, but they are not videos.
NOT_VIDEO_FORMATS = {"image2", "tty", "lavfi", "apng"}
#: Codecs that also hold still pictures (one frame, or cover art inside an audio file). Each frame of
#: them is a picture of its own, so Motion JPEG (mjpeg in AVI or MOV, as cameras write it) and PNG or
#: JPEG 2000 video are these codecs too: a stream of them is a video when it has several frames and a
#: duration, and a still otherwise.
STILL_CODECS = {"png", "mjpeg", "bmp", "gif", "webp", "tiff", "jpeg2000", "ansi"}
#: Animated-image codecs: never videos of the corpus, whatever their frame count.
ANIMATED_IMAGE_CODECS = {"gif", "webp", "apng", "ansi"}


def probe(path: str, cfg: ProbeConfig) -> dict[str, Any]:
    """Return the probe columns of ``path``, or raise Rejection when it is not a usable video."""
    try:
        info = ffprobe_json(path)
    except ToolError as exc:
        raise Rejection("unreadable", f"ffprobe cannot read the file: {exc.message}") from exc
    fmt = info.get("format") or {}
    format_name = str(fmt.get("format_name", ""))
    if format_name in NOT_VIDEO_FORMATS or format_name.endswith("_pipe"):
        kind = "still image" if format_name == "image2" or format_name.endswith("_pipe") else "file"
        raise Rejection(
            "not_a_video", f"the file is a {kind} ({format_name.removesuffix('_pipe')} format), not a video"
        )
    streams = info.get("streams") or []
    container_duration = _duration({}, fmt)
    video = _main_video_stream(streams, container_duration)
    if video is None:
        raise Rejection("no_video_stream", "the file has no moving-picture stream (streams: "
                                           f"{_describe(streams, container_duration)})")
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)

    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if min(width, height) < cfg.min_dimension or max(width, height) > cfg.max_dimension:
        raise Rejection(
            "absurd_dimensions",
            f"{width}x{height} is outside {cfg.min_dimension}..{cfg.max_dimension} pixels per side",
        )
    sar = _sample_aspect(video)
    rotation = _rotation(video)
    display_w, display_h = round(width * sar), height
    if rotation % 180:
        display_w, display_h = display_h, display_w

    fps = parse_rate(video.get("r_frame_rate"))
    avg_fps = parse_rate(video.get("avg_frame_rate"))
    if fps is None and avg_fps is None:
        raise Rejection("no_frame_rate", "ffprobe reports no frame rate for the video stream")
    fps = fps or avg_fps
    duration = _duration(video, fmt)
    if duration is None or duration <= 0:
        raise Rejection("no_duration", "the container reports no duration for the video")
    vfr = avg_fps is not None and abs(float(avg_fps) - float(fps)) > cfg.vfr_tolerance * float(fps)
    nb_frames = video.get("nb_frames")
    return {
        "container": format_name,
        "video_codec": video.get("codec_name"),
        "pix_fmt": video.get("pix_fmt"),
        "width": width,
        "height": height,
        "sar": f"{sar.numerator}:{sar.denominator}",
        "rotation": rotation,
        "display_width": display_w,
        "display_height": display_h,
        "display_aspect": display_w / display_h,
        "fps": float(fps),
        "avg_fps": float(avg_fps) if avg_fps else None,
        "vfr": vfr,
        "duration": duration,
        "nb_frames": int(nb_frames) if str(nb_frames or "").isdigit() else None,
        "has_audio": audio is not None,
        "audio_codec": audio.get("codec_name") if audio else None,
    }


def _main_video_stream(streams: list[dict[str, Any]], container_duration: float | None) -> dict[str, Any] | None:
    """The first real video stream: cover art and single still pictures don't count."""
    for stream in streams:
        if stream.get("codec_type") == "video" and _still_kind(stream, container_duration) is None:
            return stream
    return None


def _still_kind(stream: dict[str, Any], container_duration: float | None) -> str | None:
    """Why a video-typed stream is a still picture ("cover art", "one frame", ...), or None for a video."""
    if (stream.get("disposition") or {}).get("attached_pic"):
        return "cover art"
    codec = stream.get("codec_name")
    if codec not in STILL_CODECS:
        return None
    if codec in ANIMATED_IMAGE_CODECS:
        return "animated image"
    frames = _frame_count(stream, container_duration)
    if frames is None or frames < 2:
        return "one frame" if frames == 1 else "still picture (no frame count or duration)"
    return None


def _frame_count(stream: dict[str, Any], container_duration: float | None) -> int | None:
    """Frames of a stream: ``nb_frames`` when the container counts them, else duration x average rate
    (Matroska counts neither frames nor stream durations: the container's duration stands in)."""
    nb_frames = str(stream.get("nb_frames") or "")
    if nb_frames.isdigit():
        return int(nb_frames)
    rate = parse_rate(stream.get("avg_frame_rate"))
    duration = _duration(stream, {"duration": container_duration})
    if rate is None or duration is None or duration <= 0:
        return None
    return int(round(duration * float(rate)))


def _describe(streams: list[dict[str, Any]], container_duration: float | None) -> str:
    """``audio (mp3), video (mjpeg: cover art)``: each stream's kind, codec and, for stills, why."""
    parts = []
    for stream in streams:
        what = f"{stream.get('codec_type', '?')} ({stream.get('codec_name', '?')}"
        if stream.get("codec_type") == "video":
            what += f": {_still_kind(stream, container_duration) or 'video'}"
        parts.append(what + ")")
    return ", ".join(parts) or "none"


def _sample_aspect(video: dict[str, Any]) -> Fraction:
    """Sample (pixel) aspect ratio; ``0:1`` or missing means square pixels."""
    text = video.get("sample_aspect_ratio") or "1:1"
    try:
        num, den = (int(x) for x in text.split(":"))
    except ValueError:
        return Fraction(1)
    return Fraction(num, den) if num > 0 and den > 0 else Fraction(1)


def _rotation(video: dict[str, Any]) -> int:
    """Rotation in degrees from the display matrix side data (or the legacy ``rotate`` tag)."""
    for side in video.get("side_data_list") or []:
        if "rotation" in side:
            return int(round(float(side["rotation"])))
    tag = (video.get("tags") or {}).get("rotate")
    return int(tag) if tag and tag.lstrip("-").isdigit() else 0


def _duration(video: dict[str, Any], fmt: dict[str, Any]) -> float | None:
    """Video stream duration, falling back to the container's (Matroska has no stream duration)."""
    for value in (video.get("duration"), fmt.get("duration")):
        try:
            if value is not None:
                return float(value)
        except ValueError:
            continue
    return None
