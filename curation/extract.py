"""Extract stage: cut one clip out of its source with ffmpeg and check the result.

The default re-encode is frame-exact: ffmpeg seeks (accurately) half a frame before the first
wanted frame, so rounding cannot lose or add it, and stops after exactly the span's frame count
(for variable-frame-rate sources, half a frame before the first unwanted timestamp). Output pixels
are square and upright (rotation is applied, anamorphic video is resampled to its display size) so
that any reader, however naive, sees what a viewer sees.
Stream copy is offered for speed; its start moves back to a keyframe, and the row says so.
Smart cut (``curation.smartcut``) is frame-exact too: it re-encodes only the frames before the clip's
first keyframe (and the few after its last clean end) and copies the rest; a clip it cannot cut that
way is re-encoded, and ``extract_mode`` says which happened and why.

A source's clips are cut together (``extract_source``): one ffmpeg decodes a run of consecutive
clips once and feeds one encoder per clip through ``split`` and ``trim``, instead of one ffmpeg per
clip each decoding again from the keyframe before its start. Each clip still gets an encoder of its
own, fed the same frames with the same timestamps, so it is byte-identical to the clip a separate
ffmpeg would cut; the checks after extraction are the same.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from curation import smartcut
from curation.config import ExtractConfig
from curation.errors import Rejection
from curation.ffmpeg import ToolError, ffprobe_json, parse_rate, run
from shards.hashing import file_sha256

#: A gap this long between two clips of a source ends a shared pass: decoding through it would cost more than
#: the seek of a new ffmpeg (keyframes of web video are rarely more than 5 s apart).
PASS_MAX_GAP_S = 5.0


def extract_source(rows: list[dict[str, Any]], cfg: ExtractConfig, clips_dir: Path) -> list[dict[str, Any] | Rejection]:
    """Cut every clip of one source; per row, in order, its new columns or the ``Rejection`` that stopped it.

    Runs of consecutive clips share one decode (``plan_passes``). When a shared ffmpeg fails, its clips are
    cut again one by one, so that the failure is pinned on the clip that causes it. In smart mode, a source
    that cannot be smart-cut at all (``smartcut.obstacle``: a property of the source and the config) is
    re-encoded in those shared passes too.
    """
    why = _smart_obstacle(rows[0], cfg) if cfg.mode == "smart" and rows else None
    if why is not None:  # nothing of this source can be smart-cut: its clips are re-encoded, in shared passes
        label = {"extract_mode": f"reencode (fallback: {why})"}
        return [out if isinstance(out, Rejection) else {**out, **label}
                for out in extract_source(rows, cfg.model_copy(update={"mode": "reencode"}), clips_dir)]
    results: dict[str, dict[str, Any] | Rejection] = {}
    stream = _smart_stream(rows, cfg)
    for group in plan_passes(rows, cfg):
        if len(group) > 1:
            try:
                results.update(_extract_together(group, cfg, clips_dir))
                continue
            except ToolError:
                pass  # below: each clip alone, each with its own outcome
        for row in group:
            try:
                results[row["key"]] = extract(row, cfg, clips_dir, stream)
            except Rejection as exc:
                results[row["key"]] = exc
    return [results[row["key"]] for row in rows]


def plan_passes(rows: list[dict[str, Any]], cfg: ExtractConfig) -> list[list[dict[str, Any]]]:
    """Groups of clips that one ffmpeg cuts: consecutive in time, at most ``cfg.clips_per_pass`` of them,
    with no gap over ``PASS_MAX_GAP_S``. A clip cut by time (variable frame rate), by stream copy, by smart
    cut or with its audio gets a command of its own, as before."""
    alone = cfg.mode != "reencode" or cfg.keep_audio or cfg.clips_per_pass == 1
    groups: list[list[dict[str, Any]]] = []
    for row in sorted(rows, key=lambda r: int(r["start_frame"])):
        last = groups[-1] if groups else None
        if (last is not None and not alone and not row.get("vfr") and not last[0].get("vfr")
                and len(last) < cfg.clips_per_pass
                and float(row["start_time"]) - float(last[-1]["end_time"]) <= PASS_MAX_GAP_S
                and int(row["start_frame"]) >= int(last[-1]["end_frame"])):
            last.append(row)
        else:
            groups.append([row])
    return groups


def _extract_together(group: list[dict[str, Any]], cfg: ExtractConfig,
                      clips_dir: Path) -> dict[str, dict[str, Any] | Rejection]:
    """One ffmpeg for the clips of ``group`` (constant frame rate, re-encoded); raises ``ToolError`` if it fails."""
    paths = [_destination(row, clips_dir) for row in group]
    args = _together_args(group, cfg, [partial for _, partial in paths])
    span = float(group[-1]["end_time"]) - float(group[0]["start_time"])
    try:
        run(args, timeout_s=120 + 20 * span)
    except ToolError:
        for _, partial in paths:
            partial.unlink(missing_ok=True)
        raise
    out: dict[str, dict[str, Any] | Rejection] = {}
    for row, (dest, partial) in zip(group, paths, strict=True):
        try:
            out[row["key"]] = _finish(row, cfg, partial, dest, {"extract_mode": cfg.mode, "keyframe_snapped": False})
        except Rejection as exc:
            out[row["key"]] = exc
    return out


def _together_args(group: list[dict[str, Any]], cfg: ExtractConfig, outs: list[Path]) -> list[str]:
    """ffmpeg arguments cutting every clip of ``group`` from one decode.

    The input seeks as ``_reencode_args`` does for the first clip. Each clip's branch then does what its
    own command would: drop the frames before its own seek point (ffmpeg's accurate seek is such a
    ``trim``), keep its frame count, and shift its timestamps by its own seek as ffmpeg would have (the
    seek in microseconds rounded to the stream's time base: a tick's difference already changes the
    encoded bytes); each encoder sees exactly what it would alone.
    """
    seek = float(f"{_seek_time(group[0]):.6f}")  # the value its own command passes to -ss
    size = output_size(int(group[0]["display_width"]), int(group[0]["display_height"]),
                       group[0].get("sar") or "1:1", cfg.short_side)
    scale = f",scale={size[0]}:{size[1]},setsar=1" if size is not None else ""
    graph = [f"[0:v:0]split={len(group)}" + "".join(f"[in{i}]" for i in range(len(group)))]
    for i, row in enumerate(group):
        own_seek = float(f"{_seek_time(row):.6f}")
        frames = int(row["end_frame"]) - int(row["start_frame"])
        shift = f"round({own_seek:.6f}/TB)-round({seek:.6f}/TB)"
        graph.append(f"[in{i}]trim=start={own_seek - seek:.6f},trim=end_frame={frames},setpts=PTS-({shift})"
                     f"{scale}[out{i}]")
    args = ["-nostdin", "-y", "-loglevel", "error", "-threads", str(cfg.threads), "-filter_complex_threads", "1",
            "-ss", f"{seek:.6f}", "-i", group[0]["local_path"], "-filter_complex", ";".join(graph)]
    for i, out in enumerate(outs):
        args += ["-map", f"[out{i}]", *_encoder_args(cfg), "-an", "-map_metadata", "-1", "-movflags", "+faststart",
                 "-f", "mp4", str(out)]
    return args


def _destination(row: dict[str, Any], clips_dir: Path) -> tuple[Path, Path]:
    """Where the clip of ``row`` goes, and the partial file ffmpeg writes first."""
    dest = clips_dir / row["source_id"] / f"{row['key']}.mp4"
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest, dest.with_name(f".{dest.name}.part")


def _finish(row: dict[str, Any], cfg: ExtractConfig, partial: Path, dest: Path,
            columns: dict[str, Any], info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check the clip ffmpeg wrote to ``partial``, move it to ``dest``; the row's new columns. ``info``: the
    clip's ffprobe (``CLIP_ENTRIES`` at least), when read already."""
    facts = _clip_facts(partial, info)
    if cfg.mode != "copy":  # a stream copy ends on a packet boundary: clip_duration says where
        _check_span(row, facts, partial)
    os.replace(partial, dest)
    return {**columns, **facts, "clip_path": str(dest), "clip_sha256": file_sha256(dest),
            "clip_bytes": dest.stat().st_size}


