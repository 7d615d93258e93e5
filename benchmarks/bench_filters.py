"""Filter cost: CPU seconds of each filter per clip-second, as a ratio to decoding the clip once.

Clips: ``--clip-seconds`` of each HD video of ``../shared/testvideos`` (else of the project's
sample videos), re-encoded as the extract stage does (H.264 ``veryfast``, CRF 20), so they have the
GOP structure of real clips. Baseline, measured in the same process on the same clips: ``ffmpeg
-threads 1 -i CLIP -f null -`` (one single-threaded decode of every frame, as the filter stage's
decoder runs under Ray). Rows:

- ``sample``: the shared frame sampler (one decode, the sampled frames converted to every size);
- ``sample without native-size frames``: the same sampler without the frames at the clip's own size that
  only the sharpness filter asks for (what the sample cost before it);
- ``quality``, ``motion`` and ``sharpness``: each filter's own work on the sample (excluding the decode);
- ``text`` and ``watermark``: added by the text/watermark filters' author (same ``ROWS`` registry);
  ``text as before issue 13``: the detector on 3 whole frames and nothing else (the text filter until
  overlay and scene text were told apart), the baseline of the extra CPU the text filter may take now
  (at most 1.3x the stage): the table ends with the stage's cost over the stage with that text filter;
- ``stage``: the whole filter stage on one clip (``ClipFilter.judge`` in score-only mode, so every
  filter runs), decode included, which is what a clip costs the pipeline.

CPU time is the process's (``time.process_time``; ffmpeg's from ``os.times`` of children), so
threads of torch or OpenCV count in full. ``--record FILE`` appends the table, machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curation.config import CurationConfig, WatermarkFilterConfig  # noqa: E402
from curation.filtering import ClipFilter  # noqa: E402
from curation.filters.motion import motion_scores  # noqa: E402
from curation.filters.quality import frame_scores  # noqa: E402
from curation.filters.sharpness import sharpness_scores  # noqa: E402
from curation.filters.text import pick_frames  # noqa: E402
from curation.filters.watermark import watermark_score  # noqa: E402
from curation.frames import FrameSample, sample_clip  # noqa: E402
from curation.probe import probe  # noqa: E402

log = logging.getLogger("bench_filters")

ROOT = Path(__file__).resolve().parent.parent
SHARED_VIDEOS = ROOT.parent / "shared" / "testvideos"


@dataclass
class Clip:
    """One benchmark clip and what the filters need of it: its probe row and its frame samples."""

    path: Path
    seconds: float
    row: dict[str, Any]
    samples: dict[str, FrameSample] = field(default_factory=dict)


def make_clips(scratch: Path, seconds: float) -> list[Clip]:
    """The first ``seconds`` of each HD (short side >= 720) test video, re-encoded like extracted clips."""
    sources = sorted(p for p in SHARED_VIDEOS.glob("*/*") if p.suffix in (".mp4", ".mkv")) if SHARED_VIDEOS.is_dir() \
        else []
    if not sources:
        from demo.sample_videos import make_sample_videos

        sources = make_sample_videos(scratch / "videos")
    clips = []
    for source in sources:
        facts = probe(str(source), CurationConfig().probe)
        if min(facts["display_width"], facts["display_height"]) < 720:
            continue
        out = scratch / f"{source.parent.name}-{source.stem}.mp4"
        subprocess.run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-i", str(source), "-t", f"{seconds}",
                        "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
                        str(out)], check=True)
        length = min(seconds, facts["duration"])
        clips.append(Clip(out, length, {**facts, "clip_path": str(out), "clip_duration": length,
                                        "start_time": 0.0, "end_time": length}))
    return clips


def decode_seconds(clip: Clip) -> float:
    """CPU seconds of one single-threaded ffmpeg decode of the whole clip (the baseline)."""
    before = os.times()
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-threads", "1", "-i", str(clip.path), "-f", "null",
                    "-"], check=True)
    after = os.times()
    return (after.children_user - before.children_user) + (after.children_system - before.children_system)


#: A benchmark row: its name and the work it times on one clip (samples already in ``clip.samples``).
Row = tuple[str, Callable[[Clip, ClipFilter], Any]]


def _sample(clip: Clip, judge: ClipFilter) -> None:
    cfg = judge.cfg
    clip.samples = sample_clip(str(clip.path), cfg.frames, judge.widths(), gap_s=cfg.motion.gap_s, threads=cfg.threads)


def _sample_without_native(clip: Clip, judge: ClipFilter) -> None:
    """The sampler as it was before the sharpness filter asked for frames at the clip's own size."""
    cfg = judge.cfg
    widths = {name: width for name, width in judge.widths().items() if name != "native"}
    sample_clip(str(clip.path), cfg.frames, widths, gap_s=cfg.motion.gap_s, threads=cfg.threads)


