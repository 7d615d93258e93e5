"""Sharpness and blockiness scores of real footage and of blurred and over-compressed copies of it.

The evidence for ``filter.sharpness``' thresholds (README, "Sharpness and compression"). For each real
video of ``../shared/testvideos`` (the synthetic ones left out), the first ``--seconds`` are encoded as
the extract stage does (x264 ``veryfast``, CRF 20), once as they are and once after each degradation
(Gaussian blur, a 3x downscale scaled back up, MPEG-2 and MJPEG at ``-q:v 31``, x264 at CRF 51 and 40:
the lossy copies are re-encoded at CRF 20 afterwards, as a clip cut from such a source would be). The
filter's own sampler and scores are used; the table gives min / median / max of each score per copy.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curation.config import SharpnessFilterConfig  # noqa: E402
from curation.filters.sharpness import sharpness_scores  # noqa: E402
from curation.frames import sample_clip  # noqa: E402

SHARED_VIDEOS = Path(__file__).resolve().parent.parent.parent / "shared" / "testvideos"
EXTRACT = ["-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"]

#: Each copy: ffmpeg output options of a first encode, re-encoded like an extracted clip when it is lossy.
COPIES: dict[str, list[str]] = {
    "the footage as extracted": [],
    "`gblur=sigma=2`": ["-vf", "gblur=sigma=2"],
    "`gblur=sigma=4`": ["-vf", "gblur=sigma=4"],
    "downscaled 3x, upscaled back (bicubic)":
        ["-vf", "scale=trunc(iw/6)*2:trunc(ih/6)*2,scale=iw*3:ih*3:flags=bicubic"],
    "MPEG-2 `-q:v 31`": ["-c:v", "mpeg2video", "-q:v", "31", "-f", "mpeg"],
    "MJPEG `-q:v 31`": ["-c:v", "mjpeg", "-q:v", "31", "-pix_fmt", "yuvj420p", "-f", "avi"],
    "x264 `-crf 51`": ["-c:v", "libx264", "-preset", "veryfast", "-crf", "51", "-f", "matroska"],
    "x264 `-crf 40`": ["-c:v", "libx264", "-preset", "veryfast", "-crf", "40", "-f", "matroska"],
}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error", *args], check=True, timeout=600)


def make_copy(source: Path, options: list[str], out: Path, seconds: float) -> Path:
    head = ["-i", str(source), "-t", f"{seconds}"]
    if "-c:v" not in options:  # a filter only: one encode, as extracted
        ffmpeg(*head, *options, *EXTRACT, str(out))
    else:
        lossy = out.with_suffix(".lossy")
        ffmpeg(*head, "-an", *options, str(lossy))
        ffmpeg("-i", str(lossy), *EXTRACT, str(out))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each clip")
    parser.add_argument("--frames", type=int, default=8, help="frames sampled per clip (filter.frames)")
    args = parser.parse_args(argv)
    sources = sorted(p for p in SHARED_VIDEOS.rglob("*") if p.suffix in (".mp4", ".mkv") and "synthetic" not in p.parts)
    cfg = SharpnessFilterConfig()
    scores: dict[str, list[tuple[str, float, float]]] = {name: [] for name in COPIES}
    with tempfile.TemporaryDirectory() as scratch:
        for source in sources:
            for i, (name, options) in enumerate(COPIES.items()):
                clip = make_copy(source, options, Path(scratch) / f"{source.stem}-{i}.mp4", args.seconds)
                sample = sample_clip(str(clip), args.frames, {"native": 0})["native"]
                got = sharpness_scores(sample, cfg)
                scores[name].append((f"{source.parent.name}/{source.name}", got["sharpness"], got["blockiness"]))
                print(f"{source.parent.name}/{source.name} | {name} | {got}", file=sys.stderr, flush=True)
    print(f"{len(sources)} videos, {args.seconds:g} s each, {args.frames} frames (+ middle); min / median / max\n")
    print("| copy | sharpness | blockiness |\n|---|---|---|")
    for name, rows in scores.items():
        cells = [" / ".join(f"{f(v):.{d}f}" for f in (min, statistics.median, max))
                 for v, d in (([r[1] for r in rows], 1), ([r[2] for r in rows], 2))]
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    below = {name: sum(r[1] < cfg.min_sharpness for r in rows) for name, rows in scores.items()}
    above = {name: sum(r[2] > cfg.max_blockiness for r in rows) for name, rows in scores.items()}
    print(f"\nbelow min_sharpness {cfg.min_sharpness}: {below}\nabove max_blockiness {cfg.max_blockiness}: {above}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