def extract(row: dict[str, Any], cfg: ExtractConfig, clips_dir: Path,
            stream: smartcut.Stream | None = None) -> dict[str, Any]:
    """Cut the clip described by ``row`` into ``clips_dir/<source_id>/<key>.mp4``; return the new columns.
    ``stream``: smart cut's reading of the source, when ``extract_source`` made it once for all its clips."""
    dest, partial = _destination(row, clips_dir)
    if cfg.mode == "smart":
        return _extract_smart(row, cfg, partial, dest, stream)
    return _cut(row, cfg, partial, dest, {"extract_mode": cfg.mode, "keyframe_snapped": False})


def _smart_obstacle(row: dict[str, Any], cfg: ExtractConfig) -> str | None:
    size = output_size(int(row["display_width"]), int(row["display_height"]), row.get("sar") or "1:1", cfg.short_side)
    return smartcut.obstacle(row, cfg, scaled=size is not None)


def _smart_stream(rows: list[dict[str, Any]], cfg: ExtractConfig) -> smartcut.Stream | None:
    """The source's packets, read once for all its clips when they are to be smart-cut (else each clip reads
    its own stretch, and fails over to the re-encode with ffprobe's reason)."""
    if cfg.mode != "smart" or not rows:
        return None
    try:
        return smartcut.read_stream(rows[0]["local_path"])
    except ToolError:
        return None


