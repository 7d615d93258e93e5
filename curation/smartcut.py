"""Smart cut (``extract.mode: smart``): re-encode only the frames a stream copy cannot start or end on.

A stream copy can only start on a keyframe, and with B-frames it can only end where the packets shown
so far are exactly a run of packets in decode order (a frame shown before the end may be predicted from
one shown after it: cutting there breaks that frame, or shows one too many). So a clip of frames
[S, E) of the source's nominal timeline is joined from up to three parts:

* head [S, K): the frames before K, the first keyframe at or after S, re-encoded;
* body [K, C): packets copied from the source, K up to C, the last clean end at or before E;
* tail [C, E): the few frames after C (fewer than a mini-GOP), re-encoded.

No head when S is a keyframe; no tail when E is a clean end; nothing copied when the clip holds no
keyframe, and then the clip is simply re-encoded (as it is whenever the source cannot be smart-cut: see
``obstacle``). LosslessCut's smart cut, the peer this follows, re-encodes the head only and cuts the end
by time, which with B-frames can keep a frame past the end or one that cannot be decoded; here the end
is found from the packets' order, so the clip is exactly its span.

One ffmpeg writes the parts, an input each (seeking to its own frames, so only those and their
pre-roll are decoded, and the body's packets are not decoded at all); a second joins them with the
concat demuxer from a list file. (The demuxer's own inpoint and outpoint could read the body straight
from the source, but an outpoint ends the file when *any* stream reaches it: an audio packet
interleaved before the body's last video packets would drop them.) The demuxer's automatic
``h264_mp4toannexb`` puts each part's own SPS and PPS in-band before its first keyframe, so the x264
parts and the copied body decode with their own parameter sets. The re-encoded parts match the source
where a copy would otherwise break or jar: H.264 at the same size, pixel format, profile, level, colour
description and time base. They also keep the decode timestamps rising across the joins: the head holds
frames back for reordering exactly as the source does (``HEAD_REORDER``), the tail not at all.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from curation.config import ExtractConfig
from curation.ffmpeg import ffprobe_json, run

#: The profiles x264 can write, by ffprobe's names for them.
X264_PROFILES = {"Constrained Baseline": "baseline", "Baseline": "baseline", "Main": "main", "High": "high"}
#: x264 settings giving each reorder delay (frames a decoder holds back for B-frames) a head may have to match.
HEAD_REORDER = {0: "bframes=0", 1: "bframes=3:b-pyramid=none", 2: "bframes=3:b-pyramid=normal"}
#: The tail reorders nothing, so its decode timestamps can never fall behind the body's.
TAIL_REORDER = HEAD_REORDER[0]
#: Packets are read this far past the clip's end: those shown before the end may be decoded after it.
LOOKAHEAD_S = 1.0
#: Colour description copied from the source into the re-encoded parts' VUI (ffmpeg option, ffprobe field).
COLOUR_OPTIONS = (("-color_range", "color_range"), ("-colorspace", "color_space"),
                  ("-color_trc", "color_transfer"), ("-color_primaries", "color_primaries"))


class NotSmart(Exception):
    """This clip cannot be smart-cut; the message says why (it goes into the row's ``extract_mode``)."""


def obstacle(row: dict[str, Any], cfg: ExtractConfig, scaled: bool) -> str | None:
    """Why the clip's source cannot be smart-cut whatever its packets, or None. ``scaled``: the output needs
    other pixels than the source's (``extract.short_side``, anamorphic or odd sizes), so nothing can be copied."""
    if row.get("video_codec") != "h264":
        return f"codec {row.get('video_codec')}"
    if cfg.codec != "libx264":
        return f"encoder {cfg.codec}"
    if row.get("vfr"):
        return "variable frame rate"
    if int(row.get("rotation") or 0):
        return "rotation"
    if scaled:
        return "scaling"
    if row.get("pix_fmt") != "yuv420p":
        return f"pixel format {row.get('pix_fmt')}"
    if cfg.keep_audio:
        return "audio kept"
    return None


@dataclass(frozen=True)
class Packet:
    frame: int  # place on the nominal timeline, from its presentation time
    time_s: float  # its presentation time from the stream's first
    reorder: int  # frames its presentation waits after its decode (the decoder's reorder delay)
    key: bool


@dataclass(frozen=True)
class Stream:
    """What a smart cut needs to know of the source's video stream (around a clip, or all of it)."""

    info: dict[str, Any]  # ffprobe's stream entries: profile, level, time base, colours
    raw: list[tuple[int, int, bool]]  # (pts, dts, keyframe) of its packets in decode order, in the time base
    time_base: Fraction
    origin: Fraction  # the stream's first presentation time

    def packets(self, fps: float) -> list[Packet]:
        """The packets placed on the nominal timeline of ``fps`` frames a second."""
        rate = Fraction(fps)
        return [Packet(round(float((pts * self.time_base - self.origin) * rate)),
                       float(pts * self.time_base - self.origin), round(float((pts - dts) * self.time_base * rate)),
                       key) for pts, dts, key in self.raw]


@dataclass(frozen=True)
class Plan:
    start: int
    keyframe: int  # the body's first frame
    keyframe_s: float  # its presentation time
    clean_end: int  # the body's end (exclusive)
    end: int
    reorder: int  # the source's reorder delay at the keyframe, in frames


STREAM_ENTRIES = "stream=profile,level,time_base,start_pts,color_range,color_space,color_transfer,color_primaries"


def read_stream(path: str, row: dict[str, Any] | None = None) -> Stream:
    """The source's stream entries and its packets: all of them (``row`` None: one ffprobe for every clip of a
    source, since each process start costs more than reading a source's packets), or from the keyframe before
    ``row``'s clip to just past its end."""
    if row is None:
        return _stream(ffprobe_json(path, ["-select_streams", "v:0", "-show_entries",
                                           f"{STREAM_ENTRIES}:packet=pts,dts,flags"]))
    fps = float(row["fps"])
    header = ffprobe_json(path, ["-select_streams", "v:0", "-show_entries", STREAM_ENTRIES])
    info = (header.get("streams") or [{}])[0]
    origin = float(int(info.get("start_pts") or 0) * Fraction(info.get("time_base") or "1/1"))
    # The interval's times are absolute: the stream's start is added (ffprobe's "+" offsets would be measured
    # from the keyframe its seek lands on, not from the start asked for).
    start_s, end_s = origin + int(row["start_frame"]) / fps, origin + float(row["end_time"]) + LOOKAHEAD_S
    found = ffprobe_json(path, ["-select_streams", "v:0", "-read_intervals", f"{start_s:.6f}%{end_s:.6f}",
                                "-show_entries", "packet=pts,dts,flags"])
    return _stream({**header, "packets": found.get("packets", [])})


def _stream(found: dict[str, Any]) -> Stream:
    info = (found.get("streams") or [{}])[0]
    tb = Fraction(info.get("time_base") or "1/1")
    origin = int(info.get("start_pts") or 0) * tb
    return Stream(info, [(int(p["pts"]), int(p["dts"]), "K" in p.get("flags", "")) for p in found.get("packets", [])
                         if "N/A" not in (p.get("pts", "N/A"), p.get("dts", "N/A"))], tb, origin)


def plan(packets: list[Packet], start: int, end: int) -> Plan:
    """Where the copied body of frames [start, end) begins and ends; ``NotSmart`` when nothing can be copied."""
    first = next((i for i, p in enumerate(packets) if p.key and p.frame >= start), None)
    if first is None or packets[first].frame >= end:
        raise NotSmart("no keyframe inside the clip")
    keyframe = packets[first].frame
    seen: set[int] = set()
    clean_end = keyframe + 1  # the keyframe alone is always a clean run
    for n, packet in enumerate(packets[first:], 1):
        if packet.frame < keyframe or packet.frame >= end or packet.frame in seen:
            break  # shown before the keyframe (an open GOP's leading picture), past the end, or a repeat
        seen.add(packet.frame)
        if max(seen) == keyframe + n - 1:  # the n packets decoded so far are exactly the next n frames shown
            clean_end = keyframe + n
    return Plan(start, keyframe, packets[first].time_s, clean_end, end, packets[first].reorder)


def cut(row: dict[str, Any], cfg: ExtractConfig, out: Path, stream: Stream | None = None) -> str:
    """Smart-cut the clip of ``row`` into ``out``; its label: ``smart`` (parts re-encoded) or ``smart_copy``
    (the clip starts on a keyframe and ends on a clean end: all copied). ``stream``: the source's, when read
    already. Raises ``NotSmart`` or ``ToolError``."""
    source, fps = row["local_path"], float(row["fps"])
    stream = stream or read_stream(source, row)
    p = plan(stream.packets(fps), int(row["start_frame"]), int(row["end_frame"]))
    profile = X264_PROFILES.get(stream.info.get("profile") or "")
    if profile is None:
        raise NotSmart(f"profile {stream.info.get('profile')}")
    if p.start < p.keyframe and p.reorder not in HEAD_REORDER:
        raise NotSmart(f"reorder delay of {p.reorder} frames")
    # (file, first frame, end frame, seek time, x264 reorder settings or None for a copy)
    parts = [("body.mp4", p.keyframe, p.clean_end, p.keyframe_s, None)]
    if p.start < p.keyframe:
        parts.insert(0, ("head.mp4", p.start, p.keyframe, (p.start - 0.5) / fps, HEAD_REORDER[p.reorder]))
    if p.clean_end < p.end:
        parts.append(("tail.mp4", p.clean_end, p.end, (p.clean_end - 0.5) / fps, TAIL_REORDER))
    seconds = (p.end - p.start) / fps
    if len(parts) == 1:  # all copied: the body is the clip
        run(_parts_args(source, parts, stream.info, profile, cfg, {"body.mp4": out}), timeout_s=120 + 2 * seconds)
        return "smart_copy"
    with tempfile.TemporaryDirectory(prefix=".smart-", dir=out.parent) as tmp:
        work = Path(tmp)
        run(_parts_args(source, parts, stream.info, profile, cfg, {name: work / name for name, *_ in parts}),
            timeout_s=120 + 20 * seconds)
        listing = work / "parts.ffconcat"
        listing.write_text("ffconcat version 1.0\n" + "".join(
            f"file {name}\nduration {(end - first) / fps:.6f}\n" for name, first, end, _, _ in parts))
        # -copyts: the parts' timestamps as the demuxer lines them up (each after the last, from 0); without it
        # ffmpeg shifts them by an estimate of the input's start that a copied body can throw off.
        run(["-nostdin", "-y", "-loglevel", "error", "-copyts", "-f", "concat", "-i", str(listing),
             "-map", "0:v:0", "-c", "copy", "-an", "-map_metadata", "-1", *_timescale(stream.info),
             "-movflags", "+faststart", "-f", "mp4", str(out)], timeout_s=120 + 2 * seconds)
    return "smart"


def _parts_args(source: str, parts: list[tuple[str, int, int, float, str | None]], info: dict[str, Any],
                profile: str, cfg: ExtractConfig, outs: dict[str, Path]) -> list[str]:
    """One ffmpeg writing every part from an input of its own, so each reads only its own frames.

    A re-encoded part seeks accurately from half a frame before its first frame, as the re-encode mode does,
    and decodes only those frames and their pre-roll. The body seeks to its keyframe's own time (ffmpeg 5.1's
    stream copy from an earlier keyframe garbles the timestamps) and keeps exactly the body's packets, the
    first ones in decode order (``plan``); none of them is decoded."""
    args = ["-nostdin", "-y", "-loglevel", "error"]
    for _, _, _, seek, _ in parts:
        args += ["-threads", str(cfg.threads), "-ss", f"{max(0.0, seek):.6f}", "-i", source]
    level = int(info.get("level") or 0)
    colours = [a for option, field in COLOUR_OPTIONS if (info.get(field) or "unknown") != "unknown"
               for a in (option, info[field])]
    for i, (name, first, end, _, reorder) in enumerate(parts):
        args += ["-map", f"{i}:v:0", "-frames:v", str(end - first)]
        if reorder is None:
            args += ["-c:v", "copy"]
        else:
            args += ["-c:v", "libx264", "-preset", cfg.preset, "-crf", str(cfg.crf), "-pix_fmt", "yuv420p",
                     "-profile:v", profile, *(["-level:v", f"{level // 10}.{level % 10}"] if level > 0 else []),
                     "-x264-params", reorder, *colours, "-fps_mode", "passthrough", "-threads", str(cfg.threads)]
        args += ["-an", "-map_metadata", "-1", *_timescale(info), "-movflags", "+faststart", "-f", "mp4",
                 str(outs[name])]
    return args


def _timescale(info: dict[str, Any]) -> list[str]:
    """Keep the source's time base, so the parts' timestamps and the copied body's share one clock."""
    tb = Fraction(info.get("time_base") or "1/1")
    return ["-video_track_timescale", str(tb.denominator)] if tb.numerator == 1 else []


def timeline_problem(info: dict[str, Any], frames: int, fps: float) -> str | None:
    """What is wrong with the presentation times of a cut clip (``info``: ffprobe's ``stream=time_base`` and
    ``packet=pts`` of it), or None: it must show ``frames`` frames, the first at 0 and each one frame after the
    last (so the last at ``frames - 1``), as the planned span does."""
    tb = Fraction((info.get("streams") or [{}])[0].get("time_base") or "1/1")
    pts = sorted(int(p["pts"]) for p in info.get("packets", []) if p.get("pts") not in (None, "N/A"))
    if len(pts) != frames:
        return f"{len(pts)} frames shown instead of {frames}"
    for i, value in enumerate(pts):
        place = float(value * tb) * fps
        if abs(place - i) > 0.25:
            return f"frame {i} shown at {place:.2f} frames from the start"
    return None