ROWS: list[Row] = [
    ("sample without native-size frames (no sharpness filter)", _sample_without_native),
    ("sample (one decode)", _sample),
    ("quality", lambda clip, judge: frame_scores(clip.samples["small"], judge.cfg.quality)),
    ("motion", lambda clip, judge: motion_scores(clip.samples["small"])),
    ("sharpness (blur + 8x8 blockiness, native size)",
     lambda clip, judge: sharpness_scores(clip.samples["native"], judge.cfg.sharpness)),
    ("text as before issue 13 (3 whole frames, no tracks)", lambda clip, judge: judge.detector.boxes(
        [clip.samples["detail"].frames[i] for i in pick_frames(len(clip.samples["detail"].frames), 3,
                                                                clip.samples["detail"].middle_index)])),
    ("text (EasyOCR CRAFT detector: whole frames + caption bands, tracks)",
     lambda clip, judge: judge.detector.score(clip.samples["detail"])),
    ("watermark (edges only, no text boxes)",
     lambda clip, judge: watermark_score(clip.samples["detail"], None, WatermarkFilterConfig())),
    ("stage (all filters, score-only)", lambda clip, judge: judge.judge(clip.row)),
]


def measure(clips: list[Clip], judge: ClipFilter, repeats: int) -> tuple[float, dict[str, float]]:
    """Best-of-``repeats`` CPU seconds, summed over clips: the decode baseline and every row."""
    baseline = sum(min(decode_seconds(c) for _ in range(repeats)) for c in clips)
    costs = dict.fromkeys((name for name, _ in ROWS), 0.0)
    for clip in clips:
        for name, work in ROWS:
            best = float("inf")
            for _ in range(repeats):
                started = time.process_time()
                work(clip, judge)
                best = min(best, time.process_time() - started)
            costs[name] += best
    return baseline, costs


def table(clips: list[Clip], baseline: float, costs: dict[str, float], judge: ClipFilter) -> str:
    seconds = sum(c.seconds for c in clips)
    cfg = judge.cfg
    lines = [f"{len(clips)} clips, {seconds:.1f} clip-seconds; {cfg.frames} frames sampled per clip (+ middle), "
             f"motion at {cfg.motion.width} px wide, text at {judge.widths().get('detail', '-')} px",
             "", "| work | CPU s per clip-second | ratio to one decode |", "|---|---:|---:|",
             f"| decode (ffmpeg -threads 1, baseline) | {baseline / seconds:.4f} | 1.00 |"]
    lines += [f"| {name} | {cost / seconds:.4f} | {cost / baseline:.2f} |" for name, cost in costs.items()]
    before = [name for name in costs if name.startswith("text as before")]
    now = [name for name in costs if name.startswith("text (")]
    if before and now and cfg.text.enabled:
        stage = costs["stage (all filters, score-only)"]
        earlier = stage - costs[now[0]] + costs[before[0]]
        lines += ["", f"Stage with the text filter of before issue 13: {earlier / seconds:.4f} CPU s per clip-second; "
                      f"the stage now costs {stage / earlier:.2f}x that (text alone: "
                      f"{costs[now[0]] / costs[before[0]]:.2f}x)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip-seconds", type=float, default=8.0, help="length of each benchmark clip")
    parser.add_argument("--repeats", type=int, default=2, help="runs per measurement; the fastest counts")
    parser.add_argument("--no-text", action="store_true", help="leave the text filter out of the stage row")
    parser.add_argument("--record", type=Path, help="append the table, machine and date to this markdown file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = CurationConfig().filter
    cfg.score_only = True
    cfg.text.enabled = not args.no_text
    judge = ClipFilter(cfg)
    with tempfile.TemporaryDirectory() as scratch:
        clips = make_clips(Path(scratch), args.clip_seconds)
        log.info("%d clips; measuring", len(clips))
        if cfg.text.enabled:
            judge.detector  # noqa: B018  (load the model outside the timings)
        baseline, costs = measure(clips, judge, args.repeats)
    text = table(clips, baseline, costs, judge)
    print(text)
    if args.record:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}"
        with open(args.record, "a") as fh:
            fh.write(f"\n### bench_filters.py, {stamp} ({machine})\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
