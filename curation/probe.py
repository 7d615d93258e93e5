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
#: Codecs of still pictures (one frame, or cover art inside an audio file).
STILL_CODECS = {"png", "mjpeg", "bmp", "gif", "webp", "tiff", "jpeg2000", "ansi"}


def probe(path: str, cfg: ProbeConfig) -> dict[str, Any]:
    """Return the probe columns of ``path``, or raise Rejection when it is not a usable video."""
    try:
        info = ffprobe_json(path)
    except ToolError as exc:
        raise Rejection("unreadable", f"ffprobe cannot read the file: {exc.message}") from exc
    fmt = info.get("format") or {}
    format_name = str(fmt.get("format_name", ""))
    if format_name in NOT_VIDEO_FORMATS or format_name.endswith("_pipe"):
        raise Rejection("not_a_video", f"the file is a {format_name.removesuffix('_pipe')} file, not a video")
    streams = info.get("streams") or []
    video = _main_video_stream(streams)
    if video is None:
        kinds = sorted({s.get("codec_type", "?") for s in streams}) or ["none"]
        raise Rejection("no_video_stream", f"the file has no video stream (streams: {', '.join(kinds)})")
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


def _main_video_stream(streams: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first real video stream: cover art and still-image codecs don't count."""
    for stream in streams:
        if stream.get("codec_type") != "video" or stream.get("codec_name") in STILL_CODECS:
            continue
        if (stream.get("disposition") or {}).get("attached_pic"):
            continue
        return stream
    return None


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