def _extract_smart(row: dict[str, Any], cfg: ExtractConfig, partial: Path, dest: Path,
                   stream: smartcut.Stream | None) -> dict[str, Any]:
    """A smart cut whose clip passes the re-encode's checks and shows exactly its span's frames; else the
    re-encode, labelled ``reencode (fallback: <why>)``."""
    why = _smart_obstacle(row, cfg)
    if why is None:
        try:
            label = smartcut.cut(row, cfg, partial, stream)
            info = ffprobe_json(str(partial), ["-select_streams", "v:0", "-count_packets", "-show_entries",
                                               f"{CLIP_ENTRIES},time_base:packet=pts"])
            problem = smartcut.timeline_problem(info, int(row["end_frame"]) - int(row["start_frame"]),
                                                float(row["fps"]))
            if problem is not None:
                raise Rejection("extract_mismatch", problem)
            return _finish(row, cfg, partial, dest, {"extract_mode": label, "keyframe_snapped": False}, info)
        except smartcut.NotSmart as exc:
            why = str(exc)
        except ToolError as exc:
            why = f"ffmpeg: {exc.message}"
        except Rejection as exc:
            why = exc.detail
        partial.unlink(missing_ok=True)
    return _cut(row, cfg.model_copy(update={"mode": "reencode"}), partial, dest,
                {"extract_mode": f"reencode (fallback: {why})", "keyframe_snapped": False})


def _cut(row: dict[str, Any], cfg: ExtractConfig, partial: Path, dest: Path, columns: dict[str, Any]) -> dict[str, Any]:
    """Cut by re-encode or stream copy (``cfg.mode``) into ``partial``, check it, move it to ``dest``."""
    start, end = float(row["start_time"]), float(row["end_time"])
    if cfg.mode == "copy":
        keyframe = _keyframe_at_or_before(row["local_path"], start)
        columns["keyframe_snapped"] = abs(keyframe - start) > 0.5 / float(row["fps"])
        columns["start_time"], columns["start_frame"] = keyframe, round(keyframe * float(row["fps"]))
        args = _copy_args(row["local_path"], keyframe, end, cfg, partial)
    else:
        args = _reencode_args(row, cfg, partial)
    try:
        run(args, timeout_s=120 + 20 * (end - start))
    except ToolError as exc:
        partial.unlink(missing_ok=True)
        raise Rejection("extract_failed", f"ffmpeg could not cut {start:.3f}-{end:.3f} s: {exc.message}") from exc
    return _finish(row, cfg, partial, dest, columns)


def _reencode_args(row: dict[str, Any], cfg: ExtractConfig, out: Path) -> list[str]:
    """ffmpeg arguments for a frame-exact H.264 re-encode of frames [start_frame, end_frame)."""
    half_frame = 0.5 / float(row["fps"])
    seek = _seek_time(row)
    # -threads before -i bounds the decoder too; after it, only the encoder.
    args = ["-nostdin", "-y", "-loglevel", "error", "-threads", str(cfg.threads), "-ss", f"{seek:.6f}"]
    if row.get("vfr"):
        # Frames are missing from the nominal timeline: stop by time, on the input side, where the
        # source's own timestamps are compared (an output -t sees them rounded to the encoder's
        # 1/fps grid, which pushes out a last frame sitting one frame before the end).
        args += ["-t", f"{float(row['end_time']) - half_frame - seek:.6f}", "-i", row["local_path"]]
        args += ["-map", "0:v:0"]
    else:  # constant rate: stop by count, which no timestamp rounding can disturb
        frames = int(row["end_frame"]) - int(row["start_frame"])
        args += ["-i", row["local_path"], "-map", "0:v:0", "-frames:v", str(frames)]
    size = output_size(int(row["display_width"]), int(row["display_height"]), row.get("sar") or "1:1", cfg.short_side)
    if size is not None:
        args += ["-vf", f"scale={size[0]}:{size[1]},setsar=1"]
    args += _encoder_args(cfg)
    args += _audio_args(cfg, reencode=True)
    return [*args, "-map_metadata", "-1", "-movflags", "+faststart", "-f", "mp4", str(out)]


def _seek_time(row: dict[str, Any]) -> float:
    """Where a clip's re-encode seeks: half a frame before its first frame, so rounding cannot lose or add it."""
    return max(0.0, float(row["start_time"]) - 0.5 / float(row["fps"]))


def _encoder_args(cfg: ExtractConfig) -> list[str]:
    """The video encoder of a re-encoded clip (the same whether the clip is cut alone or with others)."""
    return ["-c:v", cfg.codec, "-preset", cfg.preset, "-crf", str(cfg.crf), "-pix_fmt", "yuv420p",
            "-fps_mode", "passthrough", "-threads", str(cfg.threads)]


def _copy_args(source: str, keyframe: float, end: float, cfg: ExtractConfig, out: Path) -> list[str]:
    """ffmpeg arguments for a stream copy starting exactly at ``keyframe``."""
    args = ["-nostdin", "-y", "-loglevel", "error", "-ss", f"{keyframe:.6f}", "-i", source,
            "-t", f"{end - keyframe:.6f}", "-map", "0:v:0", "-c:v", "copy"]
    args += _audio_args(cfg, reencode=False)
    return [*args, "-avoid_negative_ts", "make_zero", "-map_metadata", "-1", "-movflags", "+faststart",
            "-f", "mp4", str(out)]


def _audio_args(cfg: ExtractConfig, reencode: bool) -> list[str]:
    if not cfg.keep_audio:
        return ["-an"]
    return ["-map", "0:a:0?", "-c:a", "aac" if reencode else "copy"]


def output_size(display_w: int, display_h: int, sar: str, short_side: int | None) -> tuple[int, int] | None:
    """Size to scale to, or None when the source's pixels can be kept as they are.

    Scaling happens when the pixels are not square (resample to the display size), when a short
    side is configured and the video is larger (never upscale), or when a side is odd (yuv420p
    needs even sides).
    """
    w, h = display_w, display_h
    if short_side is not None and min(w, h) > short_side:
        factor = short_side / min(w, h)
        w, h = w * factor, h * factor
    even_w, even_h = max(2, round(w / 2) * 2), max(2, round(h / 2) * 2)
    if sar == "1:1" and (even_w, even_h) == (display_w, display_h):
        return None
    return even_w, even_h


def _keyframe_at_or_before(source: str, time_s: float) -> float:
    """Presentation time of the last video keyframe at or before ``time_s``."""
    window = f"{max(0.0, time_s - 60):.6f}%{time_s + 0.001:.6f}"
    info = ffprobe_json(source, ["-select_streams", "v:0", "-read_intervals", window,
                                 "-show_entries", "packet=pts_time,flags"])
    keyframes = [float(p["pts_time"]) for p in info.get("packets", [])
                 if "K" in p.get("flags", "") and p.get("pts_time") not in (None, "N/A")
                 and float(p["pts_time"]) <= time_s + 1e-6]
    return max(keyframes) if keyframes else 0.0


#: What ``_clip_facts`` reads of a clip (with ffprobe's ``-count_packets``).
CLIP_ENTRIES = "stream=width,height,r_frame_rate,avg_frame_rate,duration,nb_read_packets"


def _clip_facts(path: Path, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Size, rate, frame count and duration of an extracted clip (packets counted, nothing decoded). ``info``:
    its ffprobe with ``CLIP_ENTRIES``, when read already."""
    try:
        info = info or ffprobe_json(str(path), ["-select_streams", "v:0", "-count_packets", "-show_entries",
                                                CLIP_ENTRIES])
    except ToolError as exc:
        path.unlink(missing_ok=True)
        raise Rejection("extract_failed", f"the extracted clip is unreadable: {exc.message}") from exc
    streams = info.get("streams") or [{}]
    stream = streams[0]
    rate = parse_rate(stream.get("avg_frame_rate")) or parse_rate(stream.get("r_frame_rate"))
    return {
        "clip_width": int(stream.get("width") or 0),
        "clip_height": int(stream.get("height") or 0),
        "clip_fps": float(rate) if rate else None,
        "clip_frames": int(stream.get("nb_read_packets") or 0),
        "clip_duration": float(stream.get("duration") or 0.0),
    }


def _check_span(row: dict[str, Any], facts: dict[str, Any], partial: Path) -> None:
    """Reject a re-encoded clip whose length is off its recorded span by more than one frame.

    Frame counts are compared only for constant-frame-rate sources: a variable-frame-rate source
    has fewer frames than its nominal timeline, so there the duration is what must match.
    """
    frame = 1.0 / float(row["fps"])
    wanted_s = float(row["end_time"]) - float(row["start_time"])
    wanted_frames = int(row["end_frame"]) - int(row["start_frame"])
    problems = []
    if abs(facts["clip_duration"] - wanted_s) > frame + 1e-3:
        problems.append(f"duration {facts['clip_duration']:.3f} s instead of {wanted_s:.3f} s")
    if not row.get("vfr") and abs(facts["clip_frames"] - wanted_frames) > 1:
        problems.append(f"{facts['clip_frames']} frames instead of {wanted_frames}")
    if problems:
        partial.unlink(missing_ok=True)
        raise Rejection("extract_mismatch", "the clip does not match its span: " + "; ".join(problems))

